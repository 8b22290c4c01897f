package stages

import (
	"fmt"
	"slices"
	"strings"

	quantstream "github.com/quantstream/quantstream"
	"github.com/quantstream/quantstream/quant"
)

// outputs of one exported module, as headers: the quantized weight and its scales.
func exportHeaders(m *Module, w quantstream.TensorInfo) (map[string]quantstream.TensorInfo, error) {
	if m.BMM {
		return bmmExportHeaders(m, w)
	}
	out := map[string]quantstream.TensorInfo{}
	if len(w.Shape) != 2 {
		return nil, fmt.Errorf("%w: %s: %d-D weight %v (only 2-D linears are supported)", ErrUnsupported, m.Weight, len(w.Shape), w.Shape)
	}
	O, I := w.Shape[0], w.Shape[1]
	scalar := quantstream.TensorInfo{DType: quant.F32, Shape: []int64{}}
	needBlock := func(b int64) error {
		if b <= 0 || I%b != 0 {
			return fmt.Errorf("%w: %s: input size %d not divisible by block %d", ErrShape, m.Weight, I, b)
		}
		return nil
	}
	B := int64(m.Block)
	switch m.Format {
	case "fp8":
		out["weight"] = header(quant.F8E4M3, []int64{O, I})
		out["weight_scale"] = scalar
	case "fp8_pc_pt":
		out["weight"] = header(quant.F8E4M3, []int64{O, I})
		out["weight_scale"] = header(quant.F32, squeezed([]int64{O}))
	case "fp8_pb_wo":
		b0, b1 := int64(m.WQ.BlockSizes.Dims[-2]), B
		if b0 <= 0 || b1 <= 0 {
			return nil, fmt.Errorf("%w: %s: FP8 block sizes %v", ErrUnsupported, m.Weight, m.WQ.BlockSizes.Dims)
		}
		out["weight"] = header(quant.F8E4M3, []int64{O, I})
		scale := []int64{ceilDiv(O, b0), 1, ceilDiv(I, b1), 1}
		if quant.Numel(scale) == 1 {
			// The scale keeps the amax's shape, and calibration stores a one-block
			// amax as a 0-dim tensor.
			scale = []int64{}
		}
		out["weight_scale"] = header(quant.F32, scale)
	case "int8_sq", "int8_wo":
		out["weight"] = header(quant.I8, []int64{O, I})
		out["weight_scale"] = header(quant.F32, squeezed([]int64{O}))
	case "int4_awq", "w4a8_awq":
		if err := needBlock(B); err != nil {
			return nil, err
		}
		if O%2 != 0 {
			return nil, fmt.Errorf("%w: %s: INT4 packing needs an even output size, got %d", ErrShape, m.Weight, O)
		}
		out["weight"] = header(quant.U8, []int64{O / 2, I})
		out["weight_scale"] = header(quant.F32, []int64{O, I / B})
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
		out["weight"] = header(quant.U8, []int64{O, I / 2})
		out["weight_scale"] = header(quant.F8E4M3, []int64{O, I / B})
		out["weight_scale_2"] = scalar
	case "mxfp8":
		if err := needBlock(B); err != nil {
			return nil, err
		}
		out["weight"] = header(quant.F8E4M3, []int64{O, I})
		out["weight_scale"] = header(quant.U8, []int64{O, I / B})
	case "mxfp4", "w4a8_mxfp4_fp8":
		if err := needBlock(B); err != nil {
			return nil, err
		}
		out["weight"] = header(quant.U8, []int64{O, I / 2})
		out["weight_scale"] = header(quant.U8, []int64{O, I / B})
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
	if m.GAmax != "" {
		qm.GlobalAmax = opt(m.GAmax)
	}
	return qm
}

// staticNVFP4Classes are the classes of a static NVFP4 weight quantizer:
// ModelOpt's NVFP4StaticQuantizer is an alias of StaticBlockScaleQuantizer, and a
// saved state may name either.
var staticNVFP4Classes = map[string]bool{"NVFP4StaticQuantizer": true, "StaticBlockScaleQuantizer": true}

// checkStaticNVFP4 checks a static NVFP4 weight quantizer (one with a _global_amax,
// ModelOpt's NVFP4QTensor._is_static_quantizer) from headers: its per-block _amax
// must view as (*weight.shape[:-1], in/block) of the weight it quantizes (the
// transposed weight for batched-matmul experts), as get_weights_scaling_factor_from_quantizer
// views it, and the global amax must be one value. A quantizer of a static NVFP4
// class without a _global_amax is refused: ModelOpt would export its per-block
// amax through the dynamic path as if it were one per tensor.
func checkStaticNVFP4(ts *tensorSet, m *Module) error {
	if !nvfp4Family(m.Format) || m.WQ == nil || len(m.WQ.Sequential) > 0 {
		return nil
	}
	if m.GAmax == "" {
		if staticNVFP4Classes[m.WQ.Class] {
			return fmt.Errorf("%w: %s: %s weight quantizer without a _global_amax (ModelOpt would take its per-block amax for a per-tensor one)", ErrMissingAmax, m.ID(), m.WQ.Class)
		}
		return nil
	}
	if g := ts.hdr[m.GAmax]; numel(g.Shape) != 1 {
		return fmt.Errorf("%w: %s has shape %v, want one value", ErrShape, m.GAmax, g.Shape)
	}
	if m.WAmax == "" {
		return fmt.Errorf("%w: %s: static NVFP4 weight quantizer without a per-block _amax", ErrMissingAmax, m.ID())
	}
	w := ts.hdr[m.Weight].Shape
	if m.BMM && len(w) == 3 {
		w = []int64{w[0], w[2], w[1]}
	}
	if len(w) == 0 || m.Block <= 0 {
		return fmt.Errorf("%w: %s: static NVFP4 weight %v with block %d", ErrShape, m.ID(), w, m.Block)
	}
	want := numel(w[:len(w)-1]) * ceilDiv(w[len(w)-1], int64(m.Block))
	if got := numel(ts.hdr[m.WAmax].Shape); got != want {
		return fmt.Errorf("%w: %s has %d block amaxes; weight %s %v in blocks of %d needs %d", ErrShape, m.WAmax, got, m.Weight, ts.hdr[m.Weight].Shape, m.Block, want)
	}
	return nil
}

// exportModule is unified_export_hf._export_quantized_weight through quant.ExportQuantizedWeight:
// it replaces m.Weight by the quantized weight and adds weight_scale, weight_scale_2
// and input_scale as the plan says.
func exportModule(ts *tensorSet, m *Module, dtype quant.DType, mode quant.DivMode) error {
	hdrs, err := exportHeaders(m, ts.hdr[m.Weight])
	if err != nil {
		return err
	}
	if err := checkBMMPerChannel(ts, m); err != nil {
		return err
	}
	if err := checkStaticNVFP4(ts, m); err != nil {
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
	noteZeroInputAmax(ts, m)
	if _, coded := ts.fp8[m.Weight]; coded {
		done, err := exportFP8Coded(ts, m, hdrs, dtype, mode)
		if err != nil || done {
			return err
		}
	}
	if exportLater(ts, m, hdrs, dtype, mode) {
		return nil
	}
	ex, err := quant.ExportQuantizedWeight(m.quantModule(ts), dtype, mode)
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

// noteZeroInputAmax notes an input amax with a zero element that becomes an
// input_scale: ModelOpt's export_amax exports such an amax as maxbound (an
// input_scale of 1.0 for FP8 and INT8 activations), and so does quant.ExportAmax.
// Unlike a NaN amax (refused: checkBuffers) a zero one is a range, if a
// suspicious one (inputs all zero during calibration), so the export follows
// ModelOpt and says so rather than refusing what ModelOpt exports.
func noteZeroInputAmax(ts *tensorSet, m *Module) {
	if !hasInputScale(m) || m.IQ.BlockSizes.Dynamic() {
		return // no input_scale, or one that asserts amax > 0 (checkZeroAmax)
	}
	t, ok := ts.data[m.IAmax]
	if !ok {
		return
	}
	v, err := quant.Float32s(t)
	if err != nil || !slices.Contains(v, 0) {
		return
	}
	ts.notes = append(ts.notes, fmt.Sprintf("%s is 0: %s's input_scale is exported from maxbound instead (1.0 for FP8 and INT8 inputs), as ModelOpt's export_amax does; if that module's inputs were not all zero during calibration, recalibrate", m.IAmax, m.Name))
}

// rowPath is false only in tests that compare exportLater with the general path.
var rowPath = true

// exportLater is exportModule for a weight already in the export dtype, in every
// format quant.PrepareRowExport splits by rows (all but static NVFP4, SVDQuant,
// per-channel FP8 of batched-matmul experts): the scales that depend only on amax buffers are set now, and
// the quantized weight (with the block scales of the formats that compute them from
// the weight) becomes a rowJob that writes into the output layer. The rules and
// kernels are quant's; this only places the outputs. It reports false when m is
// not such a module, or when quant's outputs are not the planned ones, and
// exportModule takes the general path.
func exportLater(ts *tensorSet, m *Module, hdrs map[string]quantstream.TensorInfo, dtype quant.DType, mode quant.DivMode) bool {
	if !rowPath || m.WQ == nil || m.GAmax != "" {
		return false
	}
	if _, ok := ts.data[m.Weight]; !ok {
		return false
	}
	ex, re, ok := quant.PrepareRowExport(m.quantModule(ts), dtype, mode)
	return ok && placeRowExport(ts, m, hdrs, ex, re)
}

// placeRowExport records quant's row export of m (ex, re) in ts: the scales that
// depend only on amax buffers now, the quantized weight (and the block scales
// computed from it) as a rowJob. It reports false, changing nothing, when quant's
// outputs are not the planned ones.
func placeRowExport(ts *tensorSet, m *Module, hdrs map[string]quantstream.TensorInfo, ex *quant.Exported, re *quant.RowExport) bool {
	if len(re.Outs) == 0 || len(re.Outs) > 2 {
		return false
	}
	outs := []string{m.Weight, m.key("weight_scale")}[:len(re.Outs)]
	keys := []string{"weight", "weight_scale"}
	for k, o := range re.Outs {
		if !sameHeader(hdrs[keys[k]], o.DType, o.Shape) {
			return false
		}
	}
	set := map[string]*quant.Tensor{"weight_scale": ex.WeightScale, "weight_scale_2": ex.WeightScale2, "input_scale": ex.InputScale}
	for k, t := range set {
		if t != nil && !sameHeader(hdrs[k], t.DType, t.Shape) {
			return false
		}
	}
	job := &rowJob{rows: re.Units, rowBytes: re.UnitBytes, align: re.Align, outs: outs, fill: re.Fill}
	for k, o := range re.Outs {
		n, _ := o.DType.ByteLen(quant.Numel(o.Shape))
		job.outBytes = append(job.outBytes, n)
		ts.setLater(outs[k], o.DType, o.Shape, job, k)
	}
	for k, t := range set {
		if t != nil {
			ts.set(m.key(k), *t)
		}
	}
	return true
}

// sameHeader reports whether the plan's header h is dt with shape.
func sameHeader(h quantstream.TensorInfo, dt quant.DType, shape []int64) bool {
	return h.DType == dt && slices.Equal(h.Shape, shape)
}
