package stages

import (
	"reflect"
	"testing"
)

func TestFusedGroups(t *testing.T) {
	qwen, err := DetectArch(&ModelConfig{ModelType: "qwen3_moe"})
	if err != nil {
		t.Fatal(err)
	}
	p := "model.layers.1."
	mods := []string{
		p + "self_attn.q_proj", p + "self_attn.k_proj", p + "self_attn.v_proj", p + "self_attn.o_proj",
		p + "mlp.experts.10.gate_proj", p + "mlp.experts.10.up_proj", p + "mlp.experts.2.gate_proj", p + "mlp.experts.2.up_proj",
		p + "mlp.experts.3.gate_proj",                                        // alone: no group
		"model.layers.2.self_attn.q_proj", "model.layers.2.self_attn.k_proj", // another layer
	}
	got := qwen.FusedGroups(p, mods)
	want := []FusedGroup{
		{Members: []string{p + "self_attn.q_proj", p + "self_attn.k_proj", p + "self_attn.v_proj"}, Norm: p + "input_layernorm"},
		{Members: []string{p + "mlp.experts.2.gate_proj", p + "mlp.experts.2.up_proj"}},
		{Members: []string{p + "mlp.experts.10.gate_proj", p + "mlp.experts.10.up_proj"}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("FusedGroups =\n%v\nwant\n%v", got, want)
	}
	for f, want := range map[string]bool{"fp8": false, "fp8_pb_real": false, "": false, "nvfp4": true, "fp8_pc_pt": true, "int4_awq": true} {
		if got := SharesFusedScales(f); got != want {
			t.Errorf("SharesFusedScales(%q) = %v, want %v", f, got, want)
		}
	}
}
