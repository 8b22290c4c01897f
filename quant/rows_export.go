package quant

import (
	"fmt"
)

// RowExport is the quantized weight of ExportQuantizedWeight for one weight,
// computed range by range of rows into buffers the caller owns (a layer's output
// buffer): rows are independent in every export format, so callers split them over
// cores, and the bytes do not depend on the split. Outputs whose scales come from
// the weight's own blocks (NVFP4 with dynamic blocks, MXFP8, MXFP4) are computed in
// the same pass. It reads the weight it was made from; Fill may run concurrently
// on disjoint unit ranges.
type RowExport struct {
	// Outs are the outputs, each as a header: Outs[0] is the quantized weight,
	// Outs[1] (when present) its weight_scale computed from the weight data.
	Outs []Tensor
	// Units is the number of independent units: rows, or pairs of rows for the
	// INT4 formats, which pack two rows into one byte row.
	Units int
	// UnitBytes is the input bytes one unit reads, to size the pieces.
	UnitBytes int64
	// Align, when above 1, is the number of units a piece should be a multiple
	// of (the fused block-FP8 kernel builds its tables per band of FP8 block
	// rows a piece touches); the bytes do not depend on it.
	Align int

	outUnit []int // bytes of Outs[k] per unit
	fill    func(dst [][]byte, u0, u1 int) error
}

// Fill writes units [u0, u1) of every output: dst[k] is all of Outs[k] (its
// exact byte length) and only its bytes of those units are written.
func (e *RowExport) Fill(dst [][]byte, u0, u1 int) error {
	if len(dst) != len(e.Outs) || u0 < 0 || u1 > e.Units || u0 > u1 {
		return fmt.Errorf("%w: fill units [%d,%d) of %d into %d outputs", ErrShape, u0, u1, e.Units, len(dst))
	}
	for k, d := range dst {
		if len(d) != e.outUnit[k]*e.Units {
			return fmt.Errorf("%w: output %d has %d bytes, want %d", ErrShape, k, len(d), e.outUnit[k]*e.Units)
		}
	}
	return e.fill(dst, u0, u1)
}

// part is units [u0, u1) of output k, as an empty slice whose capacity is exactly
// their place: an Append kernel writes there.
func (e *RowExport) part(dst [][]byte, k, u0, u1 int) []byte {
	n := e.outUnit[k]
	return dst[k][u0*n : u0*n : u1*n]
}

// inPlace checks that a kernel appended exactly into part(dst, k, u0, u1) rather
// than into new memory.
func (e *RowExport) inPlace(got []byte, dst [][]byte, k, u0, u1 int) error {
	n := e.outUnit[k]
	want := dst[k][u0*n : u1*n]
	if len(got) != len(want) || (len(got) > 0 && &got[0] != &want[0]) {
		return fmt.Errorf("%w: a row kernel wrote %d bytes elsewhere, %d expected in place", ErrShape, len(got), len(want))
	}
	return nil
}

// PrepareRowExport is ExportQuantizedWeight(m, dtype, mode) in two parts: ex holds
// the scales that depend only on the quantizer buffers and the weight's shape
// (ex.Weight is empty, and ex.WeightScale is nil where re computes it from the
// weight data), and re computes the rest row range by row range. ok is false when
// m is not such a case (a weight not already in dtype or not BF16/F16/F32; a 3-D
// weight other than batched-matmul experts in per-tensor FP8, MXFP4 or the
// transposed NVFP4 formats; static NVFP4, a precomputed MXFP8 scale, SVDQuant; a
// scale the row kernels do not take; any error): ExportQuantizedWeight then does
// the whole export and reports what is wrong.
//
// Every rule stays ExportQuantizedWeight's: ex is its result on a stand-in weight
// with the same rows (or one row, where the scales are per tensor) and as few
// columns as the format's checks allow (one block for NVFP4 experts, whose
// transposed rows are the stand-in's columns), since these scales read nothing
// else of the weight; re runs the row kernels that ExportQuantizedWeight runs on all rows,
// with the same scales.
func PrepareRowExport(m *Module, dtype DType, mode DivMode) (ex *Exported, re *RowExport, ok bool) {
	w := m.Weight
	if w.Check() != nil {
		return nil, nil, false
	}
	ex, format, block, transposed, ok := prepareRowScales(m, w.DType, w.Shape, dtype, mode)
	if !ok {
		return nil, nil, false
	}
	var err error
	if transposed {
		re, err = newRowExportTransposed(w, ex, block)
	} else {
		re, err = newRowExport(w, ex, format, block, mode)
	}
	if err != nil {
		return nil, nil, false
	}
	return ex, re, true
}

