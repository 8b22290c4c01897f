package stages

import (
	"errors"
	"fmt"
	"strings"

	"github.com/quantstream/quantstream/quant"
)

// outputs of one exported module, as headers: the quantized weight and its scales.
func exportHeaders(m *Module, w TensorHeader) (map[string]TensorHeader, error) {
	if m.BMM {
		return bmmExportHeaders(m, w)
	}
	out := map[string]TensorHeader{}
	if len(w.Shape) != 2 {
		return nil, fmt.Errorf("%w: %s: %d-D weight %v (only 2-D linears are supported)", ErrUnsupported, m.Weight, len(w.Shape), w.Shape)
	}
	O, I := w.Shape[0], w.Shape[1]
	scalar := TensorHeader{DType: quant.F32, Shape: []int64{}}
	needBlock := func(b int64) error {
		if b <= 0 || I%b != 0 {
			return fmt.Errorf("%w: %s: input size %d not divisible by block %d", ErrShape, m.Weight, I, b)
		}
		return nil
	}
	B := int64(m.Block)
	switch m.Format {
	case "fp8":
		out["weight"] = TensorHeader{quant.F8E4M3, []int64{O, I}}
		out["weight_scale"] = scalar
	case "fp8_pc_pt":
		out["weight"] = TensorHeader{quant.F8E4M3, []int64{O, I}}
		out["weight_scale"] = TensorHeader{quant.F32, squeezed([]int64{O})}
	case "fp8_pb_wo":
		b0, b1 := int64(m.WQ.BlockSizes.Dims[-2]), B
		if b0 <= 0 || b1 <= 0 {
			return nil, fmt.Errorf("%w: %s: FP8 block sizes %v", ErrUnsupported, m.Weight, m.WQ.BlockSizes.Dims)
		}
		out["weight"] = TensorHeader{quant.F8E4M3, []int64{O, I}}
		scale := []int64{ceilDiv(O, b0), 1, ceilDiv(I, b1), 1}
		if quant.Numel(scale) == 1 {
			// The scale keeps the amax's shape, and calibration stores a one-block
			// amax as a 0-dim tensor.
			scale = []int64{}
		}
		out["weight_scale"] = TensorHeader{quant.F32, scale}
	case "int8_sq", "int8_wo":
		out["weight"] = TensorHeader{quant.I8, []int64{O, I}}
		out["weight_scale"] = TensorHeader{quant.F32, squeezed([]int64{O})}
	case "int4_awq", "w4a8_awq":
		if err := needBlock(B); err != nil {
			return nil, err
		}
		if O%2 != 0 {
			return nil, fmt.Errorf("%w: %s: INT4 packing needs an even output size, got %d", ErrShape, m.Weight, O)
		}
		out["weight"] = TensorHeader{quant.U8, []int64{O / 2, I}}
		out["weight_scale"] = TensorHeader{quant.F32, []int64{O, I / B}}
		if m.Format == "w4a8_awq" && m.WQ.Sequential[1].Enabled {
			out["weight_scale_2"] = scalar
		}
	case "nvfp4", "nvfp4_awq", "w4a16_nvfp4", "w4a8_nvfp4_fp8":
		if err := needBlock(B); err != nil {
			return nil, err
		}
		if B%2 != 0 {
			return nil, fmt.Errorf("%w: %s: odd NVFP4 block %d", ErrShape, m.Weight, B)
		}
		if m.WQ.Class == "NVFP4StaticQuantizer" {
			return nil, fmt.Errorf("%w: %s: static (four-over-six/MSE) NVFP4 export", ErrUnsupported, m.Weight)
		}
		out["weight"] = TensorHeader{quant.U8, []int64{O, I / 2}}
		out["weight_scale"] = TensorHeader{quant.F8E4M3, []int64{O, I / B}}
		out["weight_scale_2"] = scalar
	case "mxfp8":
		if err := needBlock(B); err != nil {
			return nil, err
		}
		out["weight"] = TensorHeader{quant.F8E4M3, []int64{O, I}}
		out["weight_scale"] = TensorHeader{quant.U8, []int64{O, I / B}}
	case "mxfp4", "w4a8_mxfp4_fp8":
		if err := needBlock(B); err != nil {
			return nil, err
		}
		out["weight"] = TensorHeader{quant.U8, []int64{O, I / 2}}
		out["weight_scale"] = TensorHeader{quant.U8, []int64{O, I / B}}
	default:
		return nil, fmt.Errorf("%w: %s: format %q", ErrUnsupported, m.Weight, m.Format)
	}
	switch m.Format {
	case "mxfp8", "mxfp4", "w4a8_mxfp4_fp8":
	default:
		if m.WAmax == "" {
			return nil, fmt.Errorf("%w: %s: %s weight quantizer has no _amax", ErrMissingAmax, m.Name, m.Format)
		}
		if m.Format == "w4a8_awq" && m.WQ.Sequential[1].Enabled && m.WAmax1 == "" {
			return nil, fmt.Errorf("%w: %s: W4A8 FP8 stage has no _amax", ErrMissingAmax, m.Name)
		}
	}
	if m.Format == "fp8" && m.IQ != nil && !m.IQ.Enabled && m.IAmax != "" {
		// ModelOpt's FP8 branch exports input_scale from any input amax and crashes on
		// a disabled quantizer's (get_activation_scaling_factor returns None).
		return nil, fmt.Errorf("%w: %s: disabled FP8 input quantizer with an _amax", ErrUnsupported, m.Name)
	}
	if hasInputScale(m) {
		out["input_scale"] = scalar
	}
	return out, nil
}

