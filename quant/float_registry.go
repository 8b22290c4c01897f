package quant

import "fmt"

// The float formats in the registry, dispatched as quant_utils.to_quantized_weight
// does. Dequantizers return the weight dtype given by the caller.

func init() {
	RegisterFormat(&Format{Name: "fp8", Quantize: fp8FormatQuantize, Dequantize: fp8FormatDequantize})
	RegisterFormat(&Format{Name: "fp8_pc_pt", Quantize: fp8pcFormatQuantize, Dequantize: fp8pcFormatDequantize})
	RegisterFormat(&Format{Name: "fp8_pb_wo", Quantize: fp8pbFormatQuantize, Dequantize: fp8pbFormatDequantize})
	RegisterFormat(&Format{Name: "fp8_pb_real", Quantize: fp8pbRealFormatQuantize, Dequantize: fp8pbFormatDequantize})
	RegisterFormat(&Format{Name: "mxfp8", Quantize: mxfp8FormatQuantize, Dequantize: mxfp8FormatDequantize})
	for _, name := range []string{"nvfp4", "nvfp4_awq", "nvfp4_svdquant", "w4a16_nvfp4", "w4a8_nvfp4_fp8"} {
		RegisterFormat(&Format{Name: name, Quantize: nvfp4FormatQuantize, Dequantize: nvfp4FormatDequantize})
	}
	for _, name := range []string{"mxfp4", "w4a8_mxfp4_fp8"} {
		RegisterFormat(&Format{Name: name, Quantize: mxfp4FormatQuantize, Dequantize: mxfp4FormatDequantize})
	}
}

func needScale(s *Tensor, format string) error {
	if s == nil {
		return fmt.Errorf("%w: %s quantization needs weights_scaling_factor", ErrShape, format)
	}
	return nil
}

func fp8FormatQuantize(w Tensor, s, _ *Tensor, _ int, mode DivMode) (Tensor, error) {
	if err := needScale(s, "fp8"); err != nil {
		return Tensor{}, err
	}
	return quantizeFP8(w, *s, mode)
}

// fp8FormatDequantize is from_quantized_weight(q, s, "fp8", dtype).
func fp8FormatDequantize(q Tensor, s, _ *Tensor, _ int, dtype DType) (Tensor, error) {
	if s != nil && len(q.Shape) == 3 && len(s.Shape) >= 1 {
		// Mirror the quantizer's unsqueeze(-1) of per-expert scales.
		v := *s
		v.Shape = append(append([]int64(nil), s.Shape...), 1)
		s = &v
	}
	return UnquantizeWeight(q, s, "fp8", dtype)
}

func fp8pcFormatQuantize(w Tensor, s, _ *Tensor, _ int, _ DivMode) (Tensor, error) {
	if err := needScale(s, "fp8_pc_pt"); err != nil {
		return Tensor{}, err
	}
	return quantizeFP8PerChannel(w, *s)
}

// fp8pcFormatDequantize has no ModelOpt counterpart (from_quantized_weight raises):
// codes times the per-channel scale laid out as in quantization, in dtype.
func fp8pcFormatDequantize(q Tensor, s, _ *Tensor, _ int, dtype DType) (Tensor, error) {
	if err := needScale(s, "fp8_pc_pt"); err != nil {
		return Tensor{}, err
	}
	if q.DType != F8E4M3 {
		return Tensor{}, fmt.Errorf("%w: fp8_pc_pt weight is %v", ErrUnsupportedDType, q.DType)
	}
	// Reuse the quantizer's scale layout on a same-shaped float view.
	d, err := newFP8PerChannel(Tensor{DType: F32, Shape: q.Shape, Data: make([]byte, 4*len(q.Data))}, *s)
	if err != nil {
		return Tensor{}, err
	}
	sv, err := fqValues(*s, "weights_scaling_factor")
	if err != nil {
		return Tensor{}, err
	}
	rows, cols := fqRowsCols(q.Shape)
	out := make([]float32, rows*cols)
	colStride := d.m.colStride()
	for r := range rows {
		base := d.m.rowBase(r)
		for c := range cols {
			k := base
			if colStride != 0 {
				k += c * colStride
			}
			out[r*cols+c] = RoundTo(dtype, E4M3ToF32(q.Data[r*cols+c])) * RoundTo(dtype, sv[k])
		}
	}
	return FromFloat32(dtype, q.Shape, out)
}

func fp8pbBlocks(block int) (fp8Blocks, error) {
	if block < 1 {
		return nil, fmt.Errorf("%w: fp8 block quantization needs a block size, got %d", ErrShape, block)
	}
	return fp8Blocks{-1: block, -2: block}, nil
}

// fp8pbFormatQuantize is FP8QTensor.quantize(w, s.squeeze(), {-1: B, -2: B}).
func fp8pbFormatQuantize(w Tensor, s, _ *Tensor, block int, _ DivMode) (Tensor, error) {
	if err := needScale(s, "fp8_pb_wo"); err != nil {
		return Tensor{}, err
	}
	blocks, err := fp8pbBlocks(block)
	if err != nil {
		return Tensor{}, err
	}
	d, err := newFP8Block(w, *s, blocks)
	if err != nil {
		return Tensor{}, err
	}
	return d.tensor(), nil
}

