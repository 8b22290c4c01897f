package quant

import (
	"fmt"
	"math"
)

// NVFP4 (modelopt.torch.quantization.qtensor.NVFP4QTensor): E2M1 elements in blocks of B along the last
// dimension, one E4M3 scale per block and a float32 global scale ("wsf2", one per
// tensor or one per expert). Packed two nibbles per byte along the last dimension,
// element 2j in the low nibble.

// nvfp4MinScale is the lower clamp of block scales, 2^-9, the smallest E4M3 subnormal.
const nvfp4MinScale = 1.0 / 512

// nvfp4GlobalScale is ModelOpt's weights_scaling_factor_2 from an amax:
// amax ÷scalar (6·fp8Max), fp8Max = 448, or 256 in four-over-six mode.
func nvfp4GlobalScale(amax, fp8Max float32, mode DivMode) float32 {
	return DivScalar(amax, E2M1Max*fp8Max, mode)
}

// TensorAmax is reduce_amax(t): max(|max|, |min|) over all elements, NaN if any
// element is NaN.
func TensorAmax(t Tensor) (float32, error) {
	if err := fqCheckWeight(t, "tensor"); err != nil {
		return 0, err
	}
	if t.DType == BF16 && kernels != kernelPortable {
		// The widened BF16 bits order like |x| (NaN above Inf), as in fqAbsMax.
		return math.Float32frombits(calibMax16(t.Data) << 16), nil
	}
	rows, cols := fqRowsCols(t.Shape)
	row := make([]float32, cols)
	var m float32
	for r := range rows {
		fqDecode(row, t, r*cols)
		m = fqAbsMax(m, row)
	}
	return m, nil
}

// NVFP4 holds what quantizing one tensor to NVFP4 needs besides the weight: the block
// size and the global scale per expert (one value, or one per leading index of a
// 3-D weight: wsf2.view(-1,1,1)).
type NVFP4 struct {
	Block  int
	Scale2 []float32
}

// nvfp4Layout checks w against n and returns rows, the unpadded and padded widths.
func (n NVFP4) layout(w Tensor) (rows, cols, padded int, err error) {
	if err := fqCheckWeight(w, "weight"); err != nil {
		return 0, 0, 0, err
	}
	if n.Block < 1 {
		return 0, 0, 0, fmt.Errorf("%w: NVFP4 block size %d", ErrShape, n.Block)
	}
	if len(w.Shape) == 0 {
		return 0, 0, 0, fmt.Errorf("%w: NVFP4 of a 0-dim tensor", ErrShape)
	}
	rows, cols = fqRowsCols(w.Shape)
	padded = (cols + n.Block - 1) / n.Block * n.Block
	if padded%2 != 0 {
		return 0, 0, 0, fmt.Errorf("%w: NVFP4 packs pairs, last dimension %d with block %d is odd", ErrShape, cols, n.Block)
	}
	switch {
	case len(n.Scale2) == 1:
	case len(n.Scale2) > 1 && len(w.Shape) >= 2 && int64(len(n.Scale2)) == w.Shape[0]:
	default:
		return 0, 0, 0, fmt.Errorf("%w: %d global scales for weight %v", ErrShape, len(n.Scale2), w.Shape)
	}
	return rows, cols, padded, nil
}

func (n NVFP4) scale2(r, rows int) float32 {
	if len(n.Scale2) == 1 {
		return n.Scale2[0]
	}
	return n.Scale2[r/(rows/len(n.Scale2))]
}

// AppendBlockScalesF32 appends the per-block scales of rows [r0, r1) before the FP8
// cast (get_weights_scaling_factor with keep_high_precision): f32(block_amax /
// f32(6·wsf2)), with 0 replaced by 1. The weight is zero-padded to whole blocks.
func (n NVFP4) AppendBlockScalesF32(dst []float32, w Tensor, r0, r1 int) ([]float32, error) {
	err := n.eachRow(w, r0, r1, func(row []float32, d float32) {
		for b := range len(row) / n.Block {
			dst = append(dst, nvfp4BlockScaleF32(row[b*n.Block:(b+1)*n.Block], d))
		}
	})
	return dst, err
}

