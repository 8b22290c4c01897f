package quant

import (
	"fmt"
	"slices"
)

// fp8Divider is the element-wise step of ModelOpt's FP8 weight formats:
// q = fp8(round_qdt(w / d)), with d taken from a scale tensor through a blockMap
// (broadcast or block repeat) and the quotient rounded to the quotient dtype qdt
// before the non-saturating E4M3 cast. Build it once per tensor; AppendRows may run
// concurrently for disjoint row ranges, and the bytes never depend on the split.
//
// Reference loop: for each element i: dst[i] = F32ToE4M3(RoundTo(qdt, w[i] / d[map(i)])).
type fp8Divider struct {
	w          Tensor
	rows, cols int
	div        []float32
	m          *blockMap
	qdt        DType
}

func newFP8Divider(w Tensor, div []float32, m *blockMap, qdt DType) *fp8Divider {
	rows, cols := fqRowsCols(w.Shape)
	return &fp8Divider{w: w, rows: rows, cols: cols, div: div, m: m, qdt: qdt}
}

// Rows is the number of rows (elements of all but the last dimension).
func (d *fp8Divider) Rows() int { return d.rows }

// Shape is the output shape (the weight's).
func (d *fp8Divider) Shape() []int64 { return append([]int64(nil), d.w.Shape...) }

// AppendRows appends the E4M3 codes of rows [r0, r1) to dst.
func (d *fp8Divider) AppendRows(dst []byte, r0, r1 int) []byte {
	n := (r1 - r0) * d.cols
	dst = growBytes(dst, n)
	out := dst[len(dst)-n:]
	colRep, colStride := d.m.colRep(), d.m.colStride()
	if d.w.DType == BF16 && (d.qdt == BF16 || d.qdt == F32) && kernels != kernelPortable {
		for r := r0; r < r1; r++ {
			o := out[(r-r0)*d.cols : (r-r0+1)*d.cols]
			src := d.w.Data[2*r*d.cols : 2*(r+1)*d.cols]
			base := d.m.rowBase(r)
			if colStride == 0 {
				fp8ChunkBF16(o, src, d.div[base], d.qdt)
				continue
			}
			for c0 := 0; c0 < d.cols; c0 += colRep {
				c1 := min(c0+colRep, d.cols)
				fp8ChunkBF16(o[c0:c1], src[2*c0:2*c1], d.div[base+c0/colRep*colStride], d.qdt)
			}
		}
		return dst
	}
	row := make([]float32, d.cols)
	for r := r0; r < r1; r++ {
		fqDecode(row, d.w, r*d.cols)
		o := out[(r-r0)*d.cols : (r-r0+1)*d.cols]
		base := d.m.rowBase(r)
		if colStride == 0 {
			fp8DivChunk(o, row, d.div[base], d.qdt)
			continue
		}
		for c0 := 0; c0 < d.cols; c0 += colRep {
			c1 := min(c0+colRep, d.cols)
			fp8DivChunk(o[c0:c1], row[c0:c1], d.div[base+c0/colRep*colStride], d.qdt)
		}
	}
	return dst
}

// fp8DivChunk quantizes x / d for one run of elements sharing the divisor d.
func fp8DivChunk(o []byte, x []float32, d float32, qdt DType) {
	o = o[:len(x)]
	switch qdt {
	case BF16:
		for i, v := range x {
			o[i] = e4m3FromBF16[F32ToBF16(v/d)]
		}
	case F16:
		for i, v := range x {
			o[i] = f32ToE4M3Fast(F16ToF32(F32ToF16(v / d)))
		}
	default:
		for i, v := range x {
			o[i] = f32ToE4M3Fast(v / d)
		}
	}
}

// fp8ChunkBF16 is fp8DivChunk on the BF16 bytes of x (qdt BF16 or F32): the
// vector kernel takes what it can and the portable loop the rest.
func fp8ChunkBF16(o, x []byte, d float32, qdt DType) {
	n := fp8DivBF16(o, x, d, qdt == BF16)
	var buf [32]float32
	for n < len(o) {
		t := buf[:min(len(o)-n, len(buf))]
		decodeBF16(t, x[2*n:])
		fp8DivChunk(o[n:n+len(t)], t, d, qdt)
		n += len(t)
	}
}

// divisors returns the scale values as the division sees them: cast to the
// quotient dtype, except that on CPU a 0-dim divisor of a reduced-precision
// tensor keeps its float32 value (PyTorch's CPU kernel divides by the original
// scalar; CUDA casts it like any operand).
func fp8Divisors(s Tensor, qdt DType, mode DivMode) ([]float32, error) {
	v, err := fqValues(s, "weights_scaling_factor")
	if err != nil {
		return nil, err
	}
	if len(s.Shape) == 0 && mode == DivIEEE {
		return v, nil
	}
	for i := range v {
		v[i] = RoundTo(qdt, v[i])
	}
	return v, nil
}

