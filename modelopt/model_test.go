package modelopt

import (
	"errors"
	"slices"
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
		"model.layers.0.block_sparse_moe.gate.input_quantizer", "model.layers.0.block_sparse_moe.gate.output_quantizer", "model.layers.0.block_sparse_moe.gate.weight_quantizer",
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