// hasInputScale: the FP8 branch exports input_scale whenever the input quantizer has
// an amax (even disabled); the others need it enabled. MX and per-token input
// quantizers have no amax buffer, hence no input_scale.
func hasInputScale(m *Module) bool {
	if m.IQ == nil || m.IAmax == "" || quant.IsMXFormat(m.IQ) {
		return false
	}
	if m.Format == "fp8" {
		return true
	}
	return m.IQ.Enabled
}

func squeezed(s []int64) []int64 {
	var out []int64
	for _, d := range s {
		if d != 1 {
			out = append(out, d)
		}
	}
	if out == nil {
		out = []int64{}
	}
	return out
}

func ceilDiv(a, b int64) int64 { return (a + b - 1) / b }

// quantModule is m as quant sees it, with the buffers currently in ts. While
// planning, tensors are absent and only presence matters (pre_quant_scale).
func (m *Module) quantModule(ts *tensorSet) *quant.Module {
	qm := &quant.Module{Name: m.ID(), WeightQuantizer: m.WQ, InputQuantizer: m.IQ, BMMExpert: m.BMM,
		FusedWithPrequant: m.Fused, SVDQuant: m.WQ != nil && strings.Contains(m.WQ.Class, "SVDQuant")}
	opt := func(name string) *quant.Tensor {
		if name == "" {
			return nil
		}
		if ts == nil || ts.planning() {
			return &quant.Tensor{}
		}
		t, ok := ts.data[name]
		if !ok {
			return nil
		}
		return &t
	}
	if ts != nil && !ts.planning() {
		qm.Weight = ts.data[m.Weight]
	}
	if m.WQ != nil && len(m.WQ.Sequential) > 0 {
		qm.WeightAmaxSeq = []*quant.Tensor{opt(m.WAmax), opt(m.WAmax1)}
	} else {
		qm.WeightAmax = opt(m.WAmax)
	}
	qm.InputAmax = opt(m.IAmax)
	qm.PreQuantScale = opt(m.PQS)
	return qm
}

// exportModule is _export_quantized_weight (§7.3) through quant.ExportQuantizedWeight:
// it replaces m.Weight by the quantized weight and adds weight_scale, weight_scale_2
// and input_scale as the plan says.
func exportModule(ts *tensorSet, m *Module, dtype quant.DType, mode quant.DivMode) error {
	hdrs, err := exportHeaders(m, ts.hdr[m.Weight])
	if err != nil {
		return err
	}
	if ts.planning() {
		for k, h := range hdrs {
			name := m.key(k)
			if k == "weight" {
				name = m.Weight
			}
			ts.setHeader(name, h.DType, h.Shape)
		}
		return nil
	}
	if ok, err := exportLater(ts, m, dtype, mode); ok || err != nil {
		if err != nil {
			return fmt.Errorf("module %s: %w", m.Name, err)
		}
		return nil
	}
	ex, err := quant.ExportQuantizedWeight(m.quantModule(ts), dtype, mode)
	if errors.Is(err, quant.ErrNotImplemented) {
		ex, err = exportFloatAdapter(ts, m, dtype, mode)
	}
	if err != nil {
		return nameOnce(m.Name, err) // quant's errors name the module already
	}
	if ex == nil {
		return fmt.Errorf("%w: module %s: format None at export, %q when planned", ErrPlanMismatch, m.Name, m.Format)
	}
	ts.set(m.Weight, ex.Weight)
	for k, t := range map[string]*quant.Tensor{"weight_scale": ex.WeightScale, "weight_scale_2": ex.WeightScale2, "input_scale": ex.InputScale} {
		if t != nil {
			ts.set(m.key(k), *t)
		}
	}
	return nil
}