func (d *fp8Divider) tensor() Tensor {
	return Tensor{DType: F8E4M3, Shape: d.Shape(), Data: d.AppendRows(make([]byte, 0, d.rows*d.cols), 0, d.rows)}
}

// newFP8PerTensor prepares quant_utils.to_quantized_weight(w, s, "fp8"): a 2-D
// weight divided by a 0-dim scale is computed in the weight dtype (double rounding;
// in DivCUDA mode the scale is also rounded to the weight dtype), a (1,)-shaped
// scale or a 3-D weight (whose scale is unsqueezed) divides in float32.
func newFP8PerTensor(w, s Tensor, mode DivMode) (*fp8Divider, error) {
	if len(w.Shape) == 3 {
		s.Shape = append(append([]int64(nil), s.Shape...), 1)
	}
	return newFP8Broadcast(w, s, mode)
}

// newFP8Broadcast prepares (w / s).to(torch.float8_e4m3fn) with PyTorch
// broadcasting and type promotion: the quotient has the promoted dtype, where a
// 0-dim s does not promote a dimensioned w of the same category (torch.result_type).
func newFP8Broadcast(w, s Tensor, mode DivMode) (*fp8Divider, error) {
	if err := fqCheckWeight(w, "weight"); err != nil {
		return nil, err
	}
	if err := s.Check(); err != nil {
		return nil, fmt.Errorf("weights_scaling_factor: %w", err)
	}
	m, err := broadcastMap(w.Shape, s.Shape)
	if err != nil {
		return nil, err
	}
	qdt := fqQuotientDType(w.DType, s)
	div, err := fp8Divisors(s, qdt, mode)
	if err != nil {
		return nil, err
	}
	return newFP8Divider(w, div, m, qdt), nil
}

// quantizeFP8 is to_quantized_weight(w, s, "fp8"). A weight that is already
// F8_E4M3 is returned unchanged, as ModelOpt does.
func quantizeFP8(w, s Tensor, mode DivMode) (Tensor, error) {
	if w.DType == F8E4M3 {
		return Tensor{DType: F8E4M3, Shape: append([]int64(nil), w.Shape...), Data: append([]byte(nil), w.Data...)}, nil
	}
	d, err := newFP8PerTensor(w, s, mode)
	if err != nil {
		return Tensor{}, err
	}
	return d.tensor(), nil
}

// newFP8PerChannel prepares quant_utils.to_quantized_weight(w, s, "fp8_pc_pt").
// 2-D: s is (O,) and divides each row. 3-D [E,A,B]: s (E,) divides each expert;
// s (E,N) divides along the dimension N matches (B: BMM layout, A: standard), and
// a square [A,A] or a mismatched E is an error, as in ModelOpt.
func newFP8PerChannel(w, s Tensor) (*fp8Divider, error) {
	if err := fqCheckWeight(w, "weight"); err != nil {
		return nil, err
	}
	if err := s.Check(); err != nil {
		return nil, fmt.Errorf("weights_scaling_factor: %w", err)
	}
	var view []int64
	switch {
	case len(w.Shape) == 3 && len(s.Shape) == 1:
		view = []int64{s.Shape[0], 1, 1}
	case len(w.Shape) == 3 && len(s.Shape) == 2:
		switch {
		case s.Shape[0] != w.Shape[0]:
			return nil, fmt.Errorf("%w: fp8_pc_pt: scale %v does not match the %d experts of weight %v", ErrShape, s.Shape, w.Shape[0], w.Shape)
		case w.Shape[1] == w.Shape[2]:
			return nil, fmt.Errorf("%w: fp8_pc_pt: ambiguous scale %v for square expert weight %v", ErrShape, s.Shape, w.Shape)
		case s.Shape[1] == w.Shape[2]:
			view = []int64{s.Shape[0], 1, s.Shape[1]}
		case s.Shape[1] == w.Shape[1]:
			view = []int64{s.Shape[0], s.Shape[1], 1}
		default:
			return nil, fmt.Errorf("%w: fp8_pc_pt: scale %v fits no dimension of weight %v", ErrShape, s.Shape, w.Shape)
		}
	case len(s.Shape) == 1:
		view = []int64{s.Shape[0], 1}
	default:
		return nil, fmt.Errorf("%w: fp8_pc_pt: scale %v for weight %v", ErrShape, s.Shape, w.Shape)
	}
	m, err := broadcastMap(w.Shape, view)
	if err != nil {
		return nil, err
	}
	qdt := fqPromote(w.DType, s.DType)
	div, err := fp8Divisors(Tensor{DType: s.DType, Shape: view, Data: s.Data}, qdt, DivIEEE)
	if err != nil {
		return nil, err
	}
	return newFP8Divider(w, div, m, qdt), nil
}

