package verify

import (
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/quantstream/quantstream"
	"github.com/quantstream/quantstream/quant"
	"github.com/quantstream/quantstream/stages"
)

// The tensors a module owns beside its weight, by role. These names are part of the
// ModelOpt checkpoint format: "<module>.<role>" for a linear, "<weight>_<role>" for a
// batched-matmul experts weight ("mlp.experts.gate_up_proj_weight_scale").
const (
	roleScale    = "weight_scale"
	roleScale2   = "weight_scale_2"
	roleInput    = "input_scale"
	rolePreQuant = "pre_quant_scale"
	roleBias     = "bias"
)

// roles in the order a module's tensors are matched: longest suffix first, so that
// "weight_scale_2" is not taken for "weight_scale".
var roles = []string{roleScale2, roleScale, roleInput, rolePreQuant}

// KV-cache tensors live on the attention's k_proj / v_proj (postprocess_state_dict).
var kvSuffixes = []string{".k_proj.k_scale", ".v_proj.v_scale", ".k_proj.k_bias", ".v_proj.v_bias"}

// bmmAttrs are the batched-matmul experts weights (Llama-4, GPT-OSS): a 3-D tensor
// "<x>.experts.<attr>" [E, in, out] that keeps its fused layout in the export.
var bmmAttrs = []string{"gate_up_proj", "down_proj", "up_proj"}

// module is one linear-like weight of the checkpoint and the tensors it owns.
type module struct {
	Name   string // the module an engine matches exclude_modules against
	Weight string // the weight tensor ("<Name>.weight", or the BMM tensor)
	BMM    bool
	Expert int // expert index of a per-expert module, else -1

	Format string // ModelOpt format, "" when unquantized
	Algo   string // the quant_algo it was assigned
	Group  int    // block size of its format (0 when the format has none)
	// Logical is the weight's shape before packing ([O, I], or [E, in, out] for BMM).
	Logical []int64
	// tensors maps a role to the tensor name present in the checkpoint.
	tensors map[string]string
	// bad is set when the layout check failed: data checks and --against skip it.
	bad bool
}

// key is the name a role tensor of m has.
func (m *module) key(role string) string {
	if m.BMM {
		return m.Weight + "_" + role
	}
	return m.Name + "." + role
}

// ID names the module in messages and reports: the weight tensor for BMM experts
// (two weights of one module), the module otherwise.
func (m *module) ID() string {
	if m.BMM {
		return m.Weight
	}
	return m.Name
}

var expertRe = regexp.MustCompile(`(?:^|\.)experts\.(\d+)\.[^.]+$`)

// discover finds the modules of c: every "<m>.weight" and every batched-matmul experts
// weight, with the role tensors beside them. It also returns the KV-cache tensors,
// and adds an error for each tensor that belongs to no module (a scale without its
// weight, a calibration buffer left in the export).
func discover(c *checkpoint, r *Report) (mods []*module, kv []string) {
	byWeight := map[string]*module{}
	claimed := map[string]bool{}
	for _, n := range c.names {
		t := c.tensors[n]
		var m *module
		switch {
		case strings.HasSuffix(n, ".weight"):
			m = &module{Name: strings.TrimSuffix(n, ".weight"), Weight: n, Expert: -1}
		case isBMM(n, t.Shape):
			m = &module{Name: n[:strings.LastIndexByte(n, '.')], Weight: n, BMM: true, Expert: -1}
		default:
			continue
		}
		if e := expertRe.FindStringSubmatch(m.Name); e != nil && !m.BMM {
			m.Expert, _ = strconv.Atoi(e[1])
		}
		m.tensors = map[string]string{}
		claimed[n] = true
		for _, role := range append(slices.Clone(roles), roleBias) {
			if _, ok := c.tensors[m.key(role)]; ok {
				m.tensors[role] = m.key(role)
				claimed[m.key(role)] = true
			}
		}
		byWeight[n] = m
		mods = append(mods, m)
	}
	for _, n := range c.names {
		if claimed[n] {
			continue
		}
		if kvTensor(n) {
			kv = append(kv, n)
			continue
		}
		if strings.Contains(n, "_quantizer") || strings.HasSuffix(n, "._amax") {
			r.add(Finding{Severity: Error, Check: CheckLayout, Tensor: n, File: c.tensors[n].base(),
				Message: "a calibration buffer: ModelOpt's export turns quantizer state into scales and drops the buffers, and engines have no parameter for it"})
			continue
		}
		for _, role := range roles {
			if strings.HasSuffix(n, "."+role) || strings.HasSuffix(n, "_"+role) {
				r.add(Finding{Severity: Error, Check: CheckLayout, Tensor: n, File: c.tensors[n].base(),
					Message: fmt.Sprintf("a %s without the weight it scales", role)})
				break
			}
		}
	}
	return mods, kv
}

