package stages

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow/memory"

	quantstream "github.com/quantstream/quantstream"
	"github.com/quantstream/quantstream/quant"
)

// processLayer runs layer idx of sd through a Stage of p and returns its tensors.
func processLayer(t *testing.T, p *Plan, sd map[string]quant.Tensor, idx int) map[string]quant.Tensor {
	t.Helper()
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	lp := p.Layer(idx)
	in := make([]quantstream.Tensor, len(lp.Inputs))
	for i, h := range lp.Inputs {
		in[i] = quantstream.Tensor{Name: h.Name, Tensor: sd[h.Name]}
	}
	l, err := quantstream.NewLayer(mem, lp.Index, lp.Prefix, in)
	if err != nil {
		t.Fatal(err)
	}
	out, err := NewStage(p, mem).Process(t.Context(), l)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Release()
	m := map[string]quant.Tensor{}
	for _, tt := range out.Tensors() {
		m[tt.Name] = quant.Tensor{DType: tt.DType, Shape: tt.Shape, Data: slices.Clone(tt.Data)}
	}
	return m
}

func scalarOf(t *testing.T, tt quant.Tensor) float32 {
	t.Helper()
	v, err := quant.Scalar(tt)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

const qwenMoEConfig = `{"architectures": ["Qwen3MoeForCausalLM"], "model_type": "qwen3_moe", "dtype": "bfloat16"}`

// TestFusedExperts: transformers-5 fused experts become per-expert FP8 linears; an
// expert whose gate_up amax is zero gets max|gate_up[e]| shared by gate and up, a
// missing down amax becomes max|down[e]|, the router stays BF16 and is excluded.
func TestFusedExperts(t *testing.T) {
	const E, F, H = 2, 2, 4
	gu := make([]float32, E*2*F*H)
	for i := range gu {
		gu[i] = float32(i%7) - 3 // |max| 3 in both experts
	}
	gu[E*2*F*H-1] = 5 // expert 1, up half
	dn := make([]float32, E*H*F)
	for i := range dn {
		dn[i] = float32(i) / 8
	}
	p := "model.layers.0.mlp."
	sd := map[string]quant.Tensor{
		p + "experts.gate_up_proj":                           bf16Tensor([]int64{E, 2 * F, H}, gu),
		p + "experts.down_proj":                              bf16Tensor([]int64{E, H, F}, dn),
		p + "gate.weight":                                    bf16Tensor([]int64{E, H}, make([]float32, E*H)),
		p + "experts.gate_up_proj_weight_quantizers.0._amax": bf16Tensor([]int64{}, []float32{4}),
		p + "experts.gate_up_proj_weight_quantizers.1._amax": bf16Tensor([]int64{}, []float32{0}),
		p + "experts.down_proj_weight_quantizers.0._amax":    bf16Tensor([]int64{}, []float32{2}),
		p + "experts.gate_up_proj_input_quantizer._amax":     bf16Tensor([]int64{}, []float32{8}),
	}
	qs := table{
		p + "experts.gate_up_proj_weight_quantizers.0": fp8Q(true), p + "experts.gate_up_proj_weight_quantizers.1": fp8Q(true),
		p + "experts.down_proj_weight_quantizers.0": fp8Q(true), p + "experts.down_proj_weight_quantizers.1": fp8Q(true),
		p + "experts.gate_up_proj_input_quantizer": fp8Q(true), p + "experts.down_proj_input_quantizer": fp8Q(true),
	}
	plan, err := NewPlan(infosOf(sd), []byte(qwenMoEConfig), qs, Options{})
	if err != nil {
		t.Fatal(err)
	}
	out := processLayer(t, plan, sd, 0)
	var names []string
	for n := range out {
		names = append(names, strings.TrimPrefix(n, p))
	}
	slices.Sort(names)
	want := []string{"experts.0.down_proj.weight", "experts.0.down_proj.weight_scale",
		"experts.0.gate_proj.input_scale", "experts.0.gate_proj.weight", "experts.0.gate_proj.weight_scale",
		"experts.0.up_proj.input_scale", "experts.0.up_proj.weight", "experts.0.up_proj.weight_scale",
		"experts.1.down_proj.weight", "experts.1.down_proj.weight_scale",
		"experts.1.gate_proj.input_scale", "experts.1.gate_proj.weight", "experts.1.gate_proj.weight_scale",
		"experts.1.up_proj.input_scale", "experts.1.up_proj.weight", "experts.1.up_proj.weight_scale",
		"gate.weight"}
	if !slices.Equal(names, want) {
		t.Fatalf("outputs %q\nwant %q", names, want)
	}
	for n, v := range map[string]float32{
		"experts.0.gate_proj.weight_scale": float32(4) / 448,
		"experts.1.gate_proj.weight_scale": float32(5) / 448, // filled from max|gate_up[1]|
		"experts.1.up_proj.weight_scale":   float32(5) / 448,
		"experts.1.down_proj.weight_scale": float32(15.0/8) / 448, // missing: max|down[1]|
		"experts.1.up_proj.input_scale":    float32(8) / 448,
	} {
		if got := scalarOf(t, out[p+n]); got != v {
			t.Errorf("%s = %v, want %v", n, got, v)
		}
	}
	if g := out[p+"gate.weight"]; g.DType != quant.BF16 {
		t.Errorf("router dtype %v", g.DType)
	}
	hq, _ := plan.HFQuantConfigJSON()
	if !strings.Contains(string(hq), `"model.layers.0.mlp.gate"`) {
		t.Errorf("router not excluded:\n%s", hq)
	}
	if got := plan.Modules["fp8"]; len(got) != 6 {
		t.Errorf("fp8 modules %q", got)
	}
}

// TestExpertInputAmaxFill: per-expert (hub-named) experts whose input amax is missing
// get the max of their siblings' (layer_utils.set_expert_quantizer_amax, run by
// unified_export_hf._prepare_moe_inputs), and the plan reports them.
func TestExpertInputAmaxFill(t *testing.T) {
	p := "model.layers.0.mlp.experts."
	sd := map[string]quant.Tensor{}
	qs := table{}
	for e, amax := range []float32{3, 7, 0} {
		for _, proj := range []string{"gate_proj", "up_proj", "down_proj"} {
			n := p + string(rune('0'+e)) + "." + proj
			sd[n+".weight"] = bf16Tensor([]int64{4, 4}, []float32{1, -2, 0.5, 0, 1, 1, 1, 1, 0, 0, 0, 0, 2, 2, 2, 2})
			sd[n+".weight_quantizer._amax"] = bf16Tensor([]int64{}, []float32{2})
			if amax != 0 {
				sd[n+".input_quantizer._amax"] = bf16Tensor([]int64{}, []float32{amax})
			}
			qs[n+".weight_quantizer"] = fp8Q(true)
			qs[n+".input_quantizer"] = fp8Q(true)
		}
	}
	plan, err := NewPlan(infosOf(sd), []byte(qwenMoEConfig), qs, Options{})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{p + "2.down_proj.input_quantizer._amax", p + "2.gate_proj.input_quantizer._amax", p + "2.up_proj.input_quantizer._amax"}
	if got := plan.Layer(0).Filled; !slices.Equal(got, want) {
		t.Fatalf("filled %q, want %q", got, want)
	}
	out := processLayer(t, plan, sd, 0)
	if got := scalarOf(t, out[p+"2.up_proj.input_scale"]); got != float32(7)/448 {
		t.Fatalf("filled input scale %v, want 7/448", got)
	}
}

func TestSplitRows(t *testing.T) {
	for _, tc := range []struct {
		name            string
		a               []float32
		shape           []int64
		row0, rows, src int64
		want            []float32
		wantShape       []int64
	}{
		{"per channel up half", []float32{1, 2, 3, 4}, []int64{4, 1}, 2, 2, 4, []float32{3, 4}, []int64{2, 1}},
		{"flattened blocks", []float32{1, 2, 3, 4, 5, 6, 7, 8}, []int64{8, 1}, 0, 2, 4, []float32{1, 2, 3, 4}, []int64{2, 2}},
		{"2-D block amax", []float32{1, 2, 3, 4}, []int64{2, 1, 2, 1}, 256, 256, 512, []float32{3, 4}, []int64{1, 1, 2, 1}},
		{"indivisible: whole", []float32{1, 2, 3}, []int64{3, 1}, 0, 2, 4, []float32{1, 2, 3}, []int64{3, 1}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, shape := splitRows(tc.a, tc.shape, tc.row0, tc.rows, tc.src)
			if !slices.Equal(got, tc.want) || !slices.Equal(shape, tc.wantShape) {
				t.Fatalf("got %v %v, want %v %v", got, shape, tc.want, tc.wantShape)
			}
		})
	}
}