// quantizeFP8PerChannel is to_quantized_weight(w, s, "fp8_pc_pt").
func quantizeFP8PerChannel(w, s Tensor) (Tensor, error) {
	d, err := newFP8PerChannel(w, s)
	if err != nil {
		return Tensor{}, err
	}
	return d.tensor(), nil
}

// fp8Blocks are FP8QTensor's block sizes: Dims maps a dimension (negative from the
// end) to its block size.
type fp8Blocks map[int]int

func (b fp8Blocks) reps(rank int) ([]int, error) {
	rep := make([]int, rank)
	for i := range rep {
		rep[i] = 1
	}
	for d, n := range b {
		i := d
		if i < 0 {
			i += rank
		}
		if i < 0 || i >= rank || n < 1 {
			return nil, fmt.Errorf("%w: block size %d on dimension %d of a %d-D tensor", ErrShape, n, d, rank)
		}
		rep[i] = n
	}
	return rep, nil
}

// fp8BlockScaleShape is the padded block grid: ceil(dim/block) per blocked dimension.
func fp8BlockScaleShape(shape []int64, rep []int) []int64 {
	out := make([]int64, len(shape))
	for i, d := range shape {
		out[i] = (d + int64(rep[i]) - 1) / int64(rep[i])
	}
	return out
}

// newFP8Block prepares FP8QTensor.quantize(w, s, block_sizes=blocks) with given
// scales (quant_utils.to_quantized_weight "fp8_pb_wo" passes s.squeeze() and blocks
// {-1: B, -2: B}). Any s with as many elements as the padded block grid is reshaped
// to it; the division dtype is the promotion of the weight and scale dtypes.
func newFP8Block(w, s Tensor, blocks fp8Blocks) (*fp8Divider, error) {
	if err := fqCheckWeight(w, "weight"); err != nil {
		return nil, err
	}
	if err := s.Check(); err != nil {
		return nil, fmt.Errorf("weights_scaling_factor: %w", err)
	}
	rep, err := blocks.reps(len(w.Shape))
	if err != nil {
		return nil, err
	}
	grid := fp8BlockScaleShape(w.Shape, rep)
	if Numel(grid) != s.Numel() {
		return nil, fmt.Errorf("%w: scale %v for block grid %v of weight %v", ErrShape, s.Shape, grid, w.Shape)
	}
	m, err := newBlockMap(w.Shape, grid, rep)
	if err != nil {
		return nil, err
	}
	qdt := fqPromote(w.DType, s.DType)
	div, err := fp8Divisors(Tensor{DType: s.DType, Shape: grid, Data: s.Data}, qdt, DivIEEE)
	if err != nil {
		return nil, err
	}
	return newFP8Divider(w, div, m, qdt), nil
}

// fp8BlockScales computes FP8QTensor.quantize's own scales for block sizes: the
// amax of each (zero-padded) block in the weight dtype, ÷scalar 448, rounded to the
// weight dtype. No zero guard: an all-zero block gives 0 and its elements NaN.
// The result has the padded grid shape and the weight dtype.
func fp8BlockScales(w Tensor, blocks fp8Blocks, mode DivMode) (Tensor, error) {
	if err := fqCheckWeight(w, "weight"); err != nil {
		return Tensor{}, err
	}
	rep, err := blocks.reps(len(w.Shape))
	if err != nil {
		return Tensor{}, err
	}
	grid := fp8BlockScaleShape(w.Shape, rep)
	m, err := newBlockMap(w.Shape, grid, rep)
	if err != nil {
		return Tensor{}, err
	}
	amax := fqBlockAmax(w, m)
	for i, a := range amax {
		amax[i] = RoundTo(w.DType, DivScalar(a, E4M3Max, mode))
	}
	return FromFloat32(w.DType, grid, amax)
}