// isBMM reports whether n is a batched-matmul experts weight: "<x>.experts.<attr>",
// 3-D.
func isBMM(n string, shape []int64) bool {
	i := strings.LastIndexByte(n, '.')
	if i < 0 || len(shape) != 3 || !slices.Contains(bmmAttrs, n[i+1:]) {
		return false
	}
	return strings.HasSuffix(n[:i], "experts")
}

func kvTensor(n string) bool {
	for _, s := range kvSuffixes {
		if strings.HasSuffix(n, s) {
			return true
		}
	}
	return false
}

// quantizedDType reports whether a weight dtype can only be a quantized weight.
func quantizedDType(d quant.DType) bool {
	switch d {
	case quant.F8E4M3, quant.F8E5M2, quant.U8, quant.I8, quant.F4, quant.I32:
		return true
	}
	return false
}

func floatDType(d quant.DType) bool { return d == quant.BF16 || d == quant.F16 || d == quant.F32 }

// roleSpec is what a format expects of one role tensor.
type roleSpec struct {
	role     string
	dtypes   []quant.DType // any of these
	shape    []int64       // nil: any shape (checked elsewhere)
	optional bool
	scalar   bool // a per-tensor scale: ModelOpt writes it 0-dim
}

var (
	f32Only   = []quant.DType{quant.F32}
	anyFloat  = []quant.DType{quant.F32, quant.BF16, quant.F16}
	e4m3Only  = []quant.DType{quant.F8E4M3}
	e8m0AsU8  = []quant.DType{quant.U8}
	scalarF32 = func(role string) roleSpec {
		return roleSpec{role: role, dtypes: f32Only, shape: []int64{}, scalar: true}
	}
	squeezeOne = func(n int64) []int64 {
		if n == 1 {
			return []int64{}
		}
		return []int64{n}
	}
)

// defaultGroup is the block size a format's export uses when the config does not say
// (ModelOpt's presets; MX formats are 32 by definition).
func defaultGroup(format string) int {
	switch {
	case strings.Contains(format, "nvfp4"):
		return 16
	case format == "mxfp4", format == "w4a8_mxfp4_fp8", format == "mxfp8":
		return 32
	case format == "int4_awq", format == "w4a8_awq", format == "fp8_pb_wo":
		return 128
	}
	return 0
}

// expectation is the layout a format implies for one module whose weight is w: the
// weight's dtype, its logical (unpacked) shape, and the role tensors.
type expectation struct {
	weight  quant.DType
	logical []int64
	roles   []roleSpec
}

