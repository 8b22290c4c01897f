package parity

import (
	"errors"

	"github.com/quantstream/quantstream/quant"
)

// Result is what a handler computed for a case: output tensors by role (a role
// mapped to nil means the function returned None) and non-tensor results by the
// keys of the case's "expected" object (e.g. "get_quantization_format").
type Result struct {
	Tensors map[string]*quant.Tensor
	Values  map[string]any
}

// Handler runs one tensor case. It returns an error when the computation fails; for a
// case whose reference raised, returning an error is the expected outcome.
type Handler func(c *Case) (*Result, error)

// ErrNoHandler marks a case whose function this runner does not know. Such a case is
// a failure, never a skip.
var ErrNoHandler = errors.New("parity: no handler")

// handlers maps each manifest function of the unit and modules groups to the code
// that computes it. The table is the whole set, fixed at compile time: a function
// missing from it fails its cases with ErrNoHandler.
var handlers = map[string]Handler{
	// unit_float.go
	"FP8QTensor.quantize":                                    unitFP8QTensorQuantize,
	"FP8QTensor.dequantize":                                  unitFP8QTensorDequantize,
	"MXFP4QTensor.quantize":                                  unitMXFP4Quantize,
	"MXFP8QTensor.get_weights_scaling_factor":                unitMXFP8Scale,
	"MXFP8QTensor.quantize":                                  unitMXFP8Quantize,
	"NVFP4QTensor._cast_fp4":                                 unitNVFP4CastFP4,
	"NVFP4QTensor.get_weights_scaling_factor":                unitNVFP4Scale,
	"NVFP4QTensor.get_weights_scaling_factor_from_quantizer": unitNVFP4ScaleFromQuantizer,
	"NVFP4QTensor.quantize":                                  unitNVFP4Quantize,
	"nvfp4_tensor._cast_per_block_scale_to_fp8":              unitNVFP4CastBlockScale,
	"export_flow.fp8_pc_pt_bmm_experts":                      unitFP8PCBMMExperts,
	// Every format dispatches through quant's registry, as to_quantized_weight does;
	// a format the registry lacks fails the case with quant.ErrUnknownFormat.
	"quant_utils.to_quantized_weight": unitToQuantizedWeight,
	// unit_int.go
	"quant_utils.get_scaling_factor_from_weight":           unitScalingFactorFromWeight,
	"quant_utils.pack_int4_in_uint8":                       unitPackInt4,
	"quant_utils.from_quantized_weight":                    unitFromQuantizedWeight,
	"quant_utils.resmooth_and_get_scale":                   unitResmooth,
	"quant_utils.maybe_transpose_expert_weight_dimensions": unitMaybeTranspose,
	// modules_quant.go
	"quant_utils.get_*_scaling_factor":           modScalingFactors,
	"unified_export_hf._export_quantized_weight": modExportQuantizedWeight,
	"quant_utils.get_kv_cache_scaling_factor":    modKVCacheScalingFactor,
	// modules_stages.go
	"quant_utils.preprocess_linear_fusion": preprocessLinearFusionCase,
	"quant_utils.fuse_prequant_layernorm":  fusePrequantLayernormCase,
	"quant_utils.adjust_attn_amax_values":  adjustAttnAmaxCase,
	"quant_utils.get_quant_config":         getQuantConfigCase,
	// unit_postprocess.go
	"quant_utils.postprocess_state_dict": postprocessStateDict,
}

func lookup(function string) (Handler, bool) {
	h, ok := handlers[function]
	return h, ok
}