// fp8pbRealFormatQuantize: ModelOpt's to_quantized_weight has no "fp8_pb_real"
// branch; real-quant weights reach it already compressed (a QTensorWrapper whose
// data is returned as is). An F8_E4M3 weight is therefore returned unchanged and
// anything else is NotImplemented, as in ModelOpt.
func fp8pbRealFormatQuantize(w Tensor, _, _ *Tensor, _ int, _ DivMode) (Tensor, error) {
	if w.DType == F8E4M3 {
		return Tensor{DType: F8E4M3, Shape: append([]int64(nil), w.Shape...), Data: append([]byte(nil), w.Data...)}, nil
	}
	return Tensor{}, fmt.Errorf("%w: to_quantized_weight for format \"fp8_pb_real\" on a %v weight", ErrNotImplemented, w.DType)
}

func fp8pbFormatDequantize(q Tensor, s, _ *Tensor, block int, dtype DType) (Tensor, error) {
	if err := needScale(s, "fp8_pb_wo"); err != nil {
		return Tensor{}, err
	}
	blocks, err := fp8pbBlocks(block)
	if err != nil {
		return Tensor{}, err
	}
	rep, err := blocks.reps(len(q.Shape))
	if err != nil {
		return Tensor{}, err
	}
	v := *s
	v.Shape = fp8BlockScaleShape(q.Shape, rep) // the export keeps [O/B,1,I/B,1]
	if v.Numel() != s.Numel() {
		return Tensor{}, fmt.Errorf("%w: scale %v for weight %v with block %d", ErrShape, s.Shape, q.Shape, block)
	}
	return fp8BlockDequantize(q, v, blocks, dtype)
}

func mxfp8FormatQuantize(w Tensor, s, _ *Tensor, _ int, _ DivMode) (Tensor, error) {
	if err := needScale(s, "mxfp8"); err != nil {
		return Tensor{}, err
	}
	// quantize_with_scale asserts whole blocks (it does not pad).
	rows, _, err := mxfp8Layout(w)
	if err != nil {
		return Tensor{}, err
	}
	if s.DType != U8 {
		return Tensor{}, fmt.Errorf("%w: MXFP8 scale is %v, want U8 (E8M0)", ErrUnsupportedDType, s.DType)
	}
	if err := s.Check(); err != nil {
		return Tensor{}, fmt.Errorf("weights_scaling_factor: %w", err)
	}
	data, err := appendMXFP8Rows(make([]byte, 0, len(w.Data)), w, s.Data, 0, rows)
	if err != nil {
		return Tensor{}, err
	}
	return Tensor{DType: F8E4M3, Shape: append([]int64(nil), w.Shape...), Data: data}, nil
}

func mxfp8FormatDequantize(q Tensor, s, _ *Tensor, _ int, dtype DType) (Tensor, error) {
	if err := needScale(s, "mxfp8"); err != nil {
		return Tensor{}, err
	}
	return mxfp8Dequantize(q, *s, dtype)
}

// nvfp4FormatQuantize asserts, as ModelOpt does, that the block size and the
// global scale are given; the block scale may be nil (then it is computed).
func nvfp4FormatQuantize(w Tensor, s, s2 *Tensor, block int, mode DivMode) (Tensor, error) {
	if block == 0 {
		return Tensor{}, fmt.Errorf("%w: block size not passed, unable to quantize to NVFP4", ErrAssertion)
	}
	if s2 == nil {
		return Tensor{}, fmt.Errorf("%w: weights scaling factor 2 not passed, unable to quantize to NVFP4", ErrAssertion)
	}
	if len(s2.Shape) != 0 && len(w.Shape) != 3 && s2.Numel() != 1 {
		return Tensor{}, fmt.Errorf("%w: weights_scaling_factor_2 %v for a %d-D weight", ErrShape, s2.Shape, len(w.Shape))
	}
	r, err := nvfp4Quantize(w, block, s, s2, mode)
	if err != nil {
		return Tensor{}, err
	}
	return r.Packed, nil
}

func nvfp4FormatDequantize(q Tensor, s, s2 *Tensor, block int, dtype DType) (Tensor, error) {
	if s == nil || s2 == nil {
		return Tensor{}, fmt.Errorf("%w: NVFP4 dequantization needs both scales", ErrShape)
	}
	return nvfp4Dequantize(q, *s, *s2, block, dtype)
}

// mxfp4FormatQuantize ignores the given scale: ModelOpt recomputes it.
func mxfp4FormatQuantize(w Tensor, _, _ *Tensor, block int, mode DivMode) (Tensor, error) {
	if block == 0 {
		block = 32 // MXFP4QTensor.quantize's default for block_size None
	}
	p, _, err := mxfp4Quantize(w, block, mode)
	return p, err
}

// mxfp4FormatDequantize accepts the scale as exported ((*w.shape[:-1], I/B)) or
// as MXFP4QTensor returns it ((numel/B, 1)): only its element count matters.
func mxfp4FormatDequantize(q Tensor, s, _ *Tensor, block int, dtype DType) (Tensor, error) {
	if err := needScale(s, "mxfp4"); err != nil {
		return Tensor{}, err
	}
	if block == 0 {
		block = 32
	}
	return mxfp4Dequantize(q, *s, block, dtype)
}
