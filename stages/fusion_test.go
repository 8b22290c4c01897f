package stages

import (
	"slices"
	"testing"

	"github.com/quantstream/quantstream/quant"
)

func int4Q() *quant.Quantizer {
	return &quant.Quantizer{Class: "StaticBlockScaleQuantizer", Enabled: true, NumBits: quant.BitsInt4, FakeQuant: true,
		Axis: []int{0}, AxisTuple: true, BlockSizes: &quant.BlockSizes{Dims: map[int]int{-1: 2}, Type: "static"}}
}

func floatsOf(t *testing.T, tt quant.Tensor) []float32 {
	t.Helper()
	v, err := quant.Float32s(tt)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestResmooth: the pre_quant_scales of a group are averaged, each weight is rescaled
// by old/new per input column, and the per-block amax is recalibrated.
func TestResmooth(t *testing.T) {
	sd := map[string]quant.Tensor{
		"a.weight":                           bf16Tensor([]int64{2, 2}, []float32{1, 1, 2, -4}),
		"a.weight_quantizer._amax":           {DType: quant.F32, Shape: []int64{2, 1}, Data: make([]byte, 8)},
		"a.input_quantizer._pre_quant_scale": bf16Tensor([]int64{2}, []float32{1, 2}),
		"b.weight":                           bf16Tensor([]int64{2, 2}, []float32{2, 1, 1, 1}),
		"b.weight_quantizer._amax":           {DType: quant.F32, Shape: []int64{2, 1}, Data: make([]byte, 8)},
		"b.input_quantizer._pre_quant_scale": bf16Tensor([]int64{2}, []float32{3, 2}),
	}
	var mods []*Module
	for _, n := range []string{"a", "b"} {
		m, err := (Reference{}).NewModule(n, sd, int4Q(), &quant.Quantizer{NumBits: quant.BitsInt8})
		if err != nil {
			t.Fatal(err)
		}
		if m.Format != "int4_awq" || m.PQS == "" {
			t.Fatalf("module %s: format %q, pqs %q", n, m.Format, m.PQS)
		}
		mods = append(mods, m)
	}
	out, err := (Reference{}).PreprocessLinearFusion(sd, mods, false, quant.DivIEEE)
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string][]float32{
		"a.weight":                           {0.5, 1, 1, -4},
		"b.weight":                           {3, 1, 1.5, 1},
		"a.input_quantizer._pre_quant_scale": {2, 2},
		"b.input_quantizer._pre_quant_scale": {2, 2},
		"a.weight_quantizer._amax":           {1, 4},
		"b.weight_quantizer._amax":           {3, 1.5},
	} {
		if got := floatsOf(t, out[name]); !slices.Equal(got, want) {
			t.Errorf("%s = %v, want %v", name, got, want)
		}
	}
	if got := floatsOf(t, sd["a.weight"]); !slices.Equal(got, []float32{1, 1, 2, -4}) {
		t.Errorf("input state dict modified: %v", got)
	}
}

func TestFusePrequantLayernorm(t *testing.T) {
	for _, tc := range []struct {
		name    string
		onePlus bool
		want    []float32
	}{
		{"plain", false, []float32{2, 1.5, 0.375}},
		// (w + 1) * p - 1, each step rounded to bf16: (1.5·3)−1, (1.25·1.5)−1 = 0.875
		{"gemma", true, []float32{3, 3.5, 0.875}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sd := map[string]quant.Tensor{
				"norm.weight":                          bf16Tensor([]int64{3}, []float32{1, 0.5, 0.25}),
				"lin.input_quantizer._pre_quant_scale": bf16Tensor([]int64{3}, []float32{2, 3, 1.5}),
			}
			m, err := (Reference{}).NewModule("lin", sd, nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			out, err := (Reference{}).FusePrequantLayernorm(sd, "norm", tc.onePlus, []*Module{m})
			if err != nil {
				t.Fatal(err)
			}
			if got := floatsOf(t, out["norm.weight"]); !slices.Equal(got, tc.want) {
				t.Fatalf("norm %v, want %v", got, tc.want)
			}
			if _, ok := out["lin.input_quantizer._pre_quant_scale"]; ok || !m.Fused {
				t.Fatal("pre_quant_scale kept or module not flagged fused")
			}
		})
	}
}

// TestGroupSharing: NVFP4 q/k/v share weight_scale_2 and input_scale (group max);
// FP8 per-tensor groups are not fused.
func TestGroupSharing(t *testing.T) {
	sd, qs := tinyLlama(1)
	plan, err := NewPlan(infosOf(sd), []byte(tinyLlamaConfig), qs, Options{})
	if err != nil {
		t.Fatal(err)
	}
	out := processLayer(t, plan, sd, 0)
	p := "model.layers.0.self_attn."
	for _, s := range []string{"weight_scale_2", "input_scale"} {
		q, k, v := scalarOf(t, out[p+"q_proj."+s]), scalarOf(t, out[p+"k_proj."+s]), scalarOf(t, out[p+"v_proj."+s])
		if q != k || k != v {
			t.Errorf("nvfp4 %s not shared: %v %v %v", s, q, k, v)
		}
	}
	for n, q := range qs {
		if q.NumBits == quant.BitsE2M1 {
			qs[n] = fp8Q(q.Enabled)
		}
	}
	plan, err = NewPlan(infosOf(sd), []byte(tinyLlamaConfig), qs, Options{})
	if err != nil {
		t.Fatal(err)
	}
	out = processLayer(t, plan, sd, 0)
	if scalarOf(t, out[p+"q_proj.input_scale"]) == scalarOf(t, out[p+"k_proj.input_scale"]) {
		t.Error("fp8 q/k input scales were fused")
	}
}

func TestAdjustAttnAmax(t *testing.T) {
	got, err := (Reference{}).AdjustAttnAmax(map[string]float32{"q_proj": 1, "k_proj": 3, "v_proj": 2, "o_proj": 9}, []string{"q_proj", "k_proj", "v_proj", "o_proj"})
	if err != nil {
		t.Fatal(err)
	}
	if got["q_proj"] != 3 || got["v_proj"] != 3 || got["o_proj"] != 9 {
		t.Fatalf("%v", got)
	}
	if _, err := (Reference{}).AdjustAttnAmax(map[string]float32{"o_proj": 1}, []string{"o_proj"}); err == nil {
		t.Fatal("no q/k/v child accepted")
	}
}
