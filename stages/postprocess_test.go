package stages

import (
	"errors"
	"slices"
	"testing"

	"github.com/quantstream/quantstream/quant"
)

func TestPostprocessKey(t *testing.T) {
	for _, tc := range []struct {
		in, out string
		kv      bool
	}{
		{"model.layers.0.self_attn.q_proj.weight", "model.layers.0.self_attn.q_proj.weight", false},
		{"model.layers.0.self_attn.k_bmm_quantizer._amax", "model.layers.0.self_attn.k_proj.k_scale", true},
		{"model.layers.0.self_attn.v_bmm_quantizer._amax", "model.layers.0.self_attn.v_proj.v_scale", true},
		{"model.layers.0.self_attn.k_bmm_quantizer._bias_value", "model.layers.0.self_attn.k_proj.k_bias", false},
		{"model.layers.0.mlp.down_proj.input_quantizer._pre_quant_scale", "model.layers.0.mlp.down_proj.pre_quant_scale", false},
		{"model.layers.0.self_attn.q_bmm_quantizer._amax", "", false},
		{"model.layers.0.mlp.up_proj.weight_quantizer._amax", "", false},
		{"model.layers.0.mlp.up_proj.weight_quantizer._global_amax", "", false},
		{"model.layers.0.mlp.up_proj.output_quantizer._amax", "", false},
		{"model.layers.0.mlp.up_proj.weight_shape", "", false},
		{"model.layers.0.mlp.up_proj.weight_quantizer._scale", "", false},
		// SVDQuant factors contain no skip substring and survive under their raw names.
		{"model.layers.0.mlp.up_proj.weight_quantizer._svdquant_lora_a", "model.layers.0.mlp.up_proj.weight_quantizer._svdquant_lora_a", false},
		{"vision_model.radio_model.summary_idxs", "", false},
	} {
		out, kv := postprocessKey(tc.in, false)
		if out != tc.out || kv != tc.kv {
			t.Errorf("%s: got %q %v, want %q %v", tc.in, out, kv, tc.out, tc.kv)
		}
	}
}

func TestPostprocessSqueezesScales(t *testing.T) {
	sd := map[string]quant.Tensor{
		"a.weight_scale": {DType: quant.F32, Shape: []int64{1, 2, 1}, Data: make([]byte, 8)},
		"a.weight":       {DType: quant.F32, Shape: []int64{1, 2, 1}, Data: make([]byte, 8)},
		"b.weight_scale": {DType: quant.F32, Shape: []int64{1, 1, 2, 1}, Data: make([]byte, 8)},
	}
	out, err := (Reference{}).PostprocessStateDict(sd, 448, "", false, nil, quant.DivIEEE)
	if err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string][]int64{"a.weight_scale": {2, 1}, "a.weight": {1, 2, 1}, "b.weight_scale": {1, 1, 2, 1}} {
		if !slices.Equal(out[k].Shape, want) {
			t.Errorf("%s: shape %v, want %v", k, out[k].Shape, want)
		}
	}
}

func TestPostprocessKVScale(t *testing.T) {
	amax := bf16Tensor([]int64{}, []float32{3.5})
	out, err := (Reference{}).PostprocessStateDict(map[string]quant.Tensor{"x.attn.k_bmm_quantizer._amax": amax}, 448, "FP8", false, nil, quant.DivIEEE)
	if err != nil {
		t.Fatal(err)
	}
	s, ok := out["x.attn.k_proj.k_scale"]
	if !ok || s.DType != quant.F32 || len(s.Shape) != 0 {
		t.Fatalf("k_scale: %v", s)
	}
	if v, _ := quant.Scalar(s); v != float32(3.5)/448 {
		t.Fatalf("k_scale %v, want %v", v, float32(3.5)/448)
	}
	if _, err := (Reference{}).PostprocessStateDict(map[string]quant.Tensor{"x.attn.k_bmm_quantizer._amax": amax}, 448, "INT8", false, nil, quant.DivIEEE); !errors.Is(err, ErrKVCacheFormat) {
		t.Fatalf("INT8 KV cache: %v, want ErrKVCacheFormat", err)
	}
}
