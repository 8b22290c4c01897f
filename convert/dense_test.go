package convert

import (
	"strings"
	"testing"

	"github.com/quantstream/quantstream"
	"github.com/quantstream/quantstream/internal/parallel"
)

// TestDenseGroupsMatchWholeLayers: dense decoder layers larger than a quarter of the
// budget are exported in groups of modules (stages.Plan.DenseSplit: fusion groups
// with their norm, pre_quant_scale folds across linears kept together), and every
// output file is byte-identical to the whole-layer conversion: data-free W4A16 NVFP4,
// and the golden calibration states of FP8, NVFP4 (with an FP8 KV cache), INT4 AWQ,
// NVFP4 AWQ (pre_quant_scale folded into norms and from v_proj into o_proj) and W4A8
// AWQ, at 1 and 4 workers. The budget is the plan's own smallest one, so each layer is
// cut as finely as the rules allow.
func TestDenseGroupsMatchWholeLayers(t *testing.T) {
	base := "../testdata/golden/e2e/base_llama"
	cases := []struct {
		name string
		opt  Options
	}{
		{"W4A16_NVFP4_CFG", Options{Inputs: []string{"../testdata/tiny_llama"}, Recipe: "W4A16_NVFP4_CFG"}},
	}
	for _, c := range []string{"fp8", "nvfp4", "nvfp4_kv_fp8", "int4_awq", "nvfp4_awq_synth", "w4a8_awq"} {
		cases = append(cases, struct {
			name string
			opt  Options
		}{c, Options{Inputs: []string{base, "../testdata/golden/e2e/" + c + "/input"}}})
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			opt := tc.opt
			opt.MaxMemory = 1
			p, err := MakePlan(t.Context(), opt)
			if err != nil {
				t.Fatal(err)
			}
			budget := p.MinMemory
			opt.MaxMemory = budget
			p, err = MakePlan(t.Context(), opt)
			if err != nil || len(p.Problems) > 0 {
				t.Fatalf("plan at its smallest budget %d: %v %v", budget, err, p.Problems)
			}
			groups := map[int]int{}
			for _, lp := range p.Layers {
				groups[lp.Index]++
			}
			for idx, n := range groups {
				if idx != quantstream.NonDecoder && n < 2 {
					t.Fatalf("at budget %d layer %d is one group (%v)", budget, idx, groups)
				}
			}
			// The fused gate_proj and up_proj go apart (stages.FusionGroup) unless
			// a pre_quant_scale ties them (AWQ).
			awq := strings.Contains(tc.name, "awq")
			for _, lp := range p.Layers {
				var gate, up bool
				for _, ti := range lp.Steps[0] {
					gate = gate || strings.HasSuffix(ti.Name, "mlp.gate_proj.weight")
					up = up || strings.HasSuffix(ti.Name, "mlp.up_proj.weight")
				}
				if (gate || up) && (gate && up) != awq {
					t.Fatalf("at budget %d group %q has gate_proj %v, up_proj %v (AWQ %v)", budget, lp.Prefix, gate, up, awq)
				}
			}
			ref, want := convertMoE(t, opt, 0, 1)
			for _, workers := range []int{1, 4} {
				if workers > 1 {
					defer func(n int) { parallel.ChunkBytes = n }(parallel.ChunkBytes)
					parallel.ChunkBytes = 1000
				}
				out, got := convertMoE(t, opt, budget, workers)
				assertSameDir(t, ref, out)
				assertSameSummary(t, got, want)
				if got.MaxChargeB > budget {
					t.Errorf("largest charge %d over the budget %d", got.MaxChargeB, budget)
				}
			}
		})
	}
}

// TestDenseGroupsRefused: below the smallest budget, where the largest group of
// modules does not fit, the plan refuses and names that budget.
func TestDenseGroupsRefused(t *testing.T) {
	opt := Options{Inputs: []string{"../testdata/tiny_llama"}, Recipe: "W4A16_NVFP4_CFG", MaxMemory: 1}
	p, err := MakePlan(t.Context(), opt)
	if err != nil {
		t.Fatal(err)
	}
	opt.MaxMemory = p.MinMemory * 9 / 10
	p2, err := MakePlan(t.Context(), opt)
	if err != nil {
		t.Fatal(err)
	}
	if len(p2.Problems) == 0 || !strings.Contains(strings.Join(p2.Problems, "\n"), "--max-memory "+flagSize(p.MinMemory)) {
		t.Fatalf("at %d: %v, want the smallest budget %d named", opt.MaxMemory, p2.Problems, p.MinMemory)
	}
}