// AppendBlockScales appends the E4M3 block scales of rows [r0, r1)
// (get_weights_scaling_factor): fp8(clamp(scale, 2^-9, 448)); NaN stays NaN (0x7F).
func (n NVFP4) AppendBlockScales(dst []byte, w Tensor, r0, r1 int) ([]byte, error) {
	err := n.eachRow(w, r0, r1, func(row []float32, d float32) {
		for b := range len(row) / n.Block {
			dst = append(dst, nvfp4BlockScale(row[b*n.Block:(b+1)*n.Block], d))
		}
	})
	return dst, err
}

// eachRow checks w and rows [r0, r1) against n, then calls f with each row, decoded
// to float32 and zero-padded to whole blocks, and its d = f32(6·wsf2). row is reused
// from call to call.
func (n NVFP4) eachRow(w Tensor, r0, r1 int, f func(row []float32, d float32)) error {
	rows, cols, padded, err := n.layout(w)
	if err != nil {
		return err
	}
	if r0 < 0 || r1 > rows || r0 > r1 {
		return fmt.Errorf("%w: rows [%d,%d) of %d", ErrShape, r0, r1, rows)
	}
	row := make([]float32, padded)
	for r := r0; r < r1; r++ {
		fqDecode(row[:cols], w, r*cols)
		f(row, float32(E2M1Max*n.scale2(r, rows)))
	}
	return nil
}

// nvfp4BlockScaleF32 is the scale of one block before the FP8 cast given
// d = f32(6·wsf2): f32(amax / d), 0 replaced by 1.
func nvfp4BlockScaleF32(x []float32, d float32) float32 {
	s := fqAbsMax(0, x) / d
	if s == 0 {
		s = 1
	}
	return s
}

// nvfp4BlockScale is the E4M3 scale of one block given d = f32(6·wsf2).
func nvfp4BlockScale(x []float32, d float32) uint8 {
	return F32ToE4M3(fqClamp(nvfp4BlockScaleF32(x, d), nvfp4MinScale, E4M3Max))
}

// AppendQuantizeRows computes the block scales of rows [r0, r1) and packs them in
// one pass (NVFP4QTensor.quantize without given block scales): it appends the
// packed bytes to dst and the E4M3 scales to scales. Equal to AppendBlockScales
// followed by AppendRows.
func (n NVFP4) AppendQuantizeRows(dst, scales []byte, w Tensor, r0, r1 int) ([]byte, []byte, error) {
	rows, cols, padded, err := n.layout(w)
	if err != nil {
		return dst, scales, err
	}
	if r0 < 0 || r1 > rows || r0 > r1 {
		return dst, scales, fmt.Errorf("%w: rows [%d,%d) of %d", ErrShape, r0, r1, rows)
	}
	nb, half := padded/n.Block, padded/2
	dst = growBytes(dst, (r1-r0)*half)
	out := dst[len(dst)-(r1-r0)*half:]
	if n.fastBF16(w, cols, padded) {
		p := nvfp4ScratchLen(nb)
		codes, divs, gd := make([]byte, p), make([]float32, p), nvfp4GroupScratch(n.Block, padded)
		for r := r0; r < r1; r++ {
			src := w.Data[2*r*cols : 2*(r+1)*cols]
			s2 := n.scale2(r, rows)
			if !nvfp4ScalesBF16(codes, divs, src, n.Block, float32(E2M1Max*s2), s2) {
				panic("quant: NVFP4 scale kernel declined a layout fastBF16 accepted")
			}
			scales = append(scales, codes[:nb]...)
			nvfp4PackRowBF16(out[(r-r0)*half:(r-r0+1)*half], src, divs[:nb], n.Block, gd)
		}
		return dst, scales, nil
	}
	row := make([]float32, padded)
	divs := make([]float32, nb)
	for r := r0; r < r1; r++ {
		fqDecode(row[:cols], w, r*cols)
		s2 := n.scale2(r, rows)
		d := float32(E2M1Max * s2)
		for b := range nb {
			c := nvfp4BlockScale(row[b*n.Block:(b+1)*n.Block], d)
			scales = append(scales, c)
			divs[b] = E4M3ToF32(c) * s2
		}
		nvfp4PackRow(out[(r-r0)*half:(r-r0+1)*half], row, divs, n.Block)
	}
	return dst, scales, nil
}

// fastBF16 reports whether the BF16 vector kernels take w: blocks of a multiple of
// 16 that fill each row (no padding).
func (n NVFP4) fastBF16(w Tensor, cols, padded int) bool {
	return w.DType == BF16 && kernels != kernelPortable && n.Block%16 == 0 && cols == padded
}