// TestAWQFusedExpertsRefused: ModelOpt cannot export AWQ formats with fused experts
// (the golden manifest's e2e_failed moe_int4_awq); the plan says so up front.
func TestAWQFusedExpertsRefused(t *testing.T) {
	p := "model.layers.0.mlp."
	sd := map[string]quant.Tensor{
		p + "experts.gate_up_proj": bf16Tensor([]int64{1, 4, 4}, make([]float32, 16)),
		p + "experts.down_proj":    bf16Tensor([]int64{1, 4, 2}, make([]float32, 8)),
	}
	q := int4Q()
	qs := table{p + "experts.gate_up_proj_weight_quantizers.0": q, p + "experts.down_proj_weight_quantizers.0": q}
	if _, err := NewPlan(infosOf(sd), []byte(qwenMoEConfig), qs, Options{}); !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), "fused experts") {
		t.Fatalf("got %v, want ErrUnsupported for AWQ with fused experts", err)
	}
}

// perExpertFP8PC is one expert of a per-expert (hub-named) MoE layer with per-channel
// FP8 weight quantizers, as the data-free route sees it: gate rows amax 1, up rows 4.
func perExpertFP8PC(q *quant.Quantizer) (Quantizers, map[string]quant.Tensor) {
	const F, H = 2, 4
	p := "model.layers.0.mlp.experts.0."
	gate, up := make([]float32, F*H), make([]float32, F*H)
	for i := range gate {
		gate[i], up[i] = 1, 4
	}
	sd := map[string]quant.Tensor{
		p + "gate_proj.weight":                 bf16Tensor([]int64{F, H}, gate),
		p + "up_proj.weight":                   bf16Tensor([]int64{F, H}, up),
		p + "gate_proj.weight_quantizer._amax": bf16Tensor([]int64{F, 1}, []float32{1, 1}),
		p + "up_proj.weight_quantizer._amax":   bf16Tensor([]int64{F, 1}, []float32{4, 4}),
	}
	qs := table{p + "gate_proj.weight_quantizer": q, p + "up_proj.weight_quantizer": q}
	return qs, sd
}