// fqBlockAmax reduces |w| into the scale elements of m (NaN propagates).
func fqBlockAmax(w Tensor, m *blockMap) []float32 {
	rows, cols := fqRowsCols(w.Shape)
	amax := make([]float32, m.nScale)
	row := make([]float32, cols)
	colRep, colStride := m.colRep(), m.colStride()
	for r := range rows {
		fqDecode(row, w, r*cols)
		base := m.rowBase(r)
		if colStride == 0 {
			amax[base] = fqAbsMax(amax[base], row)
			continue
		}
		for c0 := 0; c0 < cols; c0 += colRep {
			k := base + c0/colRep*colStride
			amax[k] = fqAbsMax(amax[k], row[c0:min(c0+colRep, cols)])
		}
	}
	return amax
}

// fp8QTensorQuantize is FP8QTensor.quantize(w, scales=nil, axis, block_sizes): it
// computes the scales in the weight dtype (amax ÷scalar 448) and quantizes.
// With blocks, scales have the padded block grid shape; otherwise axis nil gives a
// 0-dim scale and an axis list keeps those dimensions (others reduced to 1; a
// single-element result is squeezed to 0-dim, as reduce_amax does).
func fp8QTensorQuantize(w Tensor, axis []int, blocks fp8Blocks, mode DivMode) (q, scales Tensor, err error) {
	if err := fqCheckWeight(w, "weight"); err != nil {
		return Tensor{}, Tensor{}, err
	}
	if len(blocks) > 0 {
		s, err := fp8BlockScales(w, blocks, mode)
		if err != nil {
			return Tensor{}, Tensor{}, err
		}
		d, err := newFP8Block(w, s, blocks)
		if err != nil {
			return Tensor{}, Tensor{}, err
		}
		return d.tensor(), s, nil
	}
	rank := len(w.Shape)
	sshape := make([]int64, rank)
	for i := range sshape {
		sshape[i] = 1
	}
	for _, a := range axis {
		if a < 0 {
			a += rank
		}
		if a < 0 || a >= rank {
			return Tensor{}, Tensor{}, fmt.Errorf("%w: axis %v of a %d-D weight", ErrShape, axis, rank)
		}
		sshape[a] = w.Shape[a]
	}
	rep := make([]int, rank)
	for i := range rep {
		rep[i] = 1
	}
	m, err := newBlockMap(w.Shape, sshape, rep)
	if err != nil {
		return Tensor{}, Tensor{}, err
	}
	amax := fqBlockAmax(w, m)
	for i, a := range amax {
		amax[i] = RoundTo(w.DType, DivScalar(a, E4M3Max, mode))
	}
	if axis == nil || len(amax) == 1 {
		sshape = []int64{}
	}
	s, err := FromFloat32(w.DType, sshape, amax)
	if err != nil {
		return Tensor{}, Tensor{}, err
	}
	// The scale is in the weight dtype, so a 0-dim or dimensioned scale gives the
	// same quotient dtype and the same divisor values.
	d := newFP8Divider(w, amax, m, w.DType)
	return d.tensor(), s, nil
}

// fp8BlockDequantize is FP8QTensor.dequantize(dtype, scale=s, block_sizes=blocks):
// the codes and the repeated scales are cast to dtype and multiplied in dtype.
// s must have the padded block grid shape.
func fp8BlockDequantize(q, s Tensor, blocks fp8Blocks, dtype DType) (Tensor, error) {
	if err := q.Check(); err != nil {
		return Tensor{}, fmt.Errorf("quantized: %w", err)
	}
	if q.DType != F8E4M3 || !fqIsFloat(dtype) {
		return Tensor{}, fmt.Errorf("%w: dequantize %v to %v", ErrUnsupportedDType, q.DType, dtype)
	}
	rep, err := blocks.reps(len(q.Shape))
	if err != nil {
		return Tensor{}, err
	}
	grid := fp8BlockScaleShape(q.Shape, rep)
	if !slices.Equal(s.Shape, grid) {
		return Tensor{}, fmt.Errorf("%w: scales %v, want %v", ErrShape, s.Shape, grid)
	}
	m, err := newBlockMap(q.Shape, grid, rep)
	if err != nil {
		return Tensor{}, err
	}
	sv, err := fqValues(s, "scales")
	if err != nil {
		return Tensor{}, err
	}
	for i := range sv {
		sv[i] = RoundTo(dtype, sv[i])
	}
	rows, cols := fqRowsCols(q.Shape)
	out := make([]float32, rows*cols)
	colRep, colStride := m.colRep(), m.colStride()
	for r := range rows {
		base := m.rowBase(r)
		for c := range cols {
			k := base
			if colStride != 0 {
				k += c / colRep * colStride
			}
			out[r*cols+c] = RoundTo(dtype, RoundTo(dtype, E4M3ToF32(q.Data[r*cols+c]))*sv[k])
		}
	}
	return FromFloat32(dtype, q.Shape, out)
}