// nvfp4GroupScratch is the per-16-element divisor scratch nvfp4PackRowBF16 needs
// for blocks larger than 16 (nil for 16).
func nvfp4GroupScratch(block, cols int) []float32 {
	if block == 16 {
		return nil
	}
	return make([]float32, cols/16)
}

// nvfp4PackRowBF16 is nvfp4PackRow on a BF16 row that whole blocks (a multiple of
// 16) fill: the vector kernel takes each group of 16 elements with its block's
// divisor (gd, from nvfp4GroupScratch, spreads divs over the groups), and the
// portable loop any groups it leaves.
func nvfp4PackRowBF16(o, x []byte, divs []float32, block int, gd []float32) {
	g := divs
	if block != 16 {
		g = gd[:len(x)/32]
		per := block / 16
		for b, d := range divs {
			for k := range per {
				g[b*per+k] = d
			}
		}
	}
	var buf [16]float32
	for k := nvfp4PackBF16(o, x, g); k < len(g); k++ {
		decodeBF16(buf[:], x[32*k:])
		nvfp4PackDivScalar(o[8*k:8*k+8], buf[:], g[k])
	}
}

// nvfp4PackRow encodes one (padded) row: element i is divided by divs[i/block],
// nibbles are paired low-first into o (len(row)/2 bytes).
func nvfp4PackRow(o []byte, row, divs []float32, block int) {
	for b, d := range divs {
		nvfp4PackDivScalar(o[b*block/2:(b+1)*block/2], row[b*block:(b+1)*block], d)
	}
}

// nvfp4PackDivScalar encodes x / div in pairs, even element in the low nibble.
func nvfp4PackDivScalar(o []byte, x []float32, div float32) {
	x = x[:2*len(o)]
	for j := range o {
		lo := e2m1NVTable[e2m1Index(math.Float32bits(x[2*j]/div))]
		hi := e2m1NVTable[e2m1Index(math.Float32bits(x[2*j+1]/div))]
		o[j] = lo | hi<<4
	}
}

// AppendRows appends the packed NVFP4 bytes of rows [r0, r1) of w given the block
// scales of all rows as float32 values (scales[r*nb+b], E4M3ToF32 of the codes
// ModelOpt passes): each element is
// F32ToE2M1Even(f32(w / f32(f32(scale)·wsf2))), nibbles packed low-first.
// Rows are zero-padded to whole blocks; each output row has padded/2 bytes.
//
// Reference loop: for each element i of row r, block b:
// nib[i] = F32ToE2M1Even(w[i] / (scales[r*nb+b] * wsf2)); byte j = nib[2j] | nib[2j+1]<<4.
func (n NVFP4) AppendRows(dst []byte, w Tensor, scales []float32, r0, r1 int) ([]byte, error) {
	rows, cols, padded, err := n.layout(w)
	if err != nil {
		return dst, err
	}
	nb := padded / n.Block
	if len(scales) != rows*nb {
		return dst, fmt.Errorf("%w: %d block scales for %d rows of %d blocks", ErrShape, len(scales), rows, nb)
	}
	if r0 < 0 || r1 > rows || r0 > r1 {
		return dst, fmt.Errorf("%w: rows [%d,%d) of %d", ErrShape, r0, r1, rows)
	}
	half := padded / 2
	dst = growBytes(dst, (r1-r0)*half)
	out := dst[len(dst)-(r1-r0)*half:]
	divs := make([]float32, nb)
	if n.fastBF16(w, cols, padded) {
		gd := nvfp4GroupScratch(n.Block, padded)
		for r := r0; r < r1; r++ {
			s2 := n.scale2(r, rows)
			for b := range nb {
				divs[b] = scales[r*nb+b] * s2
			}
			nvfp4PackRowBF16(out[(r-r0)*half:(r-r0+1)*half], w.Data[2*r*cols:2*(r+1)*cols], divs, n.Block, gd)
		}
		return dst, nil
	}
	row := make([]float32, padded)
	for r := r0; r < r1; r++ {
		fqDecode(row[:cols], w, r*cols)
		s2 := n.scale2(r, rows)
		for b := range nb {
			divs[b] = scales[r*nb+b] * s2
		}
		nvfp4PackRow(out[(r-r0)*half:(r-r0+1)*half], row, divs, n.Block)
	}
	return dst, nil
}