// TestPerChannelGateUpOwnRows: for a family whose experts transformers fuses in
// memory, per-channel gate and up scales stay each projection's own (ModelOpt's one
// quantizer over gate_up_proj has one amax per row); for a family with separate
// expert modules, sync_moe_gate_up_amax makes them the element-wise max.
func TestPerChannelGateUpOwnRows(t *testing.T) {
	pc := &quant.Quantizer{Class: "TensorQuantizer", Enabled: true, NumBits: quant.NumBits{E: 4, M: 3}, Axis: []int{0}}
	for _, tc := range []struct {
		fusedInMemory bool
		gateWant      float32
	}{{true, 1.0 / 448}, {false, 4.0 / 448}} {
		qs, sd := perExpertFP8PC(pc)
		p, err := NewPlan(infosOf(sd), []byte(qwenMoEConfig), qs, Options{})
		if err != nil {
			t.Fatal(err)
		}
		if !p.Arch.FusedInMemory() {
			t.Fatal("transformers 5 fuses Qwen3-MoE experts in memory")
		}
		e := *p.Arch.Experts // the plan's family is a copy; its experts rules are shared
		e.FusedInMemory = tc.fusedInMemory
		p.Arch.Experts = &e
		out := processLayer(t, p, sd, 0)
		s, err := quant.Float32s(out["model.layers.0.mlp.experts.0.gate_proj.weight_scale"])
		if err != nil {
			t.Fatal(err)
		}
		if s[0] != tc.gateWant {
			t.Errorf("fused in memory %v: gate weight_scale %v, want %v", tc.fusedInMemory, s, tc.gateWant)
		}
	}
}