// expect returns the ModelOpt export layout of format for a stored weight w, or a
// message saying why w cannot be a weight of that format. group is the block size
// (0: unknown, taken from the weight_scale's shape when it is well formed).
// The layouts are those stages' export writes (export.go, bmm.go) and the golden
// sets pin; TestLayoutsMatchExport checks them against the planner.
func expect(format string, bmm bool, w quantstream.TensorInfo, scale *quantstream.TensorInfo, group int) (expectation, string) {
	var ex expectation
	if bmm {
		return expectBMM(format, w, scale, group)
	}
	if len(w.Shape) != 2 {
		return ex, fmt.Sprintf("a %d-D weight %v: ModelOpt exports quantized linears as 2-D [out, in] (experts per expert, or the batched-matmul [E, …] tensors)", len(w.Shape), w.Shape)
	}
	rows, cols := w.Shape[0], w.Shape[1]
	inGroup := func(in int64) (int64, string) { // block size along the input dim
		g := int64(group)
		if g == 0 && scale != nil && len(scale.Shape) == 2 && scale.Shape[1] > 0 && in%scale.Shape[1] == 0 {
			g = in / scale.Shape[1]
		}
		if g == 0 {
			g = int64(defaultGroup(format))
		}
		if g <= 0 || in%g != 0 {
			return 0, fmt.Sprintf("input size %d is not a whole number of %d-element blocks", in, g)
		}
		return g, ""
	}
	input := scalarF32(roleInput)
	pre := func(in int64) roleSpec {
		return roleSpec{role: rolePreQuant, dtypes: anyFloat, shape: []int64{in}, optional: true}
	}
	switch format {
	case "fp8":
		ex = expectation{quant.F8E4M3, []int64{rows, cols}, []roleSpec{scalarF32(roleScale), input}}
	case "fp8_pc_pt":
		ex = expectation{quant.F8E4M3, []int64{rows, cols}, []roleSpec{{role: roleScale, dtypes: f32Only, shape: squeezeOne(rows)}}}
	case "fp8_pb_wo":
		b := int64(group)
		if b == 0 {
			b = int64(fp8BlockOf(rows, cols, scale))
		}
		grid := []int64{ceilDiv(rows, b), 1, ceilDiv(cols, b), 1}
		if quant.Numel(grid) == 1 {
			grid = []int64{} // a one-block amax is calibrated (and exported) 0-dim
		}
		ex = expectation{quant.F8E4M3, []int64{rows, cols}, []roleSpec{{role: roleScale, dtypes: anyFloat, shape: grid}}}
	case "int8_wo", "int8_sq":
		ex = expectation{quant.I8, []int64{rows, cols}, []roleSpec{{role: roleScale, dtypes: f32Only, shape: squeezeOne(rows)}}}
		if format == "int8_sq" {
			ex.roles = append(ex.roles, input)
		}
	case "int4_awq", "w4a8_awq":
		out := 2 * rows // two output rows per byte
		g, msg := inGroup(cols)
		if msg != "" {
			return ex, msg
		}
		ex = expectation{quant.U8, []int64{out, cols}, []roleSpec{{role: roleScale, dtypes: f32Only, shape: []int64{out, cols / g}}, pre(cols)}}
		if format == "w4a8_awq" {
			ex.roles = append(ex.roles, scalarF32(roleScale2), input)
		}
	case "nvfp4", "nvfp4_awq", "nvfp4_svdquant", "w4a8_nvfp4_fp8", "w4a16_nvfp4":
		in := 2 * cols // two input elements per byte
		g, msg := inGroup(in)
		if msg != "" {
			return ex, msg
		}
		ex = expectation{quant.U8, []int64{rows, in}, []roleSpec{{role: roleScale, dtypes: e4m3Only, shape: []int64{rows, in / g}}, scalarF32(roleScale2)}}
		if format != "w4a16_nvfp4" {
			ex.roles = append(ex.roles, input)
		}
		if format == "nvfp4_awq" || format == "nvfp4_svdquant" {
			ex.roles = append(ex.roles, pre(in))
		}
	case "mxfp8":
		ex = expectation{quant.F8E4M3, []int64{rows, cols}, []roleSpec{{role: roleScale, dtypes: e8m0AsU8, shape: []int64{rows, ceilDiv(cols, 32)}}}}
	case "mxfp4", "w4a8_mxfp4_fp8":
		in := 2 * cols
		g, msg := inGroup(in)
		if msg != "" {
			return ex, msg
		}
		ex = expectation{quant.U8, []int64{rows, in}, []roleSpec{{role: roleScale, dtypes: e8m0AsU8, shape: []int64{rows, in / g}}}}
		if format == "w4a8_mxfp4_fp8" {
			ex.roles = append(ex.roles, input)
		}
	default:
		return ex, fmt.Sprintf("verify knows no export layout for format %q", format)
	}
	return ex, ""
}