// nvfp4StaticBlockScales is the static path of
// get_weights_scaling_factor_from_quantizer: s = amax ÷scalar 6 (0 → 1),
// smax = globalAmax ÷scalar 6, scale = fp8(clamp(f32(f32(s·fp8Max) / smax), 2^-9, 448)).
// amax holds one value per block, row-major; dst gets one E4M3 code per block.
func nvfp4StaticBlockScales(dst []byte, amax []float32, globalAmax, fp8Max float32, mode DivMode) []byte {
	smax := DivScalar(globalAmax, E2M1Max, mode)
	for _, a := range amax {
		dst = append(dst, nvfp4CastBlockScale(nvfp4StaticScale(a, mode), smax, fp8Max, true))
	}
	return dst
}

// nvfp4StaticBlockScalesF32 is the static path of
// get_weights_scaling_factor_from_quantizer with keep_high_precision: the block
// scales before normalisation and the FP8 cast, s = amax ÷scalar 6 (0 → 1).
// amax holds one value per block, row-major; dst gets one value per block.
func nvfp4StaticBlockScalesF32(dst, amax []float32, mode DivMode) []float32 {
	for _, a := range amax {
		dst = append(dst, nvfp4StaticScale(a, mode))
	}
	return dst
}

// nvfp4StaticScale is one static block scale before the FP8 cast: amax ÷scalar 6,
// 0 replaced by 1.
func nvfp4StaticScale(amax float32, mode DivMode) float32 {
	s := DivScalar(amax, E2M1Max, mode)
	if s == 0 {
		s = 1
	}
	return s
}

// nvfp4CastBlockScale is nvfp4_tensor._cast_per_block_scale_to_fp8: with
// normalize, s becomes f32(f32(s·fp8Max) / smax) first; then clamp to [2^-9, 448]
// and cast to E4M3.
func nvfp4CastBlockScale(s, smax, fp8Max float32, normalize bool) uint8 {
	if normalize {
		p := float32(s * fp8Max)
		s = p / smax
	}
	return F32ToE4M3(fqClamp(s, nvfp4MinScale, E4M3Max))
}

// AppendDequantRows appends NVFP4QTensor.dequantize of rows [r0, r1) as float32
// (before the cast to the output dtype): table[nibble] · f32(scale·wsf2), scales
// as float32 values,
// where nibble 8 decodes to +0. packed has padded/2 bytes per row, cols of which
// (the original width) are kept.
func (n NVFP4) AppendDequantRows(dst []float32, packed []byte, scales []float32, rows, cols, r0, r1 int) ([]float32, error) {
	if n.Block < 1 {
		return dst, fmt.Errorf("%w: NVFP4 block size %d", ErrShape, n.Block)
	}
	padded := (cols + n.Block - 1) / n.Block * n.Block
	nb, half := padded/n.Block, padded/2
	if padded%2 != 0 || len(packed) != rows*half || len(scales) != rows*nb || r0 < 0 || r1 > rows || r0 > r1 {
		return dst, fmt.Errorf("%w: NVFP4 data %d bytes, scales %d for %d×%d block %d", ErrShape, len(packed), len(scales), rows, cols, n.Block)
	}
	if len(n.Scale2) != 1 && (len(n.Scale2) == 0 || rows%len(n.Scale2) != 0) {
		return dst, fmt.Errorf("%w: %d global scales for %d rows", ErrShape, len(n.Scale2), rows)
	}
	for r := r0; r < r1; r++ {
		s2 := n.scale2(r, rows)
		for c := range cols {
			b := packed[r*half+c/2]
			nib := b & 0xF
			if c%2 == 1 {
				nib = b >> 4
			}
			v := e2m1NVValue[nib]
			s := scales[r*nb+c/n.Block] * s2
			dst = append(dst, v*s)
		}
	}
	return dst, nil
}

// e2m1NVValue is NVFP4QTensor's e2m1_values table (nibble 8 is +0).
var e2m1NVValue = [16]float32{0, 0.5, 1, 1.5, 2, 3, 4, 6, 0, -0.5, -1, -1.5, -2, -3, -4, -6}

// nvfp4Quantized is the result of NVFP4QTensor.quantize.
type nvfp4Quantized struct {
	Packed Tensor // U8 [..., padded/2]
	Scales Tensor // F8_E4M3 [..., padded/B]
	Scale2 Tensor // F32, as given (or 0-dim when computed)
}