// TestFusedRowBlocksRefused: 2-D blocks whose rows cross from gate into up in the
// fused tensor ModelOpt quantizes are refused, naming both weights.
func TestFusedRowBlocksRefused(t *testing.T) {
	q := &quant.Quantizer{Class: "TensorQuantizer", Enabled: true, NumBits: quant.NumBits{E: 4, M: 3},
		BlockSizes: &quant.BlockSizes{Dims: map[int]int{-1: 4, -2: 4}}}
	qs, sd := perExpertFP8PC(q)
	sd["model.layers.0.mlp.experts.0.gate_proj.weight_quantizer._amax"] = bf16Tensor([]int64{1, 1}, []float32{1})
	sd["model.layers.0.mlp.experts.0.up_proj.weight_quantizer._amax"] = bf16Tensor([]int64{1, 1}, []float32{4})
	_, err := NewPlan(infosOf(sd), []byte(qwenMoEConfig), qs, Options{})
	if !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), "experts.0.gate_proj.weight and model.layers.0.mlp.experts.0.up_proj.weight") {
		t.Fatalf("err %v, want ErrUnsupported naming gate and up", err)
	}
}

// TestFusedExpertsShapesRefused: fused experts (one weight quantizer per expert) whose
// down_proj does not pair with gate_up_proj [E, 2I, H] / up_proj [E, I, H] as
// [E, H, I] (e.g. a batched-matmul [E, I, H] down_proj) are refused while planning,
// naming both tensors, instead of being written with down_proj's axes swapped.
func TestFusedExpertsShapesRefused(t *testing.T) {
	p := "model.layers.0.mlp.experts."
	for _, tc := range []struct {
		name      string
		first     string
		fs, ds    []int64
		wantShape string
	}{
		{"gated, batched down_proj", "gate_up_proj", []int64{2, 4, 8}, []int64{2, 2, 8}, "[2 2 8]"},
		{"gated, wrong I", "gate_up_proj", []int64{2, 4, 8}, []int64{2, 8, 4}, "[2 8 4]"},
		{"non-gated, batched down_proj", "up_proj", []int64{2, 2, 8}, []int64{2, 2, 8}, "[2 2 8]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n := func(s []int64) int { return int(s[0] * s[1] * s[2]) }
			sd := map[string]quant.Tensor{
				p + tc.first:    bf16Tensor(tc.fs, make([]float32, n(tc.fs))),
				p + "down_proj": bf16Tensor(tc.ds, make([]float32, n(tc.ds))),
			}
			qs := table{}
			for _, a := range []string{tc.first, "down_proj"} {
				qs[p+a+"_weight_quantizers.0"], qs[p+a+"_weight_quantizers.1"] = fp8Q(true), fp8Q(true)
			}
			_, err := NewPlan(infosOf(sd), []byte(qwenMoEConfig), qs, Options{})
			if !errors.Is(err, ErrShape) || !strings.Contains(err.Error(), "model.layers.0.mlp.experts") || !strings.Contains(err.Error(), tc.wantShape) {
				t.Fatalf("got %v, want ErrShape naming the experts and down_proj %s", err, tc.wantShape)
			}
		})
	}
}

// TestFusedExpertCountFromNRoutedExperts: DeepSeek-style configs count experts in
// n_routed_experts; fused experts of another count are refused, as with num_experts.
func TestFusedExpertCountFromNRoutedExperts(t *testing.T) {
	p := "model.layers.0.mlp.experts."
	sd := map[string]quant.Tensor{
		p + "gate_up_proj": bf16Tensor([]int64{2, 4, 8}, make([]float32, 64)),
		p + "down_proj":    bf16Tensor([]int64{2, 8, 2}, make([]float32, 32)),
	}
	qs := table{}
	for _, a := range []string{"gate_up_proj", "down_proj"} {
		qs[p+a+"_weight_quantizers.0"], qs[p+a+"_weight_quantizers.1"] = fp8Q(true), fp8Q(true)
	}
	for _, model := range []string{"deepseek_v3", "glm4_moe"} {
		cfg := `{"model_type": "` + model + `", "n_routed_experts": 3}`
		if _, err := NewPlan(infosOf(sd), []byte(cfg), qs, Options{}); !errors.Is(err, ErrShape) || !strings.Contains(err.Error(), "config.json says 3") {
			t.Errorf("%s: got %v, want ErrShape for 2 experts against n_routed_experts 3", model, err)
		}
		cfg = `{"model_type": "` + model + `", "n_routed_experts": 2}`
		if _, err := NewPlan(infosOf(sd), []byte(cfg), qs, Options{}); err != nil {
			t.Errorf("%s: %v", model, err)
		}
	}
}
