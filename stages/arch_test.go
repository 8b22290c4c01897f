package stages

import (
	"errors"
	"testing"
)

func TestDetectArch(t *testing.T) {
	for _, tc := range []struct {
		config, family string
		fusion         int
	}{
		{`{"model_type": "llama"}`, "llama", 2},
		{`{"architectures": ["Qwen3MoeForCausalLM"], "model_type": "qwen3_moe"}`, "qwen_moe", 4},
		{`{"architectures": ["MixtralForCausalLM"]}`, "mixtral", 3},
		{`{"model_type": "deepseek_v3", "q_lora_rank": 1536}`, "deepseek_v3", 4},
		{`{"model_type": "gemma2"}`, "llama", 2},
	} {
		c, err := ParseModelConfig([]byte(tc.config))
		if err != nil {
			t.Fatal(err)
		}
		a, err := DetectArch(c)
		if err != nil {
			t.Fatalf("%s: %v", tc.config, err)
		}
		if a.Family != tc.family || len(a.Fusion) != tc.fusion {
			t.Errorf("%s: family %s with %d fusion rules, want %s with %d", tc.config, a.Family, len(a.Fusion), tc.family, tc.fusion)
		}
	}
	c, _ := ParseModelConfig([]byte(`{"architectures": ["MambaForCausalLM"], "model_type": "mamba"}`))
	if _, err := DetectArch(c); !errors.Is(err, ErrUnknownArch) {
		t.Fatalf("mamba: %v, want ErrUnknownArch", err)
	}
}

func TestDeepSeekMLAGroup(t *testing.T) {
	c, _ := ParseModelConfig([]byte(`{"model_type": "deepseek_v3", "q_lora_rank": 1536}`))
	a, _ := DetectArch(c)
	r := a.Fusion[0]
	if r.Norm != "input_layernorm" || len(r.Members) != 2 || r.Members[0] != "q_a_proj" || r.Members[1] != "kv_a_proj_with_mqa" {
		t.Fatalf("MLA group %+v", r)
	}
	if a.OnePlusNorm {
		t.Fatal("DeepSeek norms are plain")
	}
	c, _ = ParseModelConfig([]byte(`{"model_type": "gemma"}`))
	if a, _ := DetectArch(c); !a.OnePlusNorm {
		t.Fatal("Gemma norms scale by 1 + w")
	}
}

func TestLayerOf(t *testing.T) {
	for name, want := range map[string]int{
		"model.layers.3.mlp.up_proj.weight":       3,
		"model.language_model.layers.12.x.weight": 12,
		"model.embed_tokens.weight":               -1,
		"lm_head.weight":                          -1,
		"model.layers.7.mlp.experts.5.w1.weight":  7,
		"model.mtp_layers.0.foo.weight":           -1,
	} {
		if got, _ := LayerOf(name); got != want {
			t.Errorf("%s: layer %d, want %d", name, got, want)
		}
	}
}
