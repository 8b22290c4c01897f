package quant

// Reference is ModelOpt's export taken apart: the qtensor methods and quant_utils
// helpers that the export calls inside ToQuantizedWeight, FromQuantizedWeight and
// ExportQuantizedWeight, each callable on its own. The golden parity runner (package
// parity) checks every one against ModelOpt's own outputs, so that a difference is
// found in the step that makes it, not only in the exported checkpoint.
//
// A conversion needs none of these: use the Format registry (ToQuantizedWeight,
// FromQuantizedWeight, LookupFormat) and ExportQuantizedWeight, which compose them.
// They live on one type so that the package's face stays what a library user needs
// while the steps stay reachable, with their documentation, by `go doc quant.Reference`.
// The zero value is ready to use; methods never retain their arguments.
type Reference struct{}

// WeightScalingFactor is quant_utils.get_weight_scaling_factor(module): nil without a
// weight quantizer; a chain's first element's scale (W4A8); the NVFP4 per-block E4M3
// scales of the stored weight; the MXFP4 / MXFP8 E8M0 scales; otherwise
// get_scaling_factor of the weight quantizer.
func (Reference) WeightScalingFactor(m *Module, mode DivMode) (*Tensor, error) {
	return weightScalingFactor(m, mode)
}

// WeightScalingFactor2 is quant_utils.get_weight_scaling_factor_2(module): the
// NVFP4-family global scale, or for a chain whose last element is enabled that
// element's get_scaling_factor; nil otherwise.
func (Reference) WeightScalingFactor2(m *Module, mode DivMode) (*Tensor, error) {
	return weightScalingFactor2(m, mode)
}

// ActivationScalingFactor is quant_utils.get_activation_scaling_factor(module).
func (Reference) ActivationScalingFactor(m *Module, mode DivMode) (*Tensor, error) {
	return activationScalingFactor(m, mode)
}

// PrequantScalingFactor is quant_utils.get_prequant_scaling_factor(module).
func (Reference) PrequantScalingFactor(m *Module) (*Tensor, error) {
	return prequantScalingFactor(m)
}

// KVCacheScalingFactor is quant_utils.get_kv_cache_scaling_factor, the TRT-LLM rule
// (the Hugging Face export uses KVCacheScaleHF).
func (Reference) KVCacheScalingFactor(k, v *Quantizer, kAmax, vAmax *Tensor, kvDType string, mode DivMode) (kScale, vScale *Tensor, err error) {
	return kvCacheScalingFactor(k, v, kAmax, vAmax, kvDType, mode)
}

// ScalingFactorFromWeight is quant_utils.get_scaling_factor_from_weight(w, groupSize),
// the legacy TRT-LLM path: w [n,k]; groupSize 0 gives amax(|row|)/127 of shape [n],
// otherwise amax(|group|)/7 of shape [n, k/groupSize]; zero scales become 1.
func (Reference) ScalingFactorFromWeight(w Tensor, groupSize int, mode DivMode) (Tensor, error) {
	return scalingFactorFromWeight(w, groupSize, mode)
}

// ResmoothAndGetScale is quant_utils.resmooth_and_get_scale (the TRT-LLM
// tensor-parallel merge of AWQ weights).
func (Reference) ResmoothAndGetScale(merged Tensor, pqs []Tensor, ranks, groupSize int, newPQS *Tensor, quantization string, mode DivMode) (weights, scales, avg Tensor, err error) {
	return resmoothAndGetScale(merged, pqs, ranks, groupSize, newPQS, quantization, mode)
}

// MaybeTransposeExpertWeightDimensions is
// quant_utils.maybe_transpose_expert_weight_dimensions.
func (Reference) MaybeTransposeExpertWeightDimensions(w Tensor, s *Tensor, isBMM bool) (Tensor, *Tensor, error) {
	return maybeTransposeExpertWeightDimensions(w, s, isBMM)
}

// PackInt4InUint8 is quant_utils.pack_int4_in_uint8(w, s): w [O,I] or [E,O,I] in
// BF16/F16/F32, s [..., O, I/B] float32; the result is U8 [O/2, I] or [E, O/2, I].
func (Reference) PackInt4InUint8(w, s Tensor) (Tensor, error) {
	return packInt4InUint8(w, s)
}

// NVFP4GlobalScale is NVFP4QTensor's global scale of an amax: amax ÷scalar 6·fp8Max
// (fp8Max 448, or 256 in four-over-six mode).
func (Reference) NVFP4GlobalScale(amax, fp8Max float32, mode DivMode) float32 {
	return nvfp4GlobalScale(amax, fp8Max, mode)
}