// prepareRowScales is PrepareRowExport's first part, for a weight of dtype wdt and
// shape (its data is not read): the scales that depend only on the quantizer
// buffers and the shape, the format, the weight block, and whether the NVFP4
// export runs on the transposed experts.
func prepareRowScales(m *Module, wdt DType, shape []int64, dtype DType, mode DivMode) (ex *Exported, format string, block int, transposed, ok bool) {
	switch wdt {
	case BF16, F16, F32:
	default:
		return nil, "", 0, false, false
	}
	if len(shape) < 2 || len(shape) > 3 || wdt != dtype ||
		m.GlobalAmax != nil || m.WeightScaleBuf != nil || m.SVDQuant {
		return nil, "", 0, false, false
	}
	cols := int(shape[len(shape)-1])
	rows := int(Numel(shape)) / max(cols, 1)
	if rows == 0 || cols == 0 {
		return nil, "", 0, false, false
	}
	format, err := QuantizationFormat(m)
	if err != nil || format == "" {
		return nil, "", 0, false, false
	}
	if len(shape) == 3 {
		// 3-D weights are batched-matmul experts [E, in, out]. Per-tensor FP8 and MXFP4
		// quantize them as stored, by rows of the last dimension; the NVFP4 formats
		// quantize each expert transposed and transpose the results back.
		switch format {
		case "fp8", "mxfp4", "w4a8_mxfp4_fp8":
		case "nvfp4", "nvfp4_awq", "w4a16_nvfp4":
			transposed = isBMMExpert(m)
			if !transposed {
				return nil, "", 0, false, false
			}
		default:
			return nil, "", 0, false, false
		}
	}
	block = WeightBlockSize(m)
	// The stand-in keeps the weight's leading dimensions (rows) or has one row.
	standRows, standCols := rows, 1
	fromData := false // weight_scale comes from the weight's blocks
	if transposed {
		// ExportQuantizedWeight computes block scales on the stored weight before
		// it transposes it, so out must hold whole blocks too: [E, in, block] does,
		// with the real "in" and a global scale per expert.
		if block <= 0 || cols%block != 0 {
			return nil, "", 0, false, false
		}
		standCols, fromData = block, true
	}
	switch format {
	case "fp8", "int8_sq", "int8_wo", "fp8_pc_pt":
	case "int4_awq", "w4a8_awq":
		// packInt4InUint8 takes the block from the scale's shape: one column per block.
		if block <= 0 || cols%block != 0 {
			return nil, "", 0, false, false
		}
		standCols = cols / block
	case "fp8_pb_wo":
		// The scale keeps the amax's element count n; a one-row weight of
		// (n-1)·B+1 columns has a grid of n blocks of B.
		if block <= 0 || m.WeightAmax == nil {
			return nil, "", 0, false, false
		}
		n := int(m.WeightAmax.Numel())
		if n < 1 || (n-1)*block >= rows*cols {
			return nil, "", 0, false, false
		}
		standRows, standCols = 1, (n-1)*block+1
	case "nvfp4", "nvfp4_awq", "w4a16_nvfp4", "w4a8_nvfp4_fp8", "mxfp8", "mxfp4", "w4a8_mxfp4_fp8":
		if !transposed {
			standRows, standCols, fromData = 1, cols, true
		}
	default:
		return nil, "", 0, false, false
	}
	stand := make([]int64, len(shape))
	for i := range stand {
		stand[i] = 1
	}
	if standRows == rows {
		copy(stand, shape)
	}
	stand[len(stand)-1] = int64(standCols)
	sm := *m
	sm.Weight = Tensor{DType: wdt, Shape: stand, Data: make([]byte, Numel(stand)*int64(wdt.Size()))}
	ex, err = ExportQuantizedWeight(&sm, dtype, mode)
	if err != nil || ex == nil || ex.Format != format {
		return nil, "", 0, false, false
	}
	ex.Weight = Tensor{}
	if fromData {
		ex.WeightScale = nil
	} else if ex.WeightScale == nil {
		return nil, "", 0, false, false
	}
	return ex, format, block, transposed, true
}

