package modelopt

import (
	"errors"
	"slices"
	"testing"

	"github.com/quantstream/quantstream/quant"
)

func TestFnmatch(t *testing.T) {
	for _, c := range []struct {
		name, pat string
		want      bool
	}{
		{"model.layers.0.self_attn.k_bmm_quantizer", "*[kv]_bmm_quantizer", true},
		{"model.layers.0.self_attn.q_bmm_quantizer", "*[kv]_bmm_quantizer", false},
		{"model.layers.0.self_attn.q_bmm_quantizer", "*[!kv]_bmm_quantizer", true},
		{"lm_head.weight_quantizer", "*lm_head*", true},
		{"model.layers.0.mlp.gate.weight_quantizer", "*mlp.gate.*", true},
		{"model.layers.0.mlp.gate_proj.weight_quantizer", "*mlp.gate.*", false},
		{"mtp.layers.0.x", "mtp.*", true},
		{"model.mtp.x", "mtp.*", false},
		{"a.b", "a?b", true},
		{"a[b", "a[b", true},
		{"a^b", "a[^]b", true},
		{"ab", "a[^]b", false},
	} {
		got, err := fnmatch(c.name, c.pat)
		if err != nil || got != c.want {
			t.Errorf("fnmatch(%q, %q) = %v, %v; want %v", c.name, c.pat, got, err, c.want)
		}
	}
}

func TestNormalizeFused(t *testing.T) {
	for in, want := range map[string]string{
		"m.experts.gate_up_proj_weight_quantizers.3":  "m.experts.gate_up_proj_weight_quantizer",
		"m.experts.down_proj_input_quantizer":         "m.experts.down_proj_input_quantizer",
		"m.q_proj.weight_quantizer.1":                 "m.q_proj.weight_quantizer",
		"m.experts.gate_up_proj_weight_quantizers.12": "m.experts.gate_up_proj_weight_quantizer",
	} {
		if got := normalizeFused(in); got != want {
			t.Errorf("normalizeFused(%q) = %q, want %q", in, got, want)
		}
	}
}

func tinyModel() *Model {
	s := []Slot{
		{Name: "emb.input_quantizer", Kind: InputSlot, ParentClass: "nn.Embedding", HardDisabled: true, Expert: -1},
		{Name: "emb.weight_quantizer", Kind: WeightSlot, ParentClass: "nn.Embedding", Weight: "emb.weight", Expert: -1, WeightShape: []int64{8, 256}},
		{Name: "fc.input_quantizer", Kind: InputSlot, ParentClass: "nn.Linear", Expert: -1},
		{Name: "fc.weight_quantizer", Kind: WeightSlot, ParentClass: "nn.Linear", Weight: "fc.weight", Expert: -1, WeightShape: []int64{16, 256}},
	}
	return &Model{Slots: s}
}

func TestApplyRuleSemantics(t *testing.T) {
	fp8 := numFP8()
	seq := Rule{QuantizerName: "*weight_quantizer", Cfg: []Attributes{numInt4PerBlock(), fp8}, CfgList: true}
	on := Rule{QuantizerName: "*", Enable: boolp(true)}

	// A list cfg makes a chain; enable alone broadcasts to its elements; the hard-disabled
	// embedding input stays disabled whatever enables it.
	q, err := Apply(&Recipe{Rules: []Rule{offRule("*"), seq, offRule("*"), on}}, tinyModel(), ApplyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"emb.input_quantizer", "emb.weight_quantizer.0", "emb.weight_quantizer.1", "fc.input_quantizer", "fc.weight_quantizer.0", "fc.weight_quantizer.1"}
	if !slices.Equal(q.Table.Names(), want) {
		t.Fatalf("names %v, want %v", q.Table.Names(), want)
	}
	if q.Table["emb.input_quantizer"].Enabled || q.Table["emb.input_quantizer"].Class != "HardDisabledTensorQuantizer" {
		t.Errorf("hard-disabled slot: %+v", q.Table["emb.input_quantizer"])
	}
	if !q.Table["fc.weight_quantizer.0"].Enabled || q.Table["fc.weight_quantizer.1"].NumBits != quant.BitsE4M3 {
		t.Errorf("chain: %+v %+v", q.Table["fc.weight_quantizer.0"], q.Table["fc.weight_quantizer.1"])
	}
	// Without calibration (algorithm None) the block quantizer keeps its attributes.
	if q.Table["fc.weight_quantizer.0"].Class != "TensorQuantizer" || q.Table["fc.weight_quantizer.0"].Axis != nil {
		t.Errorf("uncalibrated block quantizer changed: %+v", q.Table["fc.weight_quantizer.0"])
	}

	// A later dict cfg turns the chain back into one quantizer; a parent_class filter
	// limits a rule to the embedding; a cfg rule enables unless it says otherwise.
	emb := cfgRule("*", numInt8PerChannel())
	emb.ParentClass = "nn.Embedding"
	emb.Enable = boolp(false)
	r := &Recipe{Algorithm: "max", Rules: []Rule{offRule("*"), seq, cfgRule("*weight_quantizer", fp8), emb}}
	q, err = Apply(r, tinyModel(), ApplyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if g := q.Table.Names(); !slices.Equal(g, []string{"emb.input_quantizer", "emb.weight_quantizer", "fc.input_quantizer", "fc.weight_quantizer"}) {
		t.Fatalf("after downgrade: %v", g)
	}
	if w := q.Table["emb.weight_quantizer"]; w.Enabled || w.NumBits != quant.BitsInt8 || !slices.Equal(w.Axis, []int{0}) {
		t.Errorf("embedding weight quantizer %+v", w)
	}
	if w := q.Table["fc.weight_quantizer"]; !w.Enabled || w.NumBits != quant.BitsE4M3 || w.MaxBound == nil || *w.MaxBound != 448 {
		t.Errorf("fc weight quantizer %+v", w)
	}
	if s := q.AmaxShapes["fc.weight_quantizer"]; s == nil || len(s) != 0 {
		t.Errorf("per-tensor amax shape %v, want []", s)
	}

	// A list cfg that reaches a chain element (through the normalized name) would nest
	// SequentialQuantizers: refused.
	_, err = Apply(&Recipe{Rules: []Rule{seq, seq}}, tinyModel(), ApplyOptions{})
	if !errors.Is(err, ErrRecipe) {
		t.Errorf("nested chain: err = %v, want ErrRecipe", err)
	}
}
