package arch

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestBuiltin(t *testing.T) {
	if _, err := builtin(); err != nil {
		t.Fatal(err)
	}
	if len(Builtin().ModelTypes()) == 0 {
		t.Fatal("no built-in families")
	}
}

func TestDetect(t *testing.T) {
	for _, tc := range []struct {
		config, family string
		fusion         int
	}{
		{`{"model_type": "llama"}`, "llama", 2},
		{`{"architectures": ["Qwen3MoeForCausalLM"], "model_type": "qwen3_moe"}`, "qwen3_moe", 4},
		{`{"architectures": ["MixtralForCausalLM"]}`, "mixtral", 3},
		{`{"model_type": "deepseek_v3", "q_lora_rank": 1536}`, "deepseek_v3", 4},
		{`{"model_type": "gemma2"}`, "gemma2", 2},
		{`{"architectures": ["X"], "text_config": {"model_type": "gemma3_text"}}`, "gemma3_text", 2},
	} {
		c, err := ParseConfig([]byte(tc.config))
		if err != nil {
			t.Fatal(err)
		}
		a, err := Builtin().Detect(c)
		if err != nil {
			t.Fatalf("%s: %v", tc.config, err)
		}
		if a.Name != tc.family || len(a.Fusion) != tc.fusion {
			t.Errorf("%s: family %s with %d fusion rules, want %s with %d", tc.config, a.Name, len(a.Fusion), tc.family, tc.fusion)
		}
	}
	c, _ := ParseConfig([]byte(`{"architectures": ["MambaForCausalLM"], "model_type": "mamba"}`))
	_, err := Builtin().Detect(c)
	if !errors.Is(err, ErrUnknown) || !strings.Contains(err.Error(), "--arch") || !strings.Contains(err.Error(), "docs/arch-rules.md") {
		t.Fatalf("mamba: %v, want ErrUnknown saying how to add a family", err)
	}
}

func TestNormScale(t *testing.T) {
	for mt, want := range map[string]bool{"deepseek_v3": false, "llama": false, "gemma": true, "gemma2": true, "gemma3": true} {
		a, err := Builtin().Detect(&Config{ModelType: mt})
		if err != nil {
			t.Fatal(err)
		}
		if a.OnePlusNorm != want {
			t.Errorf("%s: one_plus_norm %v, want %v", mt, a.OnePlusNorm, want)
		}
	}
}

func TestLayerOf(t *testing.T) {
	for name, want := range map[string]int{
		"model.layers.3.mlp.up_proj.weight":       3,
		"model.language_model.layers.12.x.weight": 12,
		"backbone.layers.2.mixer.in_proj.weight":  2,
		"layers.4.attention.wq.weight":            4,
		"model.embed_tokens.weight":               -1,
		"lm_head.weight":                          -1,
		"model.layers.7.mlp.experts.5.w1.weight":  7,
		"model.mtp_layers.0.foo.weight":           -1,
		"model.layers.1234567890.x.weight":        -1,
	} {
		got, prefix := LayerOf(name)
		if got != want {
			t.Errorf("%s: layer %d, want %d", name, got, want)
		}
		if got >= 0 && !strings.HasPrefix(name, prefix) {
			t.Errorf("%s: prefix %q", name, prefix)
		}
	}
	if b := LayerBase(12, "model.language_model.layers.12."); b != "model.language_model." {
		t.Errorf("LayerBase = %q", b)
	}
}

// TestParseRefuses feeds malformed family files: each is refused naming the file and
// the key (or the rule) that is wrong.
func TestParseRefuses(t *testing.T) {
	const ok = `"name": "x", "model_types": ["x"]`
	for _, tc := range []struct{ name, file, want string }{
		{"unknown key", `{` + ok + `, "fusoin": []}`, `unknown field "fusoin"`},
		{"unknown nested key", `{` + ok + `, "fusion": [{"parent": "mlp", "members": ["a", "b"], "nrom": "n"}]}`, `unknown field "nrom"`},
		{"unknown experts key", `{` + ok + `, "experts": {"layouts": ["bmm"], "router": ["gate"]}}`, `unknown field "router"`},
		{"no name", `{"model_types": ["x"]}`, `"name" is missing`},
		{"never chosen", `{"name": "x"}`, `"model_types" is empty`},
		{"one member", `{` + ok + `, "fusion": [{"parent": "mlp", "members": ["a"]}]}`, `"fusion"[0] "members"`},
		{"no member", `{` + ok + `, "fusion": [{"parent": "mlp", "members": [], "norm": "n"}]}`, `"fusion"[0] "members"`},
		{"twice", `{` + ok + `, "fusion": [{"parent": "mlp", "members": ["a", "a"]}]}`, `lists "a" twice`},
		{"bad parent", `{` + ok + `, "fusion": [{"parent": "mlp.*.x", "members": ["a", "b"]}]}`, `"parent" "mlp.*.x"`},
		{"bad layout", `{` + ok + `, "experts": {"layouts": ["stacked"]}}`, `"layouts"[0] "stacked"`},
		{"no layout", `{` + ok + `, "experts": {}}`, `"layouts" is empty`},
		{"bad gate_up", `{` + ok + `, "experts": {"layouts": ["per_expert"], "gate_up": ["w1"]}}`, `"gate_up"`},
		{"bad regex", `{` + ok + `, "renames": [{"pattern": "^model\\.(", "replace": "x"}]}`, `"renames"[0] "pattern" "^model\\.("`},
		{"bad group", `{` + ok + `, "renames": [{"pattern": "^model\\.(a)", "replace": "$2"}]}`, `uses $2`},
		{"bad linear", `{` + ok + `, "linears": ["mlp\\.(up"]}`, `"linears"[0] "mlp\\.(up"`},
		{"empty linear", `{` + ok + `, "linears": [""]}`, `"linears"[0] is empty`},
		{"trailing", `{` + ok + `} {}`, `data after`},
		{"not json", `{` + ok, `unexpected EOF`},
		{"wrong type", `{"name": 3, "model_types": ["x"]}`, `name`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse("fam.json", []byte(tc.file))
			if !errors.Is(err, ErrFamily) || !strings.Contains(err.Error(), "fam.json") || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want ErrFamily naming fam.json and %s", err, tc.want)
			}
		})
	}
}