// nvfp4Quantize is NVFP4QTensor.quantize(w, B, scales, scale2): w is padded to whole
// blocks; a nil scale2 is computed as amax(w) ÷scalar 2688 (0-dim), a nil scales
// as get_weights_scaling_factor. A non-0-dim scale2 for a 3-D weight holds one value
// per expert (to_quantized_weight views it as (-1,1,1)).
func nvfp4Quantize(w Tensor, block int, scales, scale2 *Tensor, mode DivMode) (nvfp4Quantized, error) {
	if err := fqCheckWeight(w, "weight"); err != nil {
		return nvfp4Quantized{}, err
	}
	var s2t Tensor
	if scale2 == nil {
		a, err := TensorAmax(w)
		if err != nil {
			return nvfp4Quantized{}, err
		}
		s2t, _ = FromFloat32(F32, nil, []float32{nvfp4GlobalScale(a, E4M3Max, mode)})
	} else {
		s2t = *scale2
	}
	s2, err := fqValues(s2t, "weights_scaling_factor_2")
	if err != nil {
		return nvfp4Quantized{}, err
	}
	for i := range s2 {
		s2[i] = RoundTo(s2t.DType, s2[i]) // values are already in their dtype
	}
	n := NVFP4{Block: block, Scale2: s2}
	rows, _, padded, err := n.layout(w)
	if err != nil {
		return nvfp4Quantized{}, err
	}
	nb := padded / block
	outer := append([]int64(nil), w.Shape[:len(w.Shape)-1]...)
	var st Tensor
	var data []byte
	if scales == nil {
		var codes []byte
		data, codes, err = n.AppendQuantizeRows(make([]byte, 0, rows*padded/2), make([]byte, 0, rows*nb), w, 0, rows)
		if err != nil {
			return nvfp4Quantized{}, err
		}
		st = Tensor{DType: F8E4M3, Shape: append(append([]int64(nil), outer...), int64(nb)), Data: codes}
	} else {
		st = *scales
		if err := st.Check(); err != nil {
			return nvfp4Quantized{}, fmt.Errorf("weights_scaling_factor: %w", err)
		}
		if st.Numel() != int64(rows*nb) {
			return nvfp4Quantized{}, fmt.Errorf("%w: weights_scaling_factor %v for weight %v with block %d", ErrShape, st.Shape, w.Shape, block)
		}
		sv, err := fqValues(st, "weights_scaling_factor")
		if err != nil {
			return nvfp4Quantized{}, err
		}
		if data, err = n.AppendRows(make([]byte, 0, rows*padded/2), w, sv, 0, rows); err != nil {
			return nvfp4Quantized{}, err
		}
	}
	return nvfp4Quantized{
		Packed: Tensor{DType: U8, Shape: append(append([]int64(nil), outer...), int64(padded/2)), Data: data},
		Scales: st,
		Scale2: s2t,
	}, nil
}

// nvfp4Dequantize is NVFP4QTensor.dequantize(dtype, scale, double_scale, block):
// packed U8 [..., I/2], scales F8_E4M3 [..., I/B], scale2 F32 (0-dim or one per expert).
func nvfp4Dequantize(packed, scales, scale2 Tensor, block int, dtype DType) (Tensor, error) {
	if err := packed.Check(); err != nil {
		return Tensor{}, fmt.Errorf("quantized: %w", err)
	}
	if packed.DType != U8 || len(packed.Shape) == 0 || !fqIsFloat(dtype) {
		return Tensor{}, fmt.Errorf("%w: NVFP4 dequantize %v %v to %v", ErrUnsupportedDType, packed.DType, packed.Shape, dtype)
	}
	if err := scales.Check(); err != nil {
		return Tensor{}, fmt.Errorf("scale: %w", err)
	}
	sv, err := fqValues(scales, "scale")
	if err != nil {
		return Tensor{}, err
	}
	s2, err := fqValues(scale2, "double_scale")
	if err != nil {
		return Tensor{}, err
	}
	rows, half := fqRowsCols(packed.Shape)
	cols := 2 * half
	n := NVFP4{Block: block, Scale2: s2}
	out, err := n.AppendDequantRows(make([]float32, 0, rows*cols), packed.Data, sv, rows, cols, 0, rows)
	if err != nil {
		return Tensor{}, err
	}
	shape := append([]int64(nil), packed.Shape...)
	shape[len(shape)-1] = int64(cols)
	return FromFloat32(dtype, shape, out)
}
