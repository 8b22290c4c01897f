package stages

import (
	"errors"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow/memory"

	quantstream "github.com/quantstream/quantstream"
	"github.com/quantstream/quantstream/quant"
)

// processGroup runs the tensors of sd whose names satisfy keep, as one group of
// decoder layer 0, through a Stage of p.
func processGroup(t *testing.T, p *Plan, sd map[string]quant.Tensor, keep func(string) bool) (map[string]quant.Tensor, error) {
	t.Helper()
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	var in []quantstream.Tensor
	for _, h := range p.Layer(0).Inputs {
		if keep(h.Name) {
			in = append(in, quantstream.Tensor{Name: h.Name, Tensor: sd[h.Name]})
		}
	}
	l, err := quantstream.NewLayer(mem, 0, "model.layers.0.", in)
	if err != nil {
		t.Fatal(err)
	}
	out, err := NewStage(p, mem).Process(t.Context(), l)
	if err != nil {
		return nil, err
	}
	defer out.Release()
	m := map[string]quant.Tensor{}
	for _, tt := range out.Tensors() {
		m[tt.Name] = quant.Tensor{DType: tt.DType, Shape: tt.Shape, Data: slices.Clone(tt.Data)}
	}
	return m, nil
}

// moeFill is three hub-named FP8 experts; expert 2 has no input amax and is filled
// with the max over experts 0 and 1 (7).
func moeFill() (map[string]quant.Tensor, table) {
	p := "model.layers.0.mlp.experts."
	sd := map[string]quant.Tensor{
		"model.layers.0.mlp.gate.weight":                 bf16Tensor([]int64{3, 4}, make([]float32, 12)),
		"model.layers.0.self_attn.q_proj.weight":         bf16Tensor([]int64{4, 4}, make([]float32, 16)),
		"model.layers.0.post_attention_layernorm.weight": bf16Tensor([]int64{4}, []float32{1, 1, 1, 1}),
	}
	// q_proj's quantizers are disabled: ModelOpt's table has them for every linear.
	qs := table{"model.layers.0.self_attn.q_proj.weight_quantizer": fp8Q(false), "model.layers.0.self_attn.q_proj.input_quantizer": fp8Q(false)}
	for e, amax := range []float32{3, 7, 0} {
		for _, proj := range []string{"gate_proj", "up_proj", "down_proj"} {
			n := p + strconv.Itoa(e) + "." + proj
			sd[n+".weight"] = bf16Tensor([]int64{4, 4}, []float32{1, -2, 0.5, 0, 1, 1, 1, 1, 0, 0, 0, 0, 2, 2, 2, 2})
			sd[n+".weight_quantizer._amax"] = bf16Tensor([]int64{}, []float32{2})
			if amax != 0 {
				sd[n+".input_quantizer._amax"] = bf16Tensor([]int64{}, []float32{amax})
			}
			qs[n+".weight_quantizer"] = fp8Q(true)
			qs[n+".input_quantizer"] = fp8Q(true)
		}
	}
	return sd, qs
}

