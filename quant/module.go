package quant

import (
	"errors"
	"fmt"
)

// Errors of the quantizer/module layer. Each names a condition a caller can act on;
// the functions wrap them with the module or tensor they concern.
var (
	// ErrNotImplemented marks a ModelOpt code path that raises NotImplementedError
	// (an unsupported quantizer) or one this package does not reproduce.
	ErrNotImplemented = errors.New("quant: not implemented")
	// ErrAssertion marks a case where ModelOpt fails an assert (e.g. a scale <= 0,
	// an odd number of rows to pack, a block size that does not divide the input dim).
	ErrAssertion = errors.New("quant: assertion failed")
	// ErrNoMaxBound is returned by MaxBound users for a quantizer that has none (MXFP4).
	ErrNoMaxBound = errors.New("quant: quantizer has no maxbound")
	// ErrShape is returned for a tensor whose shape does not fit the operation.
	ErrShape = errors.New("quant: shape mismatch")
)

// Module is the export-relevant state of one quantized linear (or one expert
// projection): its weight, its quantizers' attributes and their buffers. It mirrors
// a ModelOpt QuantLinear after calibration. All tensors are borrowed: functions of
// this package read them and never write to them; results are new tensors.
type Module struct {
	Name string
	// Class is the module's Python class name ("QuantLinear", "_QuantGptOssExperts",
	// ...); only ExportQuantizedWeight's BMM-expert test reads it (BMMExpert overrides).
	Class string

	Weight Tensor // as stored: [O,I], or [E,...] for stacked experts

	// WeightQuantizer is nil when the module has none. For W4A8 it is a
	// SequentialQuantizer whose Sequential holds the two chained quantizers.
	WeightQuantizer *Quantizer
	WeightAmax      *Tensor   // weight_quantizer._amax; nil: None
	WeightAmaxSeq   []*Tensor // weight_quantizer.<i>._amax for a SequentialQuantizer
	GlobalAmax      *Tensor   // weight_quantizer._global_amax (static NVFP4)
	// WeightScaleBuf is weight_quantizer._scale when present (MXFP8 precomputed
	// scales, fp8_pb_real); nil otherwise.
	WeightScaleBuf *Tensor

	InputQuantizer *Quantizer // nil: the module has no input_quantizer attribute
	InputAmax      *Tensor    // input_quantizer._amax
	PreQuantScale  *Tensor    // input_quantizer._pre_quant_scale

	OutputQuantizer *Quantizer
	OutputAmax      *Tensor

	// FusedWithPrequant is ModelOpt's fused_with_prequant flag (set when a
	// pre_quant_scale was folded into a norm or into another linear).
	FusedWithPrequant bool
	// SVDQuant: the weight quantizer is an SVDQuant quantizer (it has the
	// svdquant_lora_a attribute, whether or not LoRA tensors are set).
	SVDQuant bool
	// BMMExpert: the weight is a 3-D BMM expert weight [E, in, out] (Llama4TextExperts,
	// GptOssExperts), which NVFP4 formats transpose around quantization.
	BMMExpert bool
}

// Exported is what _export_quantized_weight leaves on a module: the quantized weight and
// the scales it registers (nil when ModelOpt registers none).
type Exported struct {
	Format       string
	Weight       Tensor
	WeightScale  *Tensor
	WeightScale2 *Tensor
	InputScale   *Tensor
}

// MaxBound is TensorQuantizer.maxbound (spec §2.1): 448 for E4M3, 6 for E2M1 with E4M3
// scales, 2^(n-1+unsigned)-1 for n-bit integers. ok is false when ModelOpt has none
// (MXFP4 and anything else it would fail on).
func MaxBound(q *Quantizer) (float64, bool) {
	if q == nil {
		return 0, false
	}
	if n, isInt := q.NumBits.Int(); isInt {
		if n <= 0 || n > 62 {
			return 0, false
		}
		e := n - 1
		if q.Unsigned {
			e++
		}
		return float64(int64(1)<<e - 1), true
	}
	switch q.NumBits {
	case BitsE4M3:
		return 448, true
	case BitsE2M1:
		if q.BlockSizes != nil && q.BlockSizes.ScaleBits != nil && *q.BlockSizes.ScaleBits == BitsE4M3 {
			return 6, true
		}
	}
	return 0, false
}

// ExportAmax is TensorQuantizer.export_amax (spec §2.2). It returns a new tensor and never
// mutates amax (ModelOpt fixes zeros in the stored buffer in place; callers that need that
// side effect keep the returned tensor). A nil amax gives nil. A dynamic-block quantizer
// returns amax itself, unchanged.
func ExportAmax(q *Quantizer, amax *Tensor) (*Tensor, error) {
	return nil, fmt.Errorf("%w: ExportAmax", ErrNotImplemented)
}