// NVFP4CastBlockScale is nvfp4_tensor._cast_per_block_scale_to_fp8 of one block
// scale s (normalised by smax·fp8Max first when normalize).
func (Reference) NVFP4CastBlockScale(s, smax, fp8Max float32, normalize bool) uint8 {
	return nvfp4CastBlockScale(s, smax, fp8Max, normalize)
}

// NVFP4StaticBlockScales appends the E4M3 block scales of a static NVFP4 quantizer
// (NVFP4QTensor.get_weights_scaling_factor_from_quantizer) for the per-block amax.
func (Reference) NVFP4StaticBlockScales(dst []byte, amax []float32, globalAmax, fp8Max float32, mode DivMode) []byte {
	return nvfp4StaticBlockScales(dst, amax, globalAmax, fp8Max, mode)
}

// NVFP4StaticBlockScalesF32 appends the same scales before normalisation and the FP8
// cast (keep_high_precision).
func (Reference) NVFP4StaticBlockScalesF32(dst, amax []float32, mode DivMode) []float32 {
	return nvfp4StaticBlockScalesF32(dst, amax, mode)
}

// NVFP4Quantize is NVFP4QTensor.quantize(w, block, scales, scale2): the packed
// weight, its E4M3 block scales and the global scale (each computed from w when nil).
func (Reference) NVFP4Quantize(w Tensor, block int, scales, scale2 *Tensor, mode DivMode) (packed, blockScales, globalScale Tensor, err error) {
	q, err := nvfp4Quantize(w, block, scales, scale2, mode)
	return q.Packed, q.Scales, q.Scale2, err
}

// NVFP4Dequantize is NVFP4QTensor.dequantize into dtype.
func (Reference) NVFP4Dequantize(packed, scales, scale2 Tensor, block int, dtype DType) (Tensor, error) {
	return nvfp4Dequantize(packed, scales, scale2, block, dtype)
}

// MXFP4Quantize is MXFP4QTensor.quantize(w, block): packed E2M1 and E8M0 scales.
func (Reference) MXFP4Quantize(w Tensor, block int, mode DivMode) (packed, scales Tensor, err error) {
	return mxfp4Quantize(w, block, mode)
}

// MXFP4Dequantize is MXFP4QTensor.dequantize into dtype.
func (Reference) MXFP4Dequantize(packed, scales Tensor, block int, dtype DType) (Tensor, error) {
	return mxfp4Dequantize(packed, scales, block, dtype)
}

// MXFP8Scales appends MXFP8QTensor.get_weights_scaling_factor of rows [r0, r1) of w:
// one E8M0 code per block of 32.
func (Reference) MXFP8Scales(dst []byte, w Tensor, r0, r1 int, mode DivMode) ([]byte, error) {
	return appendMXFP8Scales(dst, w, r0, r1, mode)
}

// MXFP8Quantize is MXFP8QTensor.quantize(w) with the given E8M0 scales, or scales
// computed from w when nil.
func (Reference) MXFP8Quantize(w Tensor, scales *Tensor, mode DivMode) (q, s Tensor, err error) {
	return mxfp8Quantize(w, scales, mode)
}

// MXFP8Dequantize is MXFP8QTensor.dequantize into dtype.
func (Reference) MXFP8Dequantize(q, scales Tensor, dtype DType) (Tensor, error) {
	return mxfp8Dequantize(q, scales, dtype)
}

// FP8QTensorQuantize is FP8QTensor.quantize(w) computing its own scales: per tensor,
// per axis, or per block (blocks maps a dimension, -1 the last, to its block size).
func (Reference) FP8QTensorQuantize(w Tensor, axis []int, blocks map[int]int, mode DivMode) (q, scales Tensor, err error) {
	return fp8QTensorQuantize(w, axis, blocks, mode)
}

// FP8QTensorQuantizeWithScales is FP8QTensor.quantize(w, s): with blocks, the block
// grid of s (FP8QTensor's block path); without, (w / s) with PyTorch broadcasting and
// type promotion (a 0-dim s does not promote w).
func (Reference) FP8QTensorQuantizeWithScales(w, s Tensor, blocks map[int]int, mode DivMode) (Tensor, error) {
	var d *fp8Divider
	var err error
	if len(blocks) > 0 {
		d, err = newFP8Block(w, s, blocks)
	} else {
		d, err = newFP8Broadcast(w, s, mode)
	}
	if err != nil {
		return Tensor{}, err
	}
	return d.tensor(), nil
}

// FP8BlockDequantize is FP8QTensor.dequantize with block scales, into dtype.
func (Reference) FP8BlockDequantize(q, s Tensor, blocks map[int]int, dtype DType) (Tensor, error) {
	return fp8BlockDequantize(q, s, blocks, dtype)
}