// rowsMXFP8Block is MXFP8's fixed block (MXFP8QTensor's 32).
const rowsMXFP8Block = 32

// newRowExport picks the row kernel that to_quantized_weight runs for format.
func newRowExport(w Tensor, ex *Exported, format string, block int, mode DivMode) (*RowExport, error) {
	cols := int(w.Shape[len(w.Shape)-1])
	rows := int(w.Numel()) / cols
	es := w.DType.Size()
	re := &RowExport{Units: rows, UnitBytes: int64(cols * es)}
	shape := append([]int64(nil), w.Shape...)
	// lastDim is the weight's shape with the last dimension n.
	lastDim := func(n int) []int64 {
		s := append([]int64(nil), w.Shape...)
		s[len(s)-1] = int64(n)
		return s
	}
	switch format {
	case "fp8", "fp8_pc_pt", "fp8_pb_wo":
		var d *fp8Divider
		var err error
		switch format {
		case "fp8":
			d, err = newFP8PerTensor(w, *ex.WeightScale, mode)
		case "fp8_pc_pt":
			d, err = newFP8PerChannel(w, *ex.WeightScale)
		default:
			d, err = newFP8Block(w, *ex.WeightScale, fp8Blocks{-1: block, -2: block})
		}
		if err != nil {
			return nil, err
		}
		re.Outs, re.outUnit = []Tensor{{DType: F8E4M3, Shape: shape}}, []int{cols}
		re.fill = func(dst [][]byte, u0, u1 int) error {
			return re.inPlace(d.AppendRows(re.part(dst, 0, u0, u1), u0, u1), dst, 0, u0, u1)
		}
	case "int8_sq", "int8_wo":
		s := *ex.WeightScale
		if len(s.Shape) != 1 || s.Shape[0] != int64(rows) {
			return nil, fmt.Errorf("%w: int8 scale %v for weight %v", ErrShape, s.Shape, w.Shape)
		}
		sv, err := Float32s(s)
		if err != nil {
			return nil, err
		}
		re.Outs, re.outUnit = []Tensor{{DType: I8, Shape: shape}}, []int{cols}
		re.fill = func(dst [][]byte, u0, u1 int) error {
			q, err := appendInt8Rows(re.part(dst, 0, u0, u1), w.Data[u0*cols*es:u1*cols*es], w.DType, cols, sv[u0:u1])
			if err != nil {
				return err
			}
			return re.inPlace(q, dst, 0, u0, u1)
		}
	case "int4_awq", "w4a8_awq":
		s := *ex.WeightScale
		if rows%2 != 0 || len(s.Shape) != 2 || s.Shape[0] != int64(rows) || s.Shape[1] <= 0 || int64(cols)%s.Shape[1] != 0 {
			return nil, fmt.Errorf("%w: int4 scale %v for weight %v", ErrShape, s.Shape, w.Shape)
		}
		sc := int(s.Shape[1])
		sv, err := Float32s(s)
		if err != nil {
			return nil, err
		}
		re.Units, re.UnitBytes = rows/2, int64(2*cols*es)
		re.Outs, re.outUnit = []Tensor{{DType: U8, Shape: []int64{int64(rows / 2), int64(cols)}}}, []int{cols}
		re.fill = func(dst [][]byte, u0, u1 int) error {
			q, err := appendInt4RowPairs(re.part(dst, 0, u0, u1), w.Data[2*u0*cols*es:2*u1*cols*es], w.DType, cols, sv[2*u0*sc:2*u1*sc], sc)
			if err != nil {
				return err
			}
			return re.inPlace(q, dst, 0, u0, u1)
		}
	case "nvfp4", "nvfp4_awq", "w4a16_nvfp4", "w4a8_nvfp4_fp8":
		if ex.WeightScale2 == nil || ex.WeightScale2.Numel() != 1 || block <= 0 || block%2 != 0 || cols%block != 0 {
			return nil, fmt.Errorf("%w: NVFP4 block %d for weight %v", ErrShape, block, w.Shape)
		}
		s2, err := Float32s(*ex.WeightScale2)
		if err != nil {
			return nil, err
		}
		n := NVFP4{Block: block, Scale2: s2}
		half, nb := cols/2, cols/block
		re.Outs = []Tensor{{DType: U8, Shape: lastDim(half)}, {DType: F8E4M3, Shape: lastDim(nb)}}
		re.outUnit = []int{half, nb}
		re.fill = func(dst [][]byte, u0, u1 int) error {
			p, sc, err := n.AppendQuantizeRows(re.part(dst, 0, u0, u1), re.part(dst, 1, u0, u1), w, u0, u1)
			if err != nil {
				return err
			}
			if err := re.inPlace(p, dst, 0, u0, u1); err != nil {
				return err
			}
			return re.inPlace(sc, dst, 1, u0, u1)
		}
	case "mxfp8":
		if cols%rowsMXFP8Block != 0 {
			return nil, fmt.Errorf("%w: MXFP8 last dimension %d", ErrShape, cols)
		}
		nb := cols / rowsMXFP8Block
		re.Outs = []Tensor{{DType: F8E4M3, Shape: shape}, {DType: U8, Shape: lastDim(nb)}}
		re.outUnit = []int{cols, nb}
		re.fill = func(dst [][]byte, u0, u1 int) error {
			q, sc, err := appendMXFP8QuantizeRows(re.part(dst, 0, u0, u1), re.part(dst, 1, u0, u1), w, u0, u1, mode)
			if err != nil {
				return err
			}
			if err := re.inPlace(q, dst, 0, u0, u1); err != nil {
				return err
			}
			return re.inPlace(sc, dst, 1, u0, u1)
		}
	case "mxfp4", "w4a8_mxfp4_fp8":
		if block < 2 || block%2 != 0 || cols%block != 0 {
			return nil, fmt.Errorf("%w: MXFP4 block %d for weight %v", ErrShape, block, w.Shape)
		}
		half, nb := cols/2, cols/block
		re.Outs = []Tensor{{DType: U8, Shape: lastDim(half)}, {DType: U8, Shape: lastDim(nb)}}
		re.outUnit = []int{half, nb}
		re.fill = func(dst [][]byte, u0, u1 int) error {
			q, sc, err := AppendMXFP4Blocks(re.part(dst, 0, u0, u1), re.part(dst, 1, u0, u1), w, block, u0*nb, u1*nb, mode)
			if err != nil {
				return err
			}
			if err := re.inPlace(q, dst, 0, u0, u1); err != nil {
				return err
			}
			return re.inPlace(sc, dst, 1, u0, u1)
		}
	default:
		return nil, fmt.Errorf("%w: row export of format %q", ErrNotImplemented, format)
	}
	return re, nil
}

