package stages

import (
	"errors"
	"fmt"

	"github.com/quantstream/quantstream/quant"
)

// exportFloatAdapter exports the NVFP4-family (dynamic blocks), MXFP8 and MXFP4
// formats with quant's float kernels. It stands in for quant's module-level scale
// adapters (quant/module_float.go), which report ErrNotImplemented until they land;
// exportModule only calls it then, so it becomes dead code once they do.
func exportFloatAdapter(ts *tensorSet, m *Module, dtype quant.DType, mode quant.DivMode) (*quant.Exported, error) {
	qm := m.quantModule(ts)
	stored := qm.Weight
	if len(stored.Shape) != 2 && !m.BMM {
		return nil, fmt.Errorf("%w: module %s: %d-D weight", ErrUnsupported, m.ID(), len(stored.Shape))
	}
	wd := stored
	if dtype != stored.DType {
		v, err := quant.Float32s(stored)
		if err != nil {
			return nil, err
		}
		if wd, err = quant.FromFloat32(dtype, stored.Shape, v); err != nil {
			return nil, err
		}
	}
	// NVFP4 BMM experts [E, in, out] are quantized transposed and transposed back.
	nvBMM := m.BMM && m.Format != "mxfp4" && m.Format != "w4a8_mxfp4_fp8"
	if nvBMM {
		var err error
		if stored, err = quant.TransposeLast2(stored); err != nil {
			return nil, err
		}
		if wd, err = quant.TransposeLast2(wd); err != nil {
			return nil, err
		}
	}
	last := len(stored.Shape) - 1
	rows := int(stored.Numel() / stored.Shape[last])
	scaleShape := func(b int) []int64 {
		s := append([]int64(nil), stored.Shape...)
		s[last] /= int64(b)
		return s
	}
	ex := &quant.Exported{Format: m.Format}
	switch m.Format {
	case "nvfp4", "nvfp4_awq", "w4a16_nvfp4", "w4a8_nvfp4_fp8":
		if qm.GlobalAmax != nil || m.WQ.Class == "NVFP4StaticQuantizer" {
			return nil, fmt.Errorf("%w: module %s: static NVFP4 scales", ErrUnsupported, m.Name)
		}
		s2, err := quant.WeightScalingFactor2(qm, mode)
		if err != nil || s2 == nil {
			return nil, fmt.Errorf("module %s: weight_scale_2: %w", m.Name, errors.Join(err, ErrMissingAmax))
		}
		v2, err := quant.Scalar(*s2)
		if err != nil {
			return nil, err
		}
		sc, err := quant.NVFP4{Block: m.Block, Scale2: []float32{v2}}.AppendBlockScales(nil, stored, 0, rows)
		if err != nil {
			return nil, err
		}
		scale := quant.Tensor{DType: quant.F8E4M3, Shape: scaleShape(m.Block), Data: sc}
		q, err := quant.ToQuantizedWeight(wd, &scale, s2, m.Format, m.Block, mode)
		if err != nil {
			return nil, err
		}
		if nvBMM {
			if q, err = quant.TransposeLast2(q); err != nil {
				return nil, err
			}
			if scale, err = quant.TransposeLast2(scale); err != nil {
				return nil, err
			}
		}
		s2s := quant.Tensor{DType: s2.DType, Shape: []int64{}, Data: s2.Data}
		ex.Weight, ex.WeightScale, ex.WeightScale2 = q, &scale, &s2s
	case "mxfp8":
		sc, err := quant.AppendMXFP8Scales(nil, stored, 0, rows, mode)
		if err != nil {
			return nil, err
		}
		scale := quant.Tensor{DType: quant.U8, Shape: scaleShape(m.Block), Data: sc}
		q, _, err := quant.MXFP8Quantize(wd, &scale, mode)
		if err != nil {
			return nil, err
		}
		ex.Weight, ex.WeightScale = q, &scale
	case "mxfp4", "w4a8_mxfp4_fp8":
		q, sc, err := quant.MXFP4Quantize(wd, m.Block, mode)
		if err != nil {
			return nil, err
		}
		sc.Shape = scaleShape(m.Block)
		ex.Weight, ex.WeightScale = q, &sc
	default:
		return nil, fmt.Errorf("%w: module %s: format %q", ErrUnsupported, m.Name, m.Format)
	}
	if hasInputScale(m) {
		s, err := quant.ActivationScalingFactor(qm, mode)
		if err != nil {
			return nil, fmt.Errorf("module %s: input_scale: %w", m.Name, err)
		}
		if s != nil {
			t := quant.Tensor{DType: s.DType, Shape: []int64{}, Data: s.Data}
			ex.InputScale = &t
		}
	}
	return ex, nil
}
