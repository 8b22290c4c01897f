package modelopt

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

func TestNewModelStructure(t *testing.T) {
	shapes := map[string][]int64{
		"model.embed_tokens.weight":                           {10, 8},
		"model.layers.0.self_attn.q_proj.weight":              {8, 8},
		"model.layers.0.self_attn.o_proj.weight":              {8, 8},
		"model.layers.0.block_sparse_moe.gate.weight":         {2, 8},
		"model.layers.0.block_sparse_moe.experts.0.w1.weight": {4, 8},
		"model.layers.0.input_layernorm.weight":               {8},
		"model.layers.0.self_attn.q_proj.bias":                {8},
	}
	m, err := NewModel([]byte(`{"architectures": ["MixtralForCausalLM"], "tie_word_embeddings": true, "num_local_experts": 1}`), shapes)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	byName := map[string]Slot{}
	for _, s := range m.Slots {
		names = append(names, s.Name)
		byName[s.Name] = s
	}
	want := []string{
		"lm_head.input_quantizer", "lm_head.output_quantizer", "lm_head.weight_quantizer",
		"model.embed_tokens.input_quantizer", "model.embed_tokens.output_quantizer", "model.embed_tokens.weight_quantizer",
		"model.layers.0.block_sparse_moe.experts.0.w1.input_quantizer", "model.layers.0.block_sparse_moe.experts.0.w1.output_quantizer", "model.layers.0.block_sparse_moe.experts.0.w1.weight_quantizer",
		// No block_sparse_moe.gate quantizers: transformers 5 loads Mixtral's experts
		// fused even from these per-expert hub tensors, and the router with them as a
		// TopKRouter, not an nn.Linear (the golden quantizers.json has none).
		"model.layers.0.self_attn.k_bmm_quantizer",
		"model.layers.0.self_attn.o_proj.input_quantizer", "model.layers.0.self_attn.o_proj.output_quantizer", "model.layers.0.self_attn.o_proj.weight_quantizer",
		"model.layers.0.self_attn.p_bmm_quantizer",
		"model.layers.0.self_attn.q_bmm_quantizer",
		"model.layers.0.self_attn.q_proj.input_quantizer", "model.layers.0.self_attn.q_proj.output_quantizer", "model.layers.0.self_attn.q_proj.weight_quantizer",
		"model.layers.0.self_attn.v_bmm_quantizer",
	}
	if !slices.Equal(names, want) {
		t.Fatalf("slots\n got %v\nwant %v", names, want)
	}
	if s := byName["lm_head.weight_quantizer"]; s.Weight != "model.embed_tokens.weight" || !slices.Equal(s.WeightShape, []int64{10, 8}) {
		t.Errorf("tied lm_head slot %+v", s)
	}
	if s := byName["model.embed_tokens.input_quantizer"]; !s.HardDisabled || s.ParentClass != "nn.Embedding" {
		t.Errorf("embedding input slot %+v", s)
	}
	if s := byName["model.layers.0.self_attn.k_bmm_quantizer"]; s.ParentClass != "MixtralAttention" || s.Kind != BMMSlot {
		t.Errorf("bmm slot %+v", s)
	}

	fused := map[string][]int64{"model.layers.0.mlp.experts.gate_up_proj": {4, 16, 8}, "model.layers.0.mlp.experts.down_proj": {4, 8, 8}}
	if _, err := NewModel([]byte(`{"num_experts": 3}`), fused); !errors.Is(err, ErrModel) {
		t.Errorf("expert count mismatch: err = %v, want ErrModel", err)
	}
	if _, err := NewModel([]byte(`{`), fused); !errors.Is(err, ErrModel) {
		t.Errorf("bad config: err = %v, want ErrModel", err)
	}
}

