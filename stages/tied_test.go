package stages

import (
	"errors"
	"slices"
	"strings"
	"testing"

	quantstream "github.com/quantstream/quantstream"
	"github.com/quantstream/quantstream/arch"
	"github.com/quantstream/quantstream/quant"
)

const tiedLlamaConfig = `{"architectures": ["LlamaForCausalLM"], "model_type": "llama", "dtype": "bfloat16", "tie_word_embeddings": true}`

func excludeModules(t *testing.T, p *Plan) []string {
	t.Helper()
	q, _ := p.QuantConfig.Get("quantization")
	ex, _ := q.(Obj).Get("exclude_modules")
	return ex.([]string)
}

// TestTiedLMHead: with tie_word_embeddings, lm_head is a module of its own (listed,
// so excluded) whether or not the input carries its weight, and the export drops the
// tied lm_head.weight a state dict holds.
func TestTiedLMHead(t *testing.T) {
	sd, qs := tinyLlama(1)
	p, err := NewPlan(infosOf(sd), []byte(tiedLlamaConfig), qs, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if ex := excludeModules(t, p); !slices.Equal(ex, []string{"lm_head", "model.embed_tokens"}) {
		t.Errorf("exclude_modules %v", ex)
	}
	out := processLayer(t, p, sd, quantstream.NonDecoder)
	if _, ok := out["lm_head.weight"]; ok {
		t.Error("the tied lm_head.weight is exported")
	}
	if _, ok := out["model.embed_tokens.weight"]; !ok {
		t.Error("the embedding is not exported")
	}

	// No lm_head.weight (a data-free base, a saved checkpoint): still listed.
	delete(sd, "lm_head.weight")
	p, err = NewPlan(infosOf(sd), []byte(tiedLlamaConfig), qs, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if ex := excludeModules(t, p); !slices.Equal(ex, []string{"lm_head", "model.embed_tokens"}) {
		t.Errorf("without lm_head.weight: exclude_modules %v", ex)
	}
	// Untied: a missing lm_head is no module.
	p, err = NewPlan(infosOf(sd), []byte(tinyLlamaConfig), qs, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if ex := excludeModules(t, p); !slices.Equal(ex, []string{"model.embed_tokens"}) {
		t.Errorf("untied: exclude_modules %v", ex)
	}
	// A tied lm_head with an enabled quantizer is refused, naming it.
	qs["lm_head.weight_quantizer"] = nvfp4Q(true)
	if _, err := NewPlan(infosOf(sd), []byte(tiedLlamaConfig), qs, Options{}); !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), "lm_head.weight_quantizer") {
		t.Fatalf("enabled tied lm_head: %v, want ErrUnsupported naming lm_head.weight_quantizer", err)
	}
}

// TestHubQuantizers: quantizers named in memory find hub-named tensors through the
// family's rename rules (Gemma 3 saved checkpoints); when the in-memory names match
// tensors, nothing moves; two quantizers mapped onto one name are refused.
func TestHubQuantizers(t *testing.T) {
	rn, err := arch.Parse("gemma3.json", []byte(`{"name": "gemma3", "model_types": ["gemma3"], "renames": [{"pattern": "^model\\.language_model\\.", "replace": "language_model.model."}]}`))
	if err != nil {
		t.Fatal(err)
	}
	hub := []quantstream.TensorInfo{{Name: "language_model.model.layers.0.mlp.up_proj.weight"}}
	qs := table{"model.language_model.layers.0.mlp.up_proj.weight_quantizer": nvfp4Q(true), "lm_head.weight_quantizer": nvfp4Q(false)}
	got, err := hubQuantizers(qs, hub, rn)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := got.Get("language_model.model.layers.0.mlp.up_proj.weight_quantizer"); !ok {
		t.Error("hub name not found")
	}
	if _, ok := got.Get("model.language_model.layers.0.mlp.up_proj.weight_quantizer"); ok {
		t.Error("in-memory name still found")
	}
	if want := []string{"language_model.model.layers.0.mlp.up_proj.weight_quantizer", "lm_head.weight_quantizer"}; !slices.Equal(got.Names(), want) {
		t.Errorf("names %v, want %v", got.Names(), want)
	}
	mem := []quantstream.TensorInfo{{Name: "model.language_model.layers.0.mlp.up_proj.weight"}}
	if got, _ := hubQuantizers(qs, mem, rn); !slices.Equal(got.Names(), qs.Names()) {
		t.Errorf("in-memory tensors: names %v", got.Names())
	}
	qs["language_model.model.layers.0.mlp.up_proj.weight_quantizer"] = nvfp4Q(true)
	if _, err := hubQuantizers(qs, hub, rn); !errors.Is(err, ErrConfig) {
		t.Fatalf("collision: %v, want ErrConfig", err)
	}
}

// TestFusionOutsideDecoderGroup: the language model's layers fuse even when a
// vision tower with more tensors per layer was taken for the decoder and they
// travel in the group outside it.
func TestFusionOutsideDecoderGroup(t *testing.T) {
	sd, qs := tinyLlama(1)
	p, err := NewPlan(infosOf(sd), []byte(tinyLlamaConfig), qs, Options{})
	if err != nil {
		t.Fatal(err)
	}
	whole := processLayer(t, p, sd, 0)
	// The same layer, planned as part of the non-decoder group.
	lp := &LayerPlan{Index: quantstream.NonDecoder}
	for _, h := range infosOf(sd) {
		if strings.HasPrefix(h.Name, "model.layers.0.") {
			lp.Inputs = append(lp.Inputs, h)
		}
	}
	p.layers[quantstream.NonDecoder] = lp
	out := processLayer(t, p, sd, quantstream.NonDecoder)
	for _, n := range []string{"q_proj", "k_proj", "v_proj"} {
		name := "model.layers.0.self_attn." + n + ".weight_scale_2"
		if !slices.Equal(out[name].Data, whole[name].Data) {
			t.Errorf("%s differs outside the decoder group", name)
		}
	}
	if slices.Equal(whole["model.layers.0.self_attn.q_proj.weight_scale_2"].Data, whole["model.layers.0.self_attn.o_proj.weight_scale_2"].Data) {
		t.Fatal("test data: q and o share a scale, the check proves nothing")
	}
}

// TestUncoveredPrefixRefused: quantizers named under a prefix that no rename rule
// maps onto the tensors (in-memory names of a family without the rule) are refused
// before any tensor is read, naming the weights, not exported unquantized.
func TestUncoveredPrefixRefused(t *testing.T) {
	hub := map[string]quant.Tensor{"language_model.model.layers.0.mlp.up_proj.weight": bf16Tensor([]int64{4, 16}, make([]float32, 64))}
	qs := table{"model.language_model.layers.0.mlp.up_proj.weight_quantizer": nvfp4Q(true)}
	const cfg = `{"architectures": ["Gemma3ForCausalLM"], "model_type": "gemma3_text", "dtype": "bfloat16"}`
	_, err := NewPlan(infosOf(hub), []byte(cfg), qs, Options{})
	if !errors.Is(err, ErrMissingWeight) || !strings.Contains(err.Error(), "model.language_model.layers.0.mlp.up_proj.weight") {
		t.Fatalf("err %v, want a refusal naming the weight the quantizer quantizes", err)
	}
	// With the family whose rules cover the prefix, it plans (the saved checkpoint's
	// buffers have hub names too).
	hub["language_model.model.layers.0.mlp.up_proj.weight_quantizer._amax"] = bf16Tensor([]int64{}, []float32{1})
	if _, err := NewPlan(infosOf(hub), []byte(`{"architectures": ["Gemma3ForConditionalGeneration"], "model_type": "gemma3", "dtype": "bfloat16"}`), qs, Options{}); err != nil {
		t.Fatalf("gemma3: %v", err)
	}
}
