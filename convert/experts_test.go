package convert

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/quantstream/quantstream"
	"github.com/quantstream/quantstream/arrowio"
	"github.com/quantstream/quantstream/internal/parallel"
	"github.com/quantstream/quantstream/internal/testgen"
	"github.com/quantstream/quantstream/pipeline"
	"github.com/quantstream/quantstream/quant"
)

const tinyMoE = "../testdata/tiny_moe"

// expertBudget is below four times a decoder layer of tiny_moe (121 KiB in): the
// layers go in expert groups (the non-decoder group, which no stage changes, is
// copied from file to file and costs nothing of it).
const expertBudget = 160 << 10

// convertMoE converts opt under budget with workers and returns the output directory
// and summary; shards are small so that several are laid out.
func convertMoE(t *testing.T, opt Options, budget int64, workers int) (string, *Summary) {
	t.Helper()
	mem := memory.NewCheckedAllocator(pipeline.NewPoolAllocator())
	opt.Out, opt.Workers, opt.Allocator, opt.MaxShardSize, opt.MaxMemory = filepath.Join(t.TempDir(), "out"), workers, mem, 60_000, budget
	sum, err := Run(t.Context(), opt)
	if err != nil {
		t.Fatal(err)
	}
	mem.AssertSize(t, 0)
	return opt.Out, sum
}

// assertExpertGroups checks that opt under expertBudget is planned in expert groups
// (more groups than layers, each within the budget).
func assertExpertGroups(t *testing.T, opt Options) {
	t.Helper()
	opt.MaxMemory = expertBudget
	p, err := MakePlan(t.Context(), opt)
	if err != nil || len(p.Problems) > 0 {
		t.Fatalf("plan: %v %v", err, p.Problems)
	}
	groups := map[int]int{}
	for _, lp := range p.Layers {
		groups[lp.Index]++
	}
	if groups[0] < 3 || groups[1] < 3 || p.MinMemory > expertBudget {
		t.Fatalf("groups per layer %v, min memory %d", groups, p.MinMemory)
	}
}

// assertSameSummary compares what a summary says about the model.
func assertSameSummary(t *testing.T, got, want *Summary) {
	t.Helper()
	if got.Layers != want.Layers || got.Tensors != want.Tensors || got.BytesIn != want.BytesIn || got.BytesOut != want.BytesOut ||
		got.Shards != want.Shards || got.QuantAlgo != want.QuantAlgo || got.Mode != want.Mode ||
		!reflect.DeepEqual(got.ModulesPerFmt, want.ModulesPerFmt) || !reflect.DeepEqual(got.Unquantized, want.Unquantized) ||
		!reflect.DeepEqual(got.FilledAmax, want.FilledAmax) {
		t.Errorf("summary in expert groups %+v, whole %+v", got, want)
	}
}

// TestDataFreeExpertGroupsMatchWholeLayers: data-free weight-only recipes convert
// tiny_moe in expert groups under a budget below its layers, with every output file
// byte-identical to the unconstrained conversion, at 1 and 4 workers.
func TestDataFreeExpertGroupsMatchWholeLayers(t *testing.T) {
	for _, recipe := range []string{"W4A16_NVFP4_CFG", "MXFP4_DEFAULT_CFG", "INT8_WEIGHT_ONLY_CFG"} {
		t.Run(recipe, func(t *testing.T) {
			opt := Options{Inputs: []string{tinyMoE}, Recipe: recipe}
			assertExpertGroups(t, opt)
			ref, want := convertMoE(t, opt, 0, 1)
			for _, workers := range []int{1, 4} {
				if workers > 1 {
					defer func(n int) { parallel.ChunkBytes = n }(parallel.ChunkBytes)
					parallel.ChunkBytes = 1000
				}
				out, got := convertMoE(t, opt, expertBudget, workers)
				assertSameDir(t, ref, out)
				assertSameSummary(t, got, want)
				if got.MaxChargeB > expertBudget {
					t.Errorf("largest charge %d over the budget", got.MaxChargeB)
				}
			}
		})
	}
}

