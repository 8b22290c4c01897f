package stages

import (
	"errors"
	"strings"
	"testing"
)

// TestPlanReportsAllProblems: a plan lists every problem of every layer at once.
func TestPlanReportsAllProblems(t *testing.T) {
	sd, qs := tinyLlama(2)
	delete(sd, "model.layers.0.self_attn.o_proj.weight_quantizer._amax")
	delete(sd, "model.layers.1.mlp.down_proj.weight_quantizer._amax")
	infos := infosOf(sd)
	for i := range infos {
		if infos[i].Name == "model.layers.1.self_attn.o_proj.weight" {
			infos[i].Shape = []int64{32, 24} // 24 is not a multiple of the NVFP4 block 16
		}
	}
	p, err := NewPlan(infos, []byte(tinyLlamaConfig), qs, Options{})
	if !errors.Is(err, ErrMissingAmax) || !errors.Is(err, ErrShape) {
		t.Fatalf("got %v, want missing amax and shape errors", err)
	}
	if len(p.Problems) != 2 {
		t.Fatalf("%d problems (one per layer expected): %v", len(p.Problems), p.Problems)
	}
	for _, want := range []string{"o_proj", "down_proj", "24"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not mention %s: %v", want, err)
		}
	}
}

func TestPlanUnknownArchitecture(t *testing.T) {
	sd, qs := tinyLlama(1)
	if _, err := NewPlan(infosOf(sd), []byte(`{"architectures": ["RWKVForCausalLM"], "model_type": "rwkv"}`), qs, Options{}); !errors.Is(err, ErrUnknownArch) {
		t.Fatalf("got %v, want ErrUnknownArch", err)
	}
}

func TestPlanIncompleteAWQGroup(t *testing.T) {
	sd, qs := tinyLlama(1)
	for _, n := range []string{"q_proj", "k_proj"} {
		sd["model.layers.0.self_attn."+n+".input_quantizer._pre_quant_scale"] = bf16Tensor([]int64{32}, make([]float32, 32))
	}
	if _, err := NewPlan(infosOf(sd), []byte(tinyLlamaConfig), qs, Options{}); !errors.Is(err, ErrIncomplete) {
		t.Fatalf("q/k with pre_quant_scale and v without: %v, want ErrIncomplete", err)
	}
}

func TestPlanNothingQuantized(t *testing.T) {
	sd, qs := tinyLlama(1)
	for n, q := range qs {
		c := *q
		c.Enabled = false
		qs[n] = &c
	}
	// Disabled quantizers keep no buffers.
	for n := range sd {
		if strings.Contains(n, "_quantizer.") {
			delete(sd, n)
		}
	}
	p, err := NewPlan(infosOf(sd), []byte(tinyLlamaConfig), qs, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if p.QuantConfig != nil {
		t.Fatal("hf_quant_config for an unquantized model")
	}
	if n := len(p.Layer(0).Outputs); n != 9 {
		t.Fatalf("layer 0 has %d outputs, want the 9 weights and norms", n)
	}
}

// TestPlanVisionTowerIsNonDecoder: "layers.N." under a second, smaller base (a vision
// tower) goes to the non-decoder group, as arrowio groups checkpoints.
func TestPlanVisionTowerIsNonDecoder(t *testing.T) {
	sd, qs := tinyLlama(1)
	sd["model.visual.layers.0.attn.proj.weight"] = bf16Tensor([]int64{2, 2}, make([]float32, 4))
	p, err := NewPlan(infosOf(sd), []byte(tinyLlamaConfig), qs, Options{})
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, o := range p.Layer(-1).Outputs {
		found = found || o.Name == "model.visual.layers.0.attn.proj.weight"
	}
	if !found || p.Layer(0).Prefix != "model.layers.0." {
		t.Fatalf("vision tensor in the non-decoder group: %v; layer 0 prefix %q", found, p.Layer(0).Prefix)
	}
}