func TestUserFamily(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "mamba.json")
	if err := os.WriteFile(file, []byte(`{"name": "my_llama", "model_types": ["my_llama", "llama"],
		"fusion": [{"parent": "attn", "members": ["wq", "wk", "wv"], "norm": "attn_norm"}],
		"renames": [{"pattern": "^model\\.", "replace": "backbone."}]}`), 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := Load(file)
	if err != nil {
		t.Fatal(err)
	}
	r, err := Builtin().With(f)
	if err != nil {
		t.Fatal(err)
	}
	for _, mt := range []string{"my_llama", "llama"} {
		a, err := r.Detect(&Config{ModelType: mt})
		if err != nil || a.Name != "my_llama" || a.Source != file {
			t.Fatalf("%s: %v %+v: the user's family replaces the built-in one", mt, err, a)
		}
	}
	if a, _ := Builtin().Detect(&Config{ModelType: "llama"}); a.Name != "llama" {
		t.Fatal("With changed the built-in registry")
	}
	if got := f.HubName("model.layers.0.x.weight"); got != "backbone.layers.0.x.weight" {
		t.Fatalf("HubName = %q", got)
	}
	if _, err := r.With(f, f); !errors.Is(err, ErrFamily) {
		t.Fatalf("two files naming one model type: %v", err)
	}
	if _, err := Load(filepath.Join(dir, "none.json")); !errors.Is(err, ErrFamily) {
		t.Fatalf("missing file: %v", err)
	}
}

// TestKnowsLinear: the patterns match whole module names, relative to the decoder
// layer inside one and whole outside; a family without "linears" takes every module.
func TestKnowsLinear(t *testing.T) {
	llama, err := Builtin().Detect(&Config{ModelType: "llama"})
	if err != nil {
		t.Fatal(err)
	}
	for mod, want := range map[string]bool{
		"model.layers.0.self_attn.q_proj":        true,
		"model.layers.12.mlp.down_proj":          true,
		"lm_head":                                true,
		"model.layers.0.mlp.foo_proj":            false,
		"model.layers.0.mlp.up_proj_extra":       false, // anchored at the end
		"model.layers.0.block.mlp.up_proj":       false, // anchored at the start
		"extra.head":                             false,
		"model.lm_head":                          false,
		"model.layers.0.self_attn.q_proj.lora_A": false,
	} {
		if got := llama.KnowsLinear(mod); got != want {
			t.Errorf("llama.KnowsLinear(%q) = %v, want %v", mod, got, want)
		}
	}
	user, err := Parse("mine.json", []byte(`{"name": "mine", "model_types": ["mine"]}`))
	if err != nil {
		t.Fatal(err)
	}
	if !user.KnowsLinear("model.layers.0.anything") || !user.KnowsLinear("extra.head") {
		t.Fatal("a family without linears must take every module")
	}
	// Every built-in family lists its linears: without them a data-free export would
	// quantize any 2-D weight of the checkpoint.
	for _, mt := range Builtin().ModelTypes() {
		f, err := Builtin().Detect(&Config{ModelType: mt})
		if err != nil {
			t.Fatal(err)
		}
		if len(f.Linears) == 0 || f.KnowsLinear("model.layers.0.not_a_module_of_any_family") {
			t.Errorf("built-in family %s (%s) lists no linears", f.Name, mt)
		}
	}
}

// TestNemotronHNames: NemotronH's in-memory names map to the hub's with anchored
// rules, so the module names come out as ModelOpt meant them (its own unanchored
// "model." rule also rewrites its name sentinel: "lm_head.\x00backbone.pt_name_sentinel").
func TestNemotronHNames(t *testing.T) {
	f, err := Builtin().Detect(&Config{ModelType: "nemotron_h"})
	if err != nil {
		t.Fatal(err)
	}
	for mem, hub := range map[string]string{
		"model.embeddings.weight":                       "backbone.embedding.weight",
		"model.layers.3.mixer.experts.0.up_proj.weight": "backbone.layers.3.mixer.experts.0.up_proj.weight",
		"backbone.layers.0.mixer.in_proj.weight":        "backbone.layers.0.mixer.in_proj.weight", // hub names stay
		"backbone.embedding.weight":                     "backbone.embedding.weight",
		"lm_head.weight":                                "lm_head.weight",
	} {
		if got := f.HubName(mem); got != hub {
			t.Errorf("HubName(%s) = %s, want %s", mem, got, hub)
		}
	}
	for _, tc := range []struct{ in, mem, hub string }{
		{"lm_head", "lm_head", "lm_head"},
		{"backbone.embedding", "model.embeddings", "backbone.embeddings"}, // ModelOpt renames *.weight keys only
		{"model.embeddings", "model.embeddings", "backbone.embeddings"},
		{"backbone.layers.3.mixer.gate", "model.layers.3.mixer.gate", "backbone.layers.3.mixer.gate"},
	} {
		mem := f.MemoryModule(tc.in)
		hub, err := f.HubModule(mem)
		if mem != tc.mem || hub != tc.hub || err != nil {
			t.Errorf("%s: in memory %s, on the hub %s (%v); want %s, %s", tc.in, mem, hub, err, tc.mem, tc.hub)
		}
	}
}