// expectBMM is expect for a batched-matmul experts weight, logically [E, A, B] with
// the input dim A first. NVFP4 quantizes the transposed weight and transposes back
// (packed along A); MXFP4 is packed along B; per-tensor FP8 keeps the shape;
// FP8_PER_CHANNEL_PER_TOKEN's axis 0 is the expert axis (one scale per expert).
func expectBMM(format string, w quantstream.TensorInfo, scale *quantstream.TensorInfo, group int) (expectation, string) {
	var ex expectation
	E, A, B := w.Shape[0], w.Shape[1], w.Shape[2]
	g := int64(group)
	switch format {
	case "fp8":
		ex = expectation{quant.F8E4M3, []int64{E, A, B}, []roleSpec{scalarF32(roleScale), scalarF32(roleInput)}}
	case "fp8_pc_pt":
		ex = expectation{quant.F8E4M3, []int64{E, A, B}, []roleSpec{{role: roleScale, dtypes: f32Only, shape: squeezeOne(E)}}}
	case "nvfp4", "nvfp4_awq", "w4a16_nvfp4":
		in := 2 * A
		if g == 0 && scale != nil && len(scale.Shape) == 3 && scale.Shape[1] > 0 && in%scale.Shape[1] == 0 {
			g = in / scale.Shape[1]
		}
		if g == 0 {
			g = int64(defaultGroup(format))
		}
		if in%g != 0 {
			return ex, fmt.Sprintf("input size %d is not a whole number of %d-element blocks", in, g)
		}
		ex = expectation{quant.U8, []int64{E, in, B}, []roleSpec{{role: roleScale, dtypes: e4m3Only, shape: []int64{E, in / g, B}}, scalarF32(roleScale2)}}
		if format != "w4a16_nvfp4" {
			ex.roles = append(ex.roles, scalarF32(roleInput))
		}
	case "mxfp4", "w4a8_mxfp4_fp8":
		out := 2 * B
		if g == 0 {
			g = 32
		}
		if out%g != 0 {
			return ex, fmt.Sprintf("last dim %d is not a whole number of %d-element blocks", out, g)
		}
		ex = expectation{quant.U8, []int64{E, A, out}, []roleSpec{{role: roleScale, dtypes: e8m0AsU8, shape: []int64{E, A, out / g}}}}
		if format == "w4a8_mxfp4_fp8" {
			ex.roles = append(ex.roles, scalarF32(roleInput))
		}
	default:
		return ex, fmt.Sprintf("verify knows no export layout for batched-matmul experts in format %q (stages does not export them either)", format)
	}
	return ex, ""
}

// fp8BlockOf infers the square block of an FP8 2-D block scale [O/b, 1, I/b, 1]:
// ModelOpt's preset (128) when it fits, else the power of two that does; 128 when
// nothing fits (the shape check then reports the scale).
func fp8BlockOf(rows, cols int64, scale *quantstream.TensorInfo) int {
	if scale == nil || len(scale.Shape) != 4 {
		return 128
	}
	fits := func(b int64) bool {
		return scale.Shape[0] == ceilDiv(rows, b) && scale.Shape[2] == ceilDiv(cols, b) && scale.Shape[1] == 1 && scale.Shape[3] == 1
	}
	if fits(128) {
		return 128
	}
	for b := int64(1); b <= 1<<16; b *= 2 {
		if fits(b) {
			return int(b)
		}
	}
	return 128
}

func ceilDiv(a, b int64) int64 { return (a + b - 1) / b }

// layerOf is the decoder layer prefix of a name ("model.layers.3."), "" outside the
// decoder, by stages' rule.
func layerOf(name string) string {
	_, p := stages.LayerOf(name)
	return p
}