// TestExpertsLayout: 3-D experts get the quantizers of their family's layout, and a
// pair whose shapes do not fit that layout (one family taken for another) is refused
// naming the tensors and the fix, never cut along a guessed axis.
func TestExpertsLayout(t *testing.T) {
	const gptOSS = `{"architectures": ["GptOssForCausalLM"], "model_type": "gpt_oss", "num_local_experts": 4}`
	const qwen = `{"architectures": ["Qwen3MoeForCausalLM"], "model_type": "qwen3_moe", "num_experts": 4}`
	p := "model.layers.0.mlp."
	// E=4, H=8, I=2: bmm [E, H, 2I] / [E, I, H]; fused [E, 2I, H] / [E, H, I].
	bmm := map[string][]int64{p + "experts.gate_up_proj": {4, 8, 4}, p + "experts.down_proj": {4, 2, 8}, p + "router.weight": {4, 8}}
	fused := map[string][]int64{p + "experts.gate_up_proj": {4, 4, 8}, p + "experts.down_proj": {4, 8, 2}, p + "gate.weight": {4, 8}}

	m, err := NewModel([]byte(gptOSS), bmm)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, s := range m.Slots {
		names = append(names, s.Name)
		if s.ParentClass != "hf.GptOssExperts" || s.Expert != -1 {
			t.Errorf("slot %+v", s)
		}
	}
	want := []string{p + "experts.down_proj_input_quantizer", p + "experts.down_proj_weight_quantizer",
		p + "experts.gate_up_proj_input_quantizer", p + "experts.gate_up_proj_weight_quantizer"}
	if !slices.Equal(names, want) {
		t.Errorf("slots %v, want %v (the router is no nn.Linear)", names, want)
	}
	if _, err := NewModel([]byte(qwen), fused); err != nil {
		t.Errorf("fused layout: %v", err)
	}
	for _, tc := range []struct {
		name, cfg string
		shapes    map[string][]int64
		want      string
	}{
		{"bmm family, fused shapes", gptOSS, fused, "are not batched-matmul experts"},
		{"fused family, bmm shapes", qwen, bmm, "are not fused experts"},
	} {
		_, err := NewModel([]byte(tc.cfg), tc.shapes)
		if !errors.Is(err, ErrModel) || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), p+"experts: gate_up_proj") || !strings.Contains(err.Error(), "experts.layouts") {
			t.Errorf("%s: %v, want ErrModel %q naming the experts and the fix", tc.name, err, tc.want)
		}
	}
}

// TestScaledEmbedding: a scaled embedding (an nn.Embedding subclass with its own
// forward, Gemma 2/3) gets no quantizers, Llama's plain one does; a tied lm_head of a
// ConditionalGeneration model has its own.
func TestScaledEmbedding(t *testing.T) {
	slots := func(cfg string, shapes map[string][]int64) []string {
		t.Helper()
		m, err := NewModel([]byte(cfg), shapes)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, s := range m.Slots {
			names = append(names, s.Name)
		}
		return names
	}
	embed := func(n string) bool { return strings.Contains(n, "embed_tokens") }
	g := slots(`{"architectures": ["Gemma3ForConditionalGeneration"], "model_type": "gemma3", "tie_word_embeddings": true}`,
		map[string][]int64{"language_model.model.embed_tokens.weight": {10, 8}, "language_model.model.layers.0.mlp.up_proj.weight": {4, 8}})
	if slices.ContainsFunc(g, embed) || !slices.Contains(g, "lm_head.weight_quantizer") {
		t.Errorf("gemma3 slots %v: want lm_head's and none of the scaled embedding", g)
	}
	l := slots(`{"architectures": ["LlamaForCausalLM"], "model_type": "llama", "tie_word_embeddings": true}`,
		map[string][]int64{"model.embed_tokens.weight": {10, 8}, "model.layers.0.mlp.up_proj.weight": {4, 8}})
	if !slices.ContainsFunc(l, embed) || !slices.Contains(l, "lm_head.weight_quantizer") {
		t.Errorf("llama slots %v: want the embedding's and lm_head's", l)
	}
	if _, err := NewModel([]byte(`{"architectures": ["LlamaForCausalLM"], "model_type": "llama", "tie_word_embeddings": true}`),
		map[string][]int64{"model.layers.0.mlp.up_proj.weight": {4, 8}}); !errors.Is(err, ErrModel) {
		t.Errorf("tied lm_head without an embedding: %v, want ErrModel", err)
	}
}
