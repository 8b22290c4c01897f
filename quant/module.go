package quant

import (
	"errors"
	"fmt"
	"strings"
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

// ErrNoAmax is returned by CalibrateAmax for a quantizer that keeps no amax (dynamic
// or MX-format quantizers).
var ErrNoAmax = errors.New("quant: quantizer has no amax")

// cloneTensor is a deep copy of t.
func cloneTensor(t *Tensor) *Tensor {
	return &Tensor{DType: t.DType, Shape: cloneShape(t.Shape), Data: append([]byte(nil), t.Data...)}
}

// squeezed is tensor.squeeze(): every size-1 dim removed (a copy of the header only).
func squeezed(t *Tensor) *Tensor {
	shape := []int64{}
	for _, d := range t.Shape {
		if d != 1 {
			shape = append(shape, d)
		}
	}
	return &Tensor{DType: t.DType, Shape: shape, Data: t.Data}
}

// isBMMExpert is _export_quantized_weight's test: a 3-D weight of a Llama4TextExperts /
// GptOssExperts module (or one flagged BMMExpert).
func isBMMExpert(m *Module) bool {
	if len(m.Weight.Shape) != 3 {
		return false
	}
	return m.BMMExpert || strings.Contains(m.Class, "Llama4TextExperts") || strings.Contains(m.Class, "GptOssExperts")
}

// ExportQuantizedWeight is unified_export_hf._export_quantized_weight: it
// returns nil when the module's format is None. dtype is the export dtype the weight is
// cast to right before quantization; mode selects CPU or CUDA ÷scalar semantics.
func ExportQuantizedWeight(m *Module, dtype DType, mode DivMode) (*Exported, error) {
	format, err := QuantizationFormat(m)
	if err != nil || format == "" {
		return nil, err
	}
	block := WeightBlockSize(m)
	wq, iq := m.WeightQuantizer, m.InputQuantizer
	ex := &Exported{Format: format}
	if format == "fp8" {
		if m.WeightAmax == nil {
			return nil, fmt.Errorf("%w: %s: weight_quantizer has no _amax", ErrAssertion, m.Name)
		}
		amax := *m.WeightAmax
		mb, _ := MaxBound(wq)
		if len(amax.Shape) == 1 {
			// amax.item() / maxbound in Python doubles, then torch.tensor(): a 0-dim
			// float32 rounded once from the double quotient (amax must have one element).
			v, err := Scalar(amax)
			if err != nil {
				return nil, fmt.Errorf("%s: weight amax: %w", m.Name, err)
			}
			t, _ := FromFloat32(F32, []int64{}, []float32{float32(float64(v) / mb)})
			ex.WeightScale = &t
		} else if ex.WeightScale, err = divScalarTensor(amax, float32(mb), mode); err != nil {
			return nil, err
		}
		if iq != nil && m.InputAmax != nil {
			// The exporter casts the input amax buffer to float32 first, so export_amax
			// clamps with float32's range.
			a32, err := intCast(*m.InputAmax, F32)
			if err != nil {
				return nil, fmt.Errorf("%s: input amax: %w", m.Name, err)
			}
			mm := *m
			mm.InputAmax = &a32
			s, err := activationScalingFactor(&mm, mode)
			if err != nil {
				return nil, err
			}
			if s == nil {
				return nil, fmt.Errorf("%w: %s: input_scale is None (disabled input quantizer with an amax)", ErrAssertion, m.Name)
			}
			ex.InputScale = squeezed(s)
		}
	} else {
		switch format {
		case "fp8_pb_real":
			if m.WeightScaleBuf == nil {
				return nil, fmt.Errorf("%w: %s: fp8_pb_real weight quantizer has no _scale", ErrAssertion, m.Name)
			}
			s, err := intCast(*m.WeightScaleBuf, F32)
			if err != nil {
				return nil, err
			}
			ex.WeightScale = &s
		case "mxfp8":
			if ex.WeightScale, err = mxfp8WeightScale(m.Weight, m.WeightScaleBuf, mode); err != nil {
				return nil, err
			}
		default:
			if ex.WeightScale, err = weightScalingFactor(m, mode); err != nil {
				return nil, err
			}
		}
		if iq != nil && iq.Enabled {
			a, err := amaxProperty(iq, m.InputAmax)
			if err != nil {
				return nil, err
			}
			if a != nil {
				s, err := activationScalingFactor(m, mode)
				if err != nil {
					return nil, err
				}
				if s == nil {
					return nil, fmt.Errorf("%w: %s: input_scale is None", ErrAssertion, m.Name)
				}
				ex.InputScale = squeezed(s)
			}
		}
	}
	switch format {
	case "nvfp4_awq", "nvfp4_svdquant", "nvfp4", "w4a16_nvfp4", "w4a8_awq", "w4a8_nvfp4_fp8":
		s2, err := weightScalingFactor2(m, mode)
		if err != nil {
			return nil, err
		}
		if s2 == nil {
			return nil, fmt.Errorf("%w: %s: weight_scale_2 is None", ErrAssertion, m.Name)
		}
		ex.WeightScale2 = squeezed(s2)
	}

	// NVFP4 weights, and fp8_pc_pt weights of BMM experts, are quantized with the
	// expert dimensions transposed and transposed back (with the NVFP4 block scales);
	// maybeTransposeExpertWeightDimensions leaves non-BMM weights as they are.
	bmm := isBMMExpert(m)
	nvfp4 := format == "nvfp4" || format == "nvfp4_awq" || format == "nvfp4_svdquant" || format == "w4a16_nvfp4"
	transpose := nvfp4 || (format == "fp8_pc_pt" && bmm)
	w := m.Weight
	if transpose {
		if w, _, err = maybeTransposeExpertWeightDimensions(w, nil, bmm); err != nil {
			return nil, err
		}
	}
	if nvfp4 {
		if ex.WeightScale, err = nvfp4ScaleFromQuantizer(m, *ex.WeightScale2, w, mode); err != nil {
			return nil, err
		}
	}
	wd, err := exportCast(w, dtype)
	if err != nil {
		return nil, fmt.Errorf("%s: weight: %w", m.Name, err)
	}
	if ex.Weight, err = ToQuantizedWeight(wd, ex.WeightScale, ex.WeightScale2, format, block, mode); err != nil {
		return nil, fmt.Errorf("%s: %w", m.Name, err)
	}
	switch {
	case nvfp4:
		ex.Weight, ex.WeightScale, err = maybeTransposeExpertWeightDimensions(ex.Weight, ex.WeightScale, bmm)
	case transpose:
		ex.Weight, _, err = maybeTransposeExpertWeightDimensions(ex.Weight, nil, bmm)
	}
	if err != nil {
		return nil, err
	}
	return ex, nil
}

// exportCast is weight.to(dtype) for quantization: w itself when it already has dtype
// (the kernels only read it).
func exportCast(w Tensor, dtype DType) (Tensor, error) {
	if w.DType == dtype {
		return w, nil
	}
	return intCast(w, dtype)
}
