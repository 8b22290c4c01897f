package modelopt

import (
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"
)

// TestConstantAmaxAttributes: use_constant_amax and constant_amax are parsed (not
// dropped as ignorable), validated as QuantizerAttributeConfig does (constant_amax
// > 0, not both), written back, and make their quantizers data-free: the cast
// presets carry no amax, a constant_amax input quantizer gets its value as a float32
// _amax (Quantized.Constants). Where ModelOpt's behaviour is not pinned (cast mode
// off the KV cache, constant_amax on a weight quantizer) the recipe is refused.
func TestConstantAmaxAttributes(t *testing.T) {
	for _, tc := range []struct {
		cfg  map[string]any
		want string
	}{
		{map[string]any{"num_bits": []any{4.0, 3.0}, "constant_amax": -1.0}, "positive"},
		{map[string]any{"num_bits": []any{4.0, 3.0}, "constant_amax": 2.0, "use_constant_amax": true}, "mutually exclusive"},
		{map[string]any{"use_constant_amax": "yes"}, "use_constant_amax"},
	} {
		if _, err := attributesFromMap(tc.cfg); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want %q", tc.cfg, err, tc.want)
		}
	}
	a, err := attributesFromMap(map[string]any{"num_bits": []any{2.0, 1.0}, "constant_amax": 2688.0})
	if err != nil || a.ConstantAmax == nil || *a.ConstantAmax != 2688 {
		t.Fatalf("%+v %v", a, err)
	}
	r, _ := Preset("fp8_cast")
	b, _ := r.MarshalJSON()
	if !strings.Contains(string(b), `"use_constant_amax": true`) {
		t.Errorf("fp8_cast written as %s", b)
	}

	cfg, err := os.ReadFile(goldenE2E("base_llama", "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	m, _ := baseModel(t, "base_llama")
	for _, kv := range []string{"fp8_cast", "nvfp4_cast"} {
		r, err := ResolveRecipe("W4A16_NVFP4_CFG", kv)
		if err != nil {
			t.Fatal(err)
		}
		q, err := DataFree(r, cfg, m.Shapes)
		if err != nil {
			t.Fatalf("%s: %v", kv, err)
		}
		for qn, tq := range q.Table {
			if strings.HasSuffix(qn, "k_bmm_quantizer") && (!tq.Enabled || !tq.UseConstantAmax) {
				t.Errorf("%s: %s %+v", kv, qn, tq)
			}
			if _, has := q.AmaxShapes[qn]; has && strings.Contains(qn, "bmm") {
				t.Errorf("%s: %s gets an amax", kv, qn)
			}
		}
	}
	constant := func(name string, v float64) *Recipe {
		r, _ := Preset("NVFP4_DEFAULT_CFG")
		a := numNVFP4()
		a.ConstantAmax = &v
		r.Rules = append(r.Rules, cfgRule(name, a))
		return r
	}
	q, err := DataFree(constant("*input_quantizer", 2688), cfg, m.Shapes)
	if err != nil {
		t.Fatal(err)
	}
	if v, ok := q.Constants["model.layers.0.mlp.down_proj.input_quantizer"]; !ok || v != 2688 {
		t.Errorf("constants %v", q.Constants)
	}
	if _, err := DataFree(constant("*weight_quantizer", 1), cfg, m.Shapes); !errors.Is(err, ErrRecipe) {
		t.Errorf("constant weight amax: %v", err)
	}
	cast := func() *Recipe {
		r, _ := Preset("W4A16_NVFP4_CFG")
		a := numFP8()
		a.UseConstantAmax = boolp(true)
		r.Rules = append(r.Rules, cfgRule("*mlp*input_quantizer", a))
		return r
	}
	if _, err := DataFree(cast(), cfg, m.Shapes); !errors.Is(err, ErrRecipe) || !strings.Contains(err.Error(), "use_constant_amax") {
		t.Errorf("cast mode on inputs: %v", err)
	}
}

// TestForceWeightQuantizersStatic: hf_ptq's force_weight_quantizers_static applied to
// W4A16_NVFP4_CFG and NVFP4_MLP_ONLY's rules gives the quant_cfg ModelOpt recorded in
// the cast cases' quant_recipe.json (weight rules with a block_sizes dict get type
// static; nothing else changes), and leaves the preset itself alone.
func TestForceWeightQuantizersStatic(t *testing.T) {
	r, _ := Preset("W4A16_NVFP4_CFG")
	f := ForceWeightQuantizersStatic(r)
	want, err := ReadRecipeJSON("../testdata/golden-qsrc/e2e/gpt_oss_mxfp4-cast_w4a16_nvfp4/input/quant_recipe.json")
	if err != nil {
		t.Fatal(err)
	}
	g, _ := json.Marshal(rulesJSON(f.Rules))
	w, _ := json.Marshal(rulesJSON(want.Rules))
	if string(g) != string(w) {
		t.Errorf("forced rules\n%s\nwant\n%s", g, w)
	}
	if r.Rules[1].Cfg[0].BlockSizes.Type != "dynamic" {
		t.Error("the preset was changed")
	}
}
