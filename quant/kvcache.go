package quant

import "fmt"

// The KV-cache rules: the cache dtype of the bmm quantizers and the k/v scales.

// KVCacheDType is _compute_kv_cache_dtype over the enabled k_bmm/v_bmm/output quantizers
// of the modules (hasBias[i]: quantizers[i] has a _bias_value). Disabled or nil
// quantizers are skipped. "" is None; otherwise "FP8", "INT8", "NVFP4_AFFINE" or "NVFP4".
func KVCacheDType(quantizers []*Quantizer, hasBias []bool) string {
	affine := true
	var fp8, int8, fp4 bool
	for i, q := range quantizers {
		if q == nil || !qEnabled(q) {
			continue
		}
		nb := q.NumBits
		if isSequential(q) {
			nb = q.Sequential[0].NumBits
		}
		fp8 = fp8 || nb == BitsE4M3
		int8 = int8 || intOf(nb, 8)
		fp4 = fp4 || nb == BitsE2M1
		affine = affine && i < len(hasBias) && hasBias[i]
	}
	switch {
	case fp8:
		return "FP8"
	case int8:
		return "INT8"
	case fp4 && affine:
		return "NVFP4_AFFINE"
	case fp4:
		return "NVFP4"
	}
	return ""
}

// kvCacheScalingFactor is get_kv_cache_scaling_factor (the TRT-LLM rule): the
// scalingFactor of the k and v bmm quantizers, each replaced by max(scale, 1.0) (shape
// broadcast with (1,)) when kvDType is "FP8". Both are nil unless both quantizers exist.
// The Hugging Face export uses KVCacheScaleHF instead.
func kvCacheScalingFactor(k, v *Quantizer, kAmax, vAmax *Tensor, kvDType string, mode DivMode) (kScale, vScale *Tensor, err error) {
	if k == nil || v == nil {
		return nil, nil, nil
	}
	out := [2]*Tensor{}
	for i, qa := range [2]struct {
		q *Quantizer
		a *Tensor
	}{{k, kAmax}, {v, vAmax}} {
		s, err := scalingFactor(qa.q, qa.a, nil, mode)
		if err != nil {
			return nil, nil, err
		}
		if s != nil && kvDType == "FP8" {
			vals, _ := Float32s(*s)
			for j, x := range vals {
				// torch.max(a, b) propagates NaN.
				if x == x && x < 1 {
					vals[j] = 1
				}
			}
			shape := s.Shape
			if len(shape) == 0 {
				shape = []int64{1}
			}
			t, err := FromFloat32(F32, shape, vals)
			if err != nil {
				return nil, nil, err
			}
			s = &t
		}
		out[i] = s
	}
	return out[0], out[1], nil
}

// KVCacheScaleHF is the Hugging Face export rule for k_scale / v_scale (the
// k_bmm_quantizer._amax / v_bmm_quantizer._amax renames of quant_utils.postprocess_state_dict):
// amax.float() ÷scalar 448 with amax's own shape, for FP8, NVFP4 and NVFP4_AFFINE; any
// other kvFormat is an error (ModelOpt asserts). No zero fix and no clamp.
func KVCacheScaleHF(amax Tensor, kvFormat string, mode DivMode) (Tensor, error) {
	switch kvFormat {
	case "FP8", "NVFP4", "NVFP4_AFFINE":
	default:
		return Tensor{}, fmt.Errorf("%w: invalid KV cache quantization format %q", ErrAssertion, kvFormat)
	}
	if kvFormat == "FP8" && amax.Numel() != 1 {
		// The > 0.5 warning calls .item(), which needs one element.
		return Tensor{}, fmt.Errorf("%w: FP8 KV amax of shape %v is not a scalar", ErrShape, amax.Shape)
	}
	s, err := divScalarTensor(amax, 448, mode)
	if err != nil {
		return Tensor{}, err
	}
	return *s, nil
}
