package stages

import (
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/quantstream/quantstream/quant"
)

// TestLoneNormReaderFoldsAWQ: a module that alone reads a norm's output (Phi-3's
// fused qkv_proj) has its AWQ pre_quant_scale folded into that norm, as ModelOpt's
// requantize_resmooth_fused_llm_layers does for every hooked input that is a norm's
// output; a family without the rule leaves the norm alone.
func TestLoneNormReaderFoldsAWQ(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	const H = 32
	p := "model.layers.0."
	sd := map[string]quant.Tensor{}
	qs := table{}
	norm := make([]float32, H)
	pqs := make([]float32, H)
	for i := range norm {
		norm[i] = float32(0.5 + r.Float64())
		pqs[i] = float32(0.25 + r.Float64())
	}
	sd[p+"input_layernorm.weight"] = bf16Tensor([]int64{H}, norm)
	w := randVals(r, 3*H*H, 0.05)
	sd[p+"self_attn.qkv_proj.weight"] = bf16Tensor([]int64{3 * H, H}, w)
	wf, _ := quant.Float32s(sd[p+"self_attn.qkv_proj.weight"])
	sd[p+"self_attn.qkv_proj.weight_quantizer._amax"] = bf16Tensor([]int64{}, []float32{absMax(wf)})
	sd[p+"self_attn.qkv_proj.input_quantizer._amax"] = bf16Tensor([]int64{}, []float32{2})
	sd[p+"self_attn.qkv_proj.input_quantizer._pre_quant_scale"] = bf16Tensor([]int64{H}, pqs)
	qs[p+"self_attn.qkv_proj.weight_quantizer"] = nvfp4Q(true)
	qs[p+"self_attn.qkv_proj.input_quantizer"] = nvfp4Q(true)

	for _, tc := range []struct {
		config string
		folded bool
	}{
		{`{"architectures": ["Phi3ForCausalLM"], "model_type": "phi3", "dtype": "bfloat16"}`, true},
		{`{"architectures": ["MistralForCausalLM"], "model_type": "mistral", "dtype": "bfloat16"}`, false},
	} {
		plan, err := NewPlan(infosOf(sd), []byte(tc.config), qs, Options{})
		if err != nil {
			t.Fatal(err)
		}
		out := processLayer(t, plan, sd, 0)
		got, err := quant.Float32s(out[p+"input_layernorm.weight"])
		if err != nil {
			t.Fatal(err)
		}
		in, _ := quant.Float32s(sd[p+"input_layernorm.weight"])
		if folded := !slices.Equal(got, in); folded != tc.folded {
			t.Fatalf("%s: norm folded %v, want %v", tc.config, folded, tc.folded)
		}
		if tc.folded {
			ps, _ := quant.Float32s(sd[p+"self_attn.qkv_proj.input_quantizer._pre_quant_scale"])
			for i := range got {
				if want := quant.RoundTo(quant.BF16, in[i]*ps[i]); got[i] != want {
					t.Fatalf("norm[%d] = %v, want %v (w * pre_quant_scale)", i, got[i], want)
				}
			}
		}
	}
}