// TestCalibratedExpertGroupsFillFromWholeLayer: calibration state in which some
// experts have no input amax (never routed to) or an all-zero one: the export fills
// them with the max over every expert of the projection (set_expert_quantizer_amax), which lies in
// another expert group (expert 7 has the largest). The groups read the layer's expert
// input amaxes first, so the output is byte-identical to the whole-layer export.
func TestCalibratedExpertGroupsFillFromWholeLayer(t *testing.T) {
	for _, format := range []string{"nvfp4", "fp8"} {
		t.Run(format, func(t *testing.T) {
			calib := filepath.Join(t.TempDir(), "calib")
			err := testgen.WriteSyntheticMoECalib(calib, testgen.TinyMoE, format, func(layer, expert int) (float32, bool) {
				switch {
				case layer == 0 && expert == 0, layer == 1 && expert == 3:
					return 0, false // missing: filled, listed in the summary
				case layer == 1 && expert == 1:
					return 0, true // all zero: filled, seen only in the data
				}
				return 1 + 0.25*float32(expert), true
			}, false)
			if err != nil {
				t.Fatal(err)
			}
			opt := Options{Inputs: []string{tinyMoE, calib}}
			assertExpertGroups(t, opt)
			ref, want := convertMoE(t, opt, 0, 1)
			if len(want.FilledAmax) != 6 {
				t.Fatalf("filled %v, want the three projections of two experts", want.FilledAmax)
			}
			for _, workers := range []int{1, 4} {
				out, got := convertMoE(t, opt, expertBudget, workers)
				assertSameDir(t, ref, out)
				assertSameSummary(t, got, want)
			}
		})
	}
}

// TestExpertGroupsRefused: a budget that cannot hold one expert group is refused
// before anything is read, saying how much is needed; a conversion with stages of
// the caller's own, and fused experts, keep layers whole and the budget error says
// why.
func TestExpertGroupsRefused(t *testing.T) {
	out := filepath.Join(t.TempDir(), "out")
	_, err := Run(t.Context(), Options{Inputs: []string{tinyMoE}, Out: out, Recipe: "W4A16_NVFP4_CFG", MaxMemory: 16 << 10})
	if !errors.Is(err, pipeline.ErrOverBudget) || !strings.Contains(err.Error(), "the largest layer needs 34200") {
		t.Fatalf("err = %v", err)
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Errorf("output exists after a refused plan: %v", err)
	}
	p, err := MakePlan(t.Context(), Options{Inputs: []string{tinyMoE}, Recipe: "W4A16_NVFP4_CFG", MaxMemory: 16 << 10})
	if err != nil || len(p.Problems) != 1 || !strings.Contains(p.Problems[0], "needs") {
		t.Fatalf("plan: %v %v", err, p.Problems)
	}

	for _, tc := range []struct {
		name  string
		opt   Options
		extra []quantstream.Stage
		want  string
	}{
		// Below a whole decoder layer in and out (about 157 KiB).
		{"caller stages", Options{Inputs: []string{tinyMoE}, Recipe: "W4A16_NVFP4_CFG", MaxMemory: 96 << 10}, []quantstream.Stage{nopStage{}},
			"layer 0: the conversion has stages of its own"},
		{"fused experts", Options{Inputs: []string{"../testdata/golden/e2e/base_moe", "../testdata/golden/e2e/moe_nvfp4/input"}, MaxMemory: 512 << 10}, nil,
			"layer 0: model.layers.0.mlp.experts.down_proj belongs to an experts container"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			j, err := Prepare(t.Context(), tc.opt)
			if err != nil {
				t.Fatal(err)
			}
			defer j.Close()
			if err := j.Append(tc.extra...); err != nil {
				t.Fatal(err)
			}
			p, err := j.Plan()
			if err != nil || len(p.Problems) != 1 || !strings.Contains(p.Problems[0], "needs") ||
				!strings.Contains(p.Problems[0], "(not cut into groups: stages: layer cannot be exported in groups of experts: "+tc.want) {
				t.Fatalf("plan: %v %q", err, p.Problems)
			}
		})
	}
}

// nopStage hands each layer on.
type nopStage struct{}

func (nopStage) Name() string { return "nop" }
func (nopStage) Plan(in quantstream.LayerInfo) ([]quantstream.TensorInfo, error) {
	return in.Tensors, nil
}
func (nopStage) Process(_ context.Context, l *quantstream.Layer) (*quantstream.Layer, error) {
	return l, nil
}