// QuantizationFormat is get_quantization_format (spec §3.3) for one module's weight:
// "" is ModelOpt's QUANTIZATION_NONE.
func QuantizationFormat(m *Module) (string, error) {
	return "", fmt.Errorf("%w: QuantizationFormat", ErrNotImplemented)
}

// WeightBlockSize is get_weight_block_size: block_sizes[-1] of the representative weight
// quantizer (element 0 of a chain), 0 when it is absent, disabled or has no blocks.
func WeightBlockSize(m *Module) int {
	return 0
}

// ScalingFactor is get_scaling_factor(q) with q's amax buffer: nil when q is disabled or
// has no amax; the NVFP4 global scale for E2M1; otherwise ExportAmax(amax).float() ÷ maxbound.
func ScalingFactor(q *Quantizer, amax *Tensor, mode DivMode) (*Tensor, error) {
	return nil, fmt.Errorf("%w: ScalingFactor", ErrNotImplemented)
}

// WeightScalingFactor is get_weight_scaling_factor(module).
func WeightScalingFactor(m *Module, mode DivMode) (*Tensor, error) {
	return nil, fmt.Errorf("%w: WeightScalingFactor", ErrNotImplemented)
}

// WeightScalingFactor2 is get_weight_scaling_factor_2(module).
func WeightScalingFactor2(m *Module, mode DivMode) (*Tensor, error) {
	return nil, fmt.Errorf("%w: WeightScalingFactor2", ErrNotImplemented)
}

// ActivationScalingFactor is get_activation_scaling_factor(module).
func ActivationScalingFactor(m *Module, mode DivMode) (*Tensor, error) {
	return nil, fmt.Errorf("%w: ActivationScalingFactor", ErrNotImplemented)
}

// PrequantScalingFactor is get_prequant_scaling_factor(module): the squeezed
// pre_quant_scale, nil when there is none.
func PrequantScalingFactor(m *Module) (*Tensor, error) {
	return nil, fmt.Errorf("%w: PrequantScalingFactor", ErrNotImplemented)
}

// ExportQuantizedWeight is unified_export_hf._export_quantized_weight (spec §7.3): it
// returns nil when the module's format is None. dtype is the export dtype the weight is
// cast to right before quantization.
func ExportQuantizedWeight(m *Module, dtype DType, mode DivMode) (*Exported, error) {
	return nil, fmt.Errorf("%w: ExportQuantizedWeight", ErrNotImplemented)
}

// KVCacheDType is _compute_kv_cache_dtype over the enabled k_bmm/v_bmm/output quantizers
// of the modules (hasBias[i]: quantizers[i] has a _bias_value). Disabled or nil
// quantizers are skipped. "" is None; otherwise "FP8", "INT8", "NVFP4_AFFINE" or "NVFP4".
func KVCacheDType(quantizers []*Quantizer, hasBias []bool) string {
	return ""
}

// KVCacheScalingFactor is get_kv_cache_scaling_factor (the TRT-LLM rule): the
// get_scaling_factor of the k and v bmm quantizers, each raised to at least 1.0 when
// kvDType is "FP8". Both are nil unless both quantizers exist.
func KVCacheScalingFactor(k, v *Quantizer, kAmax, vAmax *Tensor, kvDType string, mode DivMode) (kScale, vScale *Tensor, err error) {
	return nil, nil, fmt.Errorf("%w: KVCacheScalingFactor", ErrNotImplemented)
}

// KVCacheScaleHF is the Hugging Face export rule (spec §8.3) for k_scale / v_scale:
// amax.float() ÷ 448 with amax's own shape, for FP8, NVFP4 and NVFP4_AFFINE; any other
// kvFormat is an error (ModelOpt asserts).
func KVCacheScaleHF(amax Tensor, kvFormat string, mode DivMode) (Tensor, error) {
	return Tensor{}, fmt.Errorf("%w: KVCacheScaleHF", ErrNotImplemented)
}

// CalibrateAmax is ModelOpt's max calibration of a weight quantizer on its weight w
// (forward_loop=None, and AWQ's recalibration after rescaling): per-tensor → 0-dim,
// per-channel axis 0 → (O,1), static last-axis block B → (O*I/B,1), 2-D block
// {-1:B1,-2:B2} → (ceil(O/B2),1,ceil(I/B1),1). Dynamic-block quantizers have no amax.
func CalibrateAmax(q *Quantizer, w Tensor) (Tensor, error) {
	return Tensor{}, fmt.Errorf("%w: CalibrateAmax", ErrNotImplemented)
}
