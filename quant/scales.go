package quant

import "fmt"

// The scale getters of quant_utils (get_scaling_factor, get_weight_scaling_factor,
// get_weight_scaling_factor_2, get_activation_scaling_factor,
// get_prequant_scaling_factor) on one Module.

// fp8MaxForNormalization is numeric_utils.fp8_max_for_normalization: 256 in NVFP4's
// four-over-six mode, else 448.
func fp8MaxForNormalization(q *Quantizer) float32 {
	if q.BlockSizes != nil && q.BlockSizes.FourOverSix {
		return 256
	}
	return 448
}

// divScalarTensor is t.float() ÷scalar d with t's shape.
func divScalarTensor(t Tensor, d float32, mode DivMode) (*Tensor, error) {
	v, err := Float32s(t)
	if err != nil {
		return nil, err
	}
	for i, x := range v {
		v[i] = DivScalar(x, d, mode)
	}
	out, err := FromFloat32(F32, t.Shape, v)
	return &out, err
}

// nvfp4Scale2FromQuantizer is NVFP4QTensor.get_weights_scaling_factor_2_from_quantizer: the
// static global amax when given, else the raw amax (no export_amax fix), as float32
// ÷scalar 6·448 (6·256 in four-over-six mode). The shape is the buffer's.
func nvfp4Scale2FromQuantizer(q *Quantizer, amax, globalAmax *Tensor, mode DivMode) (*Tensor, error) {
	src := globalAmax
	if src == nil {
		src = amax
	}
	if src == nil {
		return nil, fmt.Errorf("%w: weight quantizer does not have attribute amax", ErrAssertion)
	}
	return divScalarTensor(*src, 6*fp8MaxForNormalization(q), mode)
}

// assertPositive fails like ModelOpt's `assert torch.all(scale > 0)`.
func assertPositive(t *Tensor, what string) error {
	v, err := Float32s(*t)
	if err != nil {
		return err
	}
	for _, x := range v {
		if !(x > 0) {
			return fmt.Errorf("%w: %s %v not positive", ErrAssertion, what, x)
		}
	}
	return nil
}

// scalingFactor is get_scaling_factor(q) with q's amax buffer (and, for a static NVFP4
// quantizer, its global amax): nil when q is disabled or
// has no amax; for E2M1 the NVFP4 global scale of the raw amax; otherwise
// ExportAmax(amax).float() ÷scalar maxbound. Every element must be > 0 (ModelOpt asserts).
// It knows no weight, so a static-block quantizer needs AmaxShape set to get the
// (O, I/B) shape; weightScalingFactor infers it from the weight. For a static NVFP4
// quantizer (with a global amax) use weightScalingFactor2.
func scalingFactor(q *Quantizer, amax, globalAmax *Tensor, mode DivMode) (*Tensor, error) {
	if q == nil || !q.Enabled {
		return nil, nil
	}
	ea, err := ExportAmax(q, amax)
	if ea == nil || err != nil {
		return nil, err
	}
	var s *Tensor
	if q.NumBits == BitsE2M1 {
		s, err = nvfp4Scale2FromQuantizer(q, amax, globalAmax, mode)
	} else {
		mb, ok := MaxBound(q)
		if !ok {
			return nil, fmt.Errorf("%w (num_bits %v)", ErrNoMaxBound, q.NumBits)
		}
		s, err = divScalarTensor(*ea, float32(mb), mode)
	}
	if err != nil {
		return nil, err
	}
	if err := assertPositive(s, "scaling factor"); err != nil {
		return nil, err
	}
	return s, nil
}

// withAmaxShape returns q with _amax_shape_for_export filled in the way ModelOpt's
// block-quant setup sets it for a weight w: (*w.shape[:-1], -1) when the only blocked
// axis is the last one. A quantizer that already has AmaxShape is returned as is.
func withAmaxShape(q *Quantizer, w Tensor) *Quantizer {
	if q == nil || q.AmaxShape != nil || q.BlockSizes == nil || len(w.Shape) == 0 {
		return q
	}
	blocked, last := 0, false
	for ax, b := range q.BlockSizes.Dims {
		if b <= 0 {
			continue
		}
		blocked++
		last = ax == -1 || ax == len(w.Shape)-1
	}
	if blocked != 1 || !last {
		return q
	}
	c := *q
	c.AmaxShape = append(cloneShape(w.Shape[:len(w.Shape)-1]), -1)
	return &c
}

// weightScale2NVFP4 is the NVFP4-family global weight scale of get_weight_scaling_factor
// and _2: amax/448 for w4a8_nvfp4_fp8, else nvfp4GlobalScale.
func weightScale2NVFP4(m *Module, format string, mode DivMode) (*Tensor, error) {
	if format == "w4a8_nvfp4_fp8" {
		if m.WeightAmax == nil {
			return nil, fmt.Errorf("%w: %s: weight_quantizer has no _amax", ErrAssertion, m.Name)
		}
		return divScalarTensor(*m.WeightAmax, 448, mode)
	}
	return nvfp4Scale2FromQuantizer(m.WeightQuantizer, m.WeightAmax, m.GlobalAmax, mode)
}