// TestExpertSplitFillTargetFromWholeLayer: a group holding only the expert that needs
// the input-amax fill gets the whole layer's target once SetExpertFill has it, and is
// refused before, never filled from its own group (which has no amax at all: 0.5).
func TestExpertSplitFillTargetFromWholeLayer(t *testing.T) {
	sd, qs := moeFill()
	plan, err := NewPlan(infosOf(sd), []byte(qwenMoEConfig), qs, Options{})
	if err != nil {
		t.Fatal(err)
	}
	whole := processLayer(t, plan, sd, 0)
	preread, err := plan.ExpertSplit(0)
	if err != nil {
		t.Fatal(err)
	}
	if len(preread) != 6 {
		t.Fatalf("pre-read %q, want the input amax of experts 0 and 1", preread)
	}
	expert2 := func(n string) bool { return strings.Contains(n, ".experts.2.") }
	if _, err := processGroup(t, plan, sd, expert2); !errors.Is(err, ErrPlanMismatch) || !strings.Contains(err.Error(), "no target was computed") {
		t.Fatalf("group processed without the fill target: %v", err)
	}
	amax := map[string]quant.Tensor{}
	for _, n := range preread {
		amax[n] = sd[n]
	}
	if err := plan.SetExpertFill(0, amax); err != nil {
		t.Fatal(err)
	}
	got := map[string]quant.Tensor{}
	for _, keep := range []func(string) bool{
		func(n string) bool { _, _, ok := RoutedExpert(n); return !ok },
		func(n string) bool { return strings.Contains(n, ".experts.0.") || strings.Contains(n, ".experts.1.") },
		expert2,
	} {
		out, err := processGroup(t, plan, sd, keep)
		if err != nil {
			t.Fatal(err)
		}
		for n, v := range out {
			got[n] = v
		}
	}
	if len(got) != len(whole) {
		t.Fatalf("groups produce %d tensors, the whole layer %d", len(got), len(whole))
	}
	for n, w := range whole {
		if g, ok := got[n]; !ok || g.DType != w.DType || !slices.Equal(g.Shape, w.Shape) || !slices.Equal(g.Data, w.Data) {
			t.Errorf("%s differs between the groups and the whole layer", n)
		}
	}
	if v := scalarOf(t, got["model.layers.0.mlp.experts.2.up_proj.input_scale"]); v != float32(7)/448 {
		t.Errorf("filled input scale %v, want 7/448", v)
	}
}

// TestExpertSplitRefused: AWQ models (resmoothing over all experts), fused experts
// and layers without routed experts are not split.
func TestExpertSplitRefused(t *testing.T) {
	sd, qs := moeFill()
	awq, err := NewPlan(infosOf(sd), []byte(qwenMoEConfig), qs, Options{})
	if err != nil {
		t.Fatal(err)
	}
	awq.ModelFormat = "nvfp4_awq"

	p := "model.layers.0.mlp."
	fsd := map[string]quant.Tensor{
		p + "experts.gate_up_proj": bf16Tensor([]int64{2, 4, 4}, make([]float32, 32)),
		p + "experts.down_proj":    bf16Tensor([]int64{2, 4, 2}, make([]float32, 16)),
		p + "gate.weight":          bf16Tensor([]int64{2, 4}, make([]float32, 8)),
	}
	fqs := table{
		p + "experts.gate_up_proj_weight_quantizers.0": fp8Q(true), p + "experts.gate_up_proj_weight_quantizers.1": fp8Q(true),
		p + "experts.down_proj_weight_quantizers.0": fp8Q(true), p + "experts.down_proj_weight_quantizers.1": fp8Q(true),
	}
	fused, err := NewPlan(infosOf(fsd), []byte(qwenMoEConfig), fqs, Options{})
	if err != nil {
		t.Fatal(err)
	}
	lsd, lqs := tinyLlama(1)
	dense, err := NewPlan(infosOf(lsd), []byte(tinyLlamaConfig), lqs, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		plan *Plan
		want string
	}{
		{"awq", awq, "nvfp4_awq export resmooths"},
		{"fused", fused, "experts container"},
		{"dense", dense, "no routed experts"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := tc.plan.ExpertSplit(0)
			if !errors.Is(err, ErrNoExpertSplit) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want %q", err, tc.want)
			}
		})
	}
}

func TestRoutedExpert(t *testing.T) {
	for _, tc := range []struct {
		name, prefix string
		e            int
		ok           bool
	}{
		{"model.layers.3.mlp.experts.17.up_proj.weight", "model.layers.3.mlp.experts.17.", 17, true},
		{"model.layers.3.mlp.experts.17.up_proj.input_quantizer._amax", "model.layers.3.mlp.experts.17.", 17, true},
		{"model.layers.3.block_sparse_moe.experts.0.w1.weight", "model.layers.3.block_sparse_moe.experts.0.", 0, true},
		{"model.layers.3.mlp.shared_experts.up_proj.weight", "", 0, false},
		{"model.layers.3.mlp.experts.gate_up_proj", "", 0, false},
		{"model.layers.3.mlp.gate.weight", "", 0, false},
	} {
		prefix, e, ok := RoutedExpert(tc.name)
		if prefix != tc.prefix || e != tc.e || ok != tc.ok {
			t.Errorf("RoutedExpert(%q) = %q, %d, %v", tc.name, prefix, e, ok)
		}
	}
}