// exportLater is exportModule for the common dense formats (NVFP4 with dynamic
// blocks, W4A16 NVFP4, per-tensor FP8 of a 2-D float weight already in the export
// dtype): the scales that depend only on amax buffers are computed now, by
// quant.ExportQuantizedWeight itself on a one-row stand-in weight (so every rule
// stays quant's), and the quantized weight (with NVFP4's block scales) becomes a
// rowJob that writes into the output layer with quant's row kernels, which are
// what quant's whole-tensor functions run on all rows. It reports false when m is
// not such a module, and exportModule takes the general path.
func exportLater(ts *tensorSet, m *Module, dtype quant.DType, mode quant.DivMode) (bool, error) {
	if m.BMM || m.WQ == nil || len(m.WQ.Sequential) > 0 || m.WQ.Class == "NVFP4StaticQuantizer" || strings.Contains(m.WQ.Class, "SVDQuant") {
		return false, nil
	}
	switch m.Format {
	case "nvfp4", "w4a16_nvfp4", "fp8":
	default:
		return false, nil
	}
	w, ok := ts.data[m.Weight]
	if !ok || len(w.Shape) != 2 || w.DType != dtype || w.Check() != nil {
		return false, nil
	}
	switch w.DType {
	case quant.BF16, quant.F16, quant.F32:
	default:
		return false, nil
	}
	rows, cols := int(w.Shape[0]), int(w.Shape[1])
	esize := int64(w.DType.Bits() / 8)
	if rows == 0 || cols == 0 {
		return false, nil
	}
	qm := m.quantModule(ts)
	if qm.WeightAmax == nil || qm.GlobalAmax != nil {
		return false, nil
	}
	qm.Weight = quant.Tensor{DType: w.DType, Shape: []int64{1, int64(cols)}, Data: make([]byte, int64(cols)*esize)}
	ex, err := quant.ExportQuantizedWeight(qm, dtype, mode)
	if err != nil || ex == nil {
		return false, nil // the general path reports it, on the real weight
	}
	job := &rowJob{rows: rows, rowBytes: int64(cols) * esize}
	switch m.Format {
	case "fp8":
		if ex.WeightScale == nil {
			return false, nil
		}
		d, err := quant.NewFP8PerTensor(w, *ex.WeightScale, mode)
		if err != nil {
			return false, nil
		}
		job.outs, job.outBytes = []string{m.Weight}, []int64{int64(rows) * int64(cols)}
		job.fill = func(dst [][]byte, r0, r1 int) error {
			return filled(d.AppendRows(dst[0][r0*cols:r0*cols:r1*cols], r0, r1), dst[0][r0*cols:r1*cols])
		}
		ts.setLater(m.Weight, quant.F8E4M3, []int64{int64(rows), int64(cols)}, job, 0)
		ts.set(m.key("weight_scale"), *ex.WeightScale)
	default:
		b := m.Block
		if ex.WeightScale2 == nil || ex.WeightScale2.Numel() != 1 || b <= 0 || b%2 != 0 || cols%b != 0 {
			return false, nil
		}
		s2, err := quant.Float32s(*ex.WeightScale2)
		if err != nil {
			return false, nil
		}
		n := quant.NVFP4{Block: b, Scale2: s2}
		half, nb := cols/2, cols/b
		job.outs = []string{m.Weight, m.key("weight_scale")}
		job.outBytes = []int64{int64(rows) * int64(half), int64(rows) * int64(nb)}
		job.fill = func(dst [][]byte, r0, r1 int) error {
			p, sc, err := n.AppendQuantizeRows(dst[0][r0*half:r0*half:r1*half], dst[1][r0*nb:r0*nb:r1*nb], w, r0, r1)
			if err != nil {
				return err
			}
			return errors.Join(filled(p, dst[0][r0*half:r1*half]), filled(sc, dst[1][r0*nb:r1*nb]))
		}
		ts.setLater(m.Weight, quant.U8, []int64{int64(rows), int64(half)}, job, 0)
		ts.setLater(m.key("weight_scale"), quant.F8E4M3, []int64{int64(rows), int64(nb)}, job, 1)
		ts.set(m.key("weight_scale_2"), *ex.WeightScale2)
	}
	if ex.InputScale != nil {
		ts.set(m.key("input_scale"), *ex.InputScale)
	}
	return true, nil
}

// filled checks that a kernel appended exactly into want (its capacity was the
// row range's place in the output buffer) rather than into new memory.
func filled(got, want []byte) error {
	if len(got) != len(want) || (len(got) > 0 && &got[0] != &want[0]) {
		return fmt.Errorf("%w: a row kernel wrote %d bytes elsewhere, %d expected in place", ErrPlanMismatch, len(got), len(want))
	}
	return nil
}