// deepSeekV3Tensors is a tiny DeepSeek-V3 state dict (hub names): MLA attention, a
// dense first layer, then MoE layers with a router and its correction bias, shared
// experts and routed experts.
func deepSeekV3Tensors(layers, experts int) []quantstream.TensorInfo {
	const h, q, kv, f, mf, v = 64, 32, 32, 128, 32, 256
	t := func(name, dtype string, shape ...int64) quantstream.TensorInfo {
		dt, err := quant.ParseDType(dtype)
		if err != nil {
			panic(err)
		}
		return quantstream.TensorInfo{Name: name, DType: dt, Shape: shape}
	}
	out := []quantstream.TensorInfo{t("model.embed_tokens.weight", "BF16", v, h), t("model.norm.weight", "BF16", h), t("lm_head.weight", "BF16", v, h)}
	for l := range layers {
		p := "model.layers." + strconv.Itoa(l) + "."
		out = append(out,
			t(p+"input_layernorm.weight", "BF16", h), t(p+"post_attention_layernorm.weight", "BF16", h),
			t(p+"self_attn.q_a_proj.weight", "BF16", q, h), t(p+"self_attn.q_a_layernorm.weight", "BF16", q),
			t(p+"self_attn.q_b_proj.weight", "BF16", 4*24, q), t(p+"self_attn.kv_a_proj_with_mqa.weight", "BF16", kv+8, h),
			t(p+"self_attn.kv_a_layernorm.weight", "BF16", kv), t(p+"self_attn.kv_b_proj.weight", "BF16", 4*32, kv),
			t(p+"self_attn.o_proj.weight", "BF16", h, 4*16))
		mlp := func(m string, f int64) {
			out = append(out, t(m+"gate_proj.weight", "BF16", f, h), t(m+"up_proj.weight", "BF16", f, h), t(m+"down_proj.weight", "BF16", h, f))
		}
		if l == 0 {
			mlp(p+"mlp.", f)
			continue
		}
		out = append(out, t(p+"mlp.gate.weight", "BF16", int64(experts), h), t(p+"mlp.gate.e_score_correction_bias", "F32", int64(experts)))
		mlp(p+"mlp.shared_experts.", mf)
		for e := range experts {
			mlp(p+"mlp.experts."+strconv.Itoa(e)+".", mf)
		}
	}
	return out
}

const deepSeekV3Config = `{"architectures": ["DeepseekV3ForCausalLM"], "model_type": "deepseek_v3", "dtype": "bfloat16",
"hidden_size": 64, "intermediate_size": 128, "moe_intermediate_size": 32, "n_routed_experts": 16, "n_shared_experts": 1,
"num_experts_per_tok": 2, "first_k_dense_replace": 1, "num_hidden_layers": 3, "num_attention_heads": 4, "num_key_value_heads": 4,
"q_lora_rank": 32, "kv_lora_rank": 32, "qk_nope_head_dim": 16, "qk_rope_head_dim": 8, "v_head_dim": 16, "vocab_size": 256,
"tie_word_embeddings": false, "rms_norm_eps": 1e-06}
`

// TestDeepSeekV3ExpertGroups: the DeepSeek-V3 layout (MLA, router correction bias,
// shared experts beside routed ones) converts in expert groups with the bytes of the
// whole-layer conversion.
func TestDeepSeekV3ExpertGroups(t *testing.T) {
	in := filepath.Join(t.TempDir(), "in")
	if err := testgen.WriteCheckpoint(in, deepSeekV3Tensors(3, 16), 3, arrowio.WriteOptions{}, map[string][]byte{"config.json": []byte(deepSeekV3Config)}); err != nil {
		t.Fatal(err)
	}
	for _, recipe := range []string{"W4A16_NVFP4_CFG", "INT8_WEIGHT_ONLY_CFG"} {
		t.Run(recipe, func(t *testing.T) {
			opt := Options{Inputs: []string{in}, Recipe: recipe}
			const budget = 256 << 10
			plan := opt
			plan.MaxMemory = budget
			p, err := MakePlan(t.Context(), plan)
			if err != nil || len(p.Problems) > 0 || len(p.Layers) < 6 {
				t.Fatalf("plan: %v %v, %d groups", err, p.Problems, len(p.Layers))
			}
			ref, want := convertMoE(t, opt, 0, 1)
			out, got := convertMoE(t, opt, budget, 4)
			assertSameDir(t, ref, out)
			assertSameSummary(t, got, want)
		})
	}
}