// weightScalingFactor is get_weight_scaling_factor(module): nil without a weight
// quantizer; a chain's first element's scale (W4A8); the NVFP4 per-block E4M3 scales
// of the stored weight; the MXFP4 / MXFP8 E8M0 scales; otherwise scalingFactor.
func weightScalingFactor(m *Module, mode DivMode) (*Tensor, error) {
	wq := m.WeightQuantizer
	if wq == nil {
		return nil, nil
	}
	if isSequential(wq) {
		if len(wq.Sequential) == 0 {
			return nil, fmt.Errorf("%w: %s: empty SequentialQuantizer", ErrAssertion, m.Name)
		}
		return scalingFactor(withAmaxShape(wq.Sequential[0], m.Weight), seqAmax(m, 0), nil, mode)
	}
	format, err := QuantizationFormat(m)
	if err != nil {
		return nil, err
	}
	switch {
	case nvfp4Family(format):
		s2, err := weightScale2NVFP4(m, format, mode)
		if err != nil {
			return nil, err
		}
		return nvfp4ScaleFromQuantizer(m, *s2, m.Weight, mode)
	case format == "mxfp4" || format == "w4a8_mxfp4_fp8":
		b, _ := bsLast(wq.BlockSizes)
		return mxfp4WeightScale(m.Weight, b, mode)
	case format == "mxfp8":
		return mxfp8WeightScale(m.Weight, m.WeightScaleBuf, mode)
	}
	return scalingFactor(withAmaxShape(wq, m.Weight), m.WeightAmax, m.GlobalAmax, mode)
}

func seqAmax(m *Module, i int) *Tensor {
	if i < len(m.WeightAmaxSeq) {
		return m.WeightAmaxSeq[i]
	}
	return nil
}

// weightScalingFactor2 is get_weight_scaling_factor_2(module): the NVFP4-family global
// scale, or for a chain whose last element is enabled that element's scalingFactor
// ((1,) = amax/448); nil otherwise.
func weightScalingFactor2(m *Module, mode DivMode) (*Tensor, error) {
	wq := m.WeightQuantizer
	if wq == nil {
		return nil, nil
	}
	format, err := QuantizationFormat(m)
	if err != nil {
		return nil, err
	}
	if nvfp4Family(format) {
		return weightScale2NVFP4(m, format, mode)
	}
	if !isSequential(wq) || len(wq.Sequential) == 0 || !wq.Sequential[len(wq.Sequential)-1].Enabled {
		return nil, nil
	}
	if len(wq.Sequential) != 2 {
		return nil, fmt.Errorf("%w: %s: only 2 sequential quantizers are supported", ErrAssertion, m.Name)
	}
	return scalingFactor(wq.Sequential[1], seqAmax(m, 1), nil, mode)
}

// activationScalingFactor is get_activation_scaling_factor(module): nil without an input
// quantizer; for nvfp4 / nvfp4_awq / nvfp4_svdquant modules amax ÷scalar (maxbound·448)
// (2688 for an NVFP4 input), asserted > 0; otherwise scalingFactor of the input quantizer.
func activationScalingFactor(m *Module, mode DivMode) (*Tensor, error) {
	iq := m.InputQuantizer
	if iq == nil {
		return nil, nil
	}
	format, err := QuantizationFormat(m)
	if err != nil {
		return nil, err
	}
	switch format {
	case "nvfp4", "nvfp4_awq", "nvfp4_svdquant":
		if !iq.Enabled {
			return nil, nil
		}
		ea, err := ExportAmax(iq, m.InputAmax)
		if ea == nil || err != nil {
			return nil, err
		}
		mb, ok := MaxBound(iq)
		if !ok {
			return nil, fmt.Errorf("%w: %s input quantizer (num_bits %v)", ErrNoMaxBound, m.Name, iq.NumBits)
		}
		s, err := divScalarTensor(*ea, float32(mb)*448, mode)
		if err != nil {
			return nil, err
		}
		if err := assertPositive(s, "activation scaling factor"); err != nil {
			return nil, err
		}
		return s, nil
	}
	return scalingFactor(iq, m.InputAmax, nil, mode)
}

// prequantScalingFactor is get_prequant_scaling_factor(module): the pre_quant_scale with
// every size-1 dim squeezed (same dtype), nil when there is none; asserted > 0.
func prequantScalingFactor(m *Module) (*Tensor, error) {
	if m.InputQuantizer == nil || m.PreQuantScale == nil {
		return nil, nil
	}
	p := *m.PreQuantScale
	var shape []int64
	for _, d := range p.Shape {
		if d != 1 {
			shape = append(shape, d)
		}
	}
	out := Tensor{DType: p.DType, Shape: shape, Data: append([]byte(nil), p.Data...)}
	if out.Shape == nil {
		out.Shape = []int64{}
	}
	if err := assertPositive(&out, "prequant scaling factor"); err != nil {
		return nil, err
	}
	return &out, nil
}