// newRowExportTransposed is the NVFP4 export of batched-matmul experts w [E, A, B]:
// ExportQuantizedWeight quantizes each expert transposed ([B, A], blocks along A)
// and transposes the packed bytes and block scales back to [E, A/2, B] and
// [E, A/B_blk, B]. A unit is one transposed row (e, b). On BF16 with AVX-512 the
// column kernel (nvfp4ColsBF16) computes whole vectors of 16 columns in the stored
// layout, where a block is a run of stored rows; the other columns go in tiles
// that gather their rows into a scratch weight, quantize them with
// NVFP4.AppendQuantizeRows (rows are independent) and scatter the results.
func newRowExportTransposed(w Tensor, ex *Exported, block int) (*RowExport, error) {
	E, A, B := int(w.Shape[0]), int(w.Shape[1]), int(w.Shape[2])
	if ex.WeightScale2 == nil || block <= 0 || block%2 != 0 || A%block != 0 {
		return nil, fmt.Errorf("%w: NVFP4 block %d for expert weight %v", ErrShape, block, w.Shape)
	}
	s2, err := Float32s(*ex.WeightScale2)
	if err != nil {
		return nil, err
	}
	if len(s2) != 1 && len(s2) != E {
		return nil, fmt.Errorf("%w: %d global scales for %d experts", ErrShape, len(s2), E)
	}
	es := w.DType.Size()
	half, nb := A/2, A/block
	re := &RowExport{
		Units: E * B, UnitBytes: int64(A * es),
		Outs: []Tensor{
			{DType: U8, Shape: []int64{int64(E), int64(half), int64(B)}},
			{DType: F8E4M3, Shape: []int64{int64(E), int64(nb), int64(B)}},
		},
		outUnit: []int{half, nb},
	}
	g := func(e int) float32 {
		if len(s2) == E {
			return s2[e]
		}
		return s2[0]
	}
	re.fill = func(dst [][]byte, u0, u1 int) error {
		var buf, p, sc []byte
		// tiles quantizes columns [b0, b1) of expert e: it gathers them as rows
		// into a scratch weight, quantizes those with NVFP4.AppendQuantizeRows
		// (rows are independent) and scatters the results into their columns.
		tiles := func(e, b0, b1 int) error {
			// Tiles of 32 transposed rows: the gather reads one cache line of each
			// stored row and writes 32 sequential streams.
			const tile = 32
			if b0 < b1 && buf == nil {
				buf = make([]byte, min(tile, u1-u0)*A*es)
				p, sc = make([]byte, 0, tile*half), make([]byte, 0, tile*nb)
			}
			for b0 < b1 {
				c1 := min(b1, b0+tile)
				n := c1 - b0
				transposeGather(buf[:n*A*es], w.Data[e*A*B*es:(e+1)*A*B*es], A, B, b0, c1, es)
				t := Tensor{DType: w.DType, Shape: []int64{int64(n), int64(A)}, Data: buf[:n*A*es]}
				var err error
				p, sc, err = NVFP4{Block: block, Scale2: []float32{g(e)}}.AppendQuantizeRows(p[:0], sc[:0], t, 0, n)
				if err != nil {
					return err
				}
				// Scatter by output rows: n consecutive bytes each.
				for k := range half {
					o := dst[0][(e*half+k)*B+b0 : (e*half+k)*B+c1]
					for j := range o {
						o[j] = p[j*half+k]
					}
				}
				for k := range nb {
					o := dst[1][(e*nb+k)*B+b0 : (e*nb+k)*B+c1]
					for j := range o {
						o[j] = sc[j*nb+k]
					}
				}
				b0 = c1
			}
			return nil
		}
		for u := u0; u < u1; {
			e, b0 := u/B, u%B
			b1 := min(B, b0+u1-u)
			// On BF16 the column kernel quantizes whole vectors of columns in the
			// stored layout, without the transposes; tiles take the rest.
			lo, hi := b0, b0
			if w.DType == BF16 {
				lo, hi = nvfp4ColsBF16(dst[0][e*half*B:(e+1)*half*B], dst[1][e*nb*B:(e+1)*nb*B],
					w.Data[e*A*B*es:(e+1)*A*B*es], A, B, b0, b1, block, g(e))
			}
			if err := tiles(e, b0, lo); err != nil {
				return err
			}
			if err := tiles(e, hi, b1); err != nil {
				return err
			}
			u += b1 - b0
		}
		return nil
	}
	return re, nil
}

// transposeGather writes columns [b0, b1) of the row-major [A, B] matrix src
// (elements of es bytes) as the rows of dst, [b1-b0, A].
func transposeGather(dst, src []byte, A, B, b0, b1, es int) {
	n := b1 - b0
	switch es {
	case 2:
		for a := range A {
			row := src[(a*B+b0)*2 : (a*B+b1)*2]
			for j := range n {
				o := (j*A + a) * 2
				dst[o], dst[o+1] = row[2*j], row[2*j+1]
			}
		}
	default:
		for a := range A {
			row := src[(a*B+b0)*es : (a*B+b1)*es]
			for j := range n {
				copy(dst[(j*A+a)*es:(j*A+a+1)*es], row[j*es:(j+1)*es])
			}
		}
	}
}
