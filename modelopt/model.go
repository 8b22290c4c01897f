package modelopt

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/quantstream/quantstream/arch"
)

// ErrModel is returned when the checkpoint's structure cannot be mapped to the modules
// ModelOpt would quantize.
var ErrModel = errors.New("modelopt: cannot map checkpoint to quantized modules")

// SlotKind says what a quantizer quantizes.
type SlotKind uint8

const (
	WeightSlot SlotKind = iota // a weight quantizer (calibrated on its weight)
	InputSlot                  // an input (activation) quantizer
	OutputSlot                 // an output (activation) quantizer
	BMMSlot                    // an attention q/k/v/p_bmm quantizer (KV cache)
)

// Slot is one quantizer module mtq.quantize inserts into the model.
type Slot struct {
	Name string // quantizer module name, the prefix of its buffers in the state dict
	Kind SlotKind
	// ParentClass is the QuantModuleRegistry name of the module that owns the quantizer,
	// which quant_cfg's parent_class filters on: "nn.Linear", "nn.Embedding",
	// "<Arch>Attention", "hf.<Arch>Experts", or "nn.ModuleList" for a per-expert
	// quantizer (whose immediate parent is the ModuleList).
	ParentClass string
	// HardDisabled marks nn.Embedding's input slot (HardDisabledTensorQuantizer):
	// configs set its attributes but it is never enabled.
	HardDisabled bool
	// Weight is the tensor a weight quantizer is calibrated on, Expert the index into
	// its first dimension for a fused-experts weight (-1 otherwise), WeightShape the
	// shape the quantizer sees (the expert's slice for fused experts).
	Weight      string
	Expert      int
	WeightShape []int64
}

// Model is the quantizable structure of a Hugging Face checkpoint, as ModelOpt sees it
// after mtq.quantize replaced its modules: every nn.Linear gets weight, input and output
// quantizers; nn.Embedding gets a weight quantizer, a hard-disabled input quantizer and
// an output quantizer; every HF attention module gets q/k/v/p_bmm quantizers; a fused
// MoE experts module (transformers ≥ 5: 3-D gate_up_proj / down_proj) gets one weight
// quantizer per expert and one shared input quantizer per projection. The router of a
// fused MoE block (mlp.gate, a TopKRouter) is not an nn.Linear and gets none.
type Model struct {
	Arch   string // config.json architectures[0]
	Slots  []Slot // sorted by Name
	Shapes map[string][]int64
}

// ModelConfig is the part of config.json the structure depends on.
type ModelConfig struct {
	Architectures     []string     `json:"architectures"`
	ModelType         string       `json:"model_type"`
	TieWordEmbeddings *bool        `json:"tie_word_embeddings"`
	NumLocalExperts   int          `json:"num_local_experts"`
	NumExperts        int          `json:"num_experts"`
	TextConfig        *ModelConfig `json:"text_config"`
}

func (c *ModelConfig) experts() int {
	switch {
	case c.NumLocalExperts > 0:
		return c.NumLocalExperts
	case c.NumExperts > 0:
		return c.NumExperts
	case c.TextConfig != nil:
		return c.TextConfig.experts()
	}
	return 0
}

// embeddingNames are the module names transformers gives nn.Embedding layers.
var embeddingNames = map[string]bool{
	"embed_tokens": true, "wte": true, "wpe": true, "word_embeddings": true,
	"tok_embeddings": true, "embed_in": true, "embed_positions": true, "position_embeddings": true,
	// NemotronH: backbone.embedding on disk, model.embeddings in memory.
	"embedding": true, "embeddings": true,
}

// NewModel derives the quantizer slots from config.json and the checkpoint's tensor
// shapes (name → shape, e.g. from the safetensors headers).
func NewModel(config []byte, shapes map[string][]int64) (*Model, error) {
	var cfg ModelConfig
	if err := json.Unmarshal(config, &cfg); err != nil {
		return nil, fmt.Errorf("%w: config.json: %v", ErrModel, err)
	}
	m := &Model{Shapes: shapes}
	if len(cfg.Architectures) > 0 {
		m.Arch = cfg.Architectures[0]
	}
	prefix := m.Arch
	for _, suf := range []string{"ForCausalLM", "ForConditionalGeneration", "LMHeadModel", "Model"} {
		prefix = strings.TrimSuffix(prefix, suf)
	}

	names := make([]string, 0, len(shapes))
	for n := range shapes {
		names = append(names, n)
	}
	sort.Strings(names)

	// Fused experts: <mod>.experts.{gate_up_proj|up_proj, down_proj} as 3-D parameters.
	fused := map[string]bool{}
	for _, n := range names {
		mod, param, ok := cut(n)
		if ok && strings.HasSuffix(mod, "experts") && (param == "gate_up_proj" || param == "down_proj") && len(shapes[n]) == 3 {
			fused[mod] = true
		}
	}
	// Batched-matmul experts (GptOssExperts, Llama4TextExperts: [E, in, out]) have one
	// weight and one input quantizer per projection, not one per expert; only the
	// family tells the two 3-D layouts apart (a square expert would fit both).
	bmm := false
	fam, err := arch.Builtin().Detect(&arch.Config{ModelType: cfg.ModelType, Architectures: cfg.Architectures, TextConfig: textConfig(cfg.TextConfig)})
	if err != nil {
		fam = nil // stages' plan refuses the unknown family, naming it
	}
	if fam != nil {
		bmm = fam.Allows(arch.BMM) && !fam.Allows(arch.Fused3D)
		for _, mod := range sortedSet(fused) {
			if err := checkExpertsShapes(mod, shapes, bmm, fam.Name); err != nil {
				return nil, err
			}
		}
	}
	// Blocks whose experts transformers ≥ 5 fuses on load even from per-expert hub
	// tensors (arch.Experts.FusedInMemory): their router is a TopKRouter there too.
	perExpert := map[string]bool{}
	if fam != nil && fam.FusedInMemory() {
		for _, n := range names {
			if i := strings.Index(n, ".experts."); i >= 0 {
				perExpert[n[:i]+".experts"] = true
			}
		}
	}
	expertsClass := "hf." + prefix + "Experts"
	if fam != nil && fam.Experts != nil && fam.Experts.Class != "" {
		expertsClass = fam.Experts.Class
	}
	seen := map[string]bool{}
	add := func(s Slot) error {
		if seen[s.Name] {
			return fmt.Errorf("%w: quantizer %q derived twice", ErrModel, s.Name)
		}
		seen[s.Name] = true
		m.Slots = append(m.Slots, s)
		return nil
	}
	attn := map[string]bool{}
	linear := func(mod, weight string, shape []int64) error {
		for _, s := range []Slot{
			{Name: mod + ".weight_quantizer", Kind: WeightSlot, Weight: weight, WeightShape: shape},
			{Name: mod + ".input_quantizer", Kind: InputSlot},
			{Name: mod + ".output_quantizer", Kind: OutputSlot},
		} {
			s.ParentClass, s.Expert = "nn.Linear", -1
			if err := add(s); err != nil {
				return err
			}
		}
		return nil
	}
	for _, n := range names {
		mod, param, ok := cut(n)
		if !ok {
			continue
		}
		shape := shapes[n]
		switch {
		case bmm && fused[mod] && (param == "gate_up_proj" || param == "down_proj"):
			cls := expertsClass
			for _, s := range []Slot{
				{Name: mod + "." + param + "_weight_quantizer", Kind: WeightSlot, Weight: n, WeightShape: shape},
				{Name: mod + "." + param + "_input_quantizer", Kind: InputSlot},
			} {
				s.ParentClass, s.Expert = cls, -1
				if err := add(s); err != nil {
					return nil, err
				}
			}
		case fused[mod] && (param == "gate_up_proj" || param == "down_proj"):
			if len(shape) != 3 || shape[0] <= 0 || shape[0] > 1<<16 {
				return nil, fmt.Errorf("%w: fused experts %s has shape %v", ErrModel, n, shape)
			}
			if e := cfg.experts(); e > 0 && shape[0] != int64(e) {
				return nil, fmt.Errorf("%w: fused experts %s has %d experts, config.json says %d", ErrModel, n, shape[0], e)
			}
			cls := expertsClass
			if err := add(Slot{Name: mod + "." + param + "_input_quantizer", Kind: InputSlot, ParentClass: cls, Expert: -1}); err != nil {
				return nil, err
			}
			for e := range shape[0] {
				if err := add(Slot{
					Name: mod + "." + param + "_weight_quantizers." + strconv.FormatInt(e, 10), Kind: WeightSlot,
					ParentClass: "nn.ModuleList", Weight: n, Expert: int(e), WeightShape: shape[1:],
				}); err != nil {
					return nil, err
				}
			}
		case param == "weight" && len(shape) == 3:
			// An nn.Conv1d (Mamba's mixer.conv1d, a gated delta net's linear_attn.conv1d):
			// ModelOpt's QuantConv1d has the quantizers of a linear layer (default
			// recipes disable them by name, so they are listed in exclude_modules).
			for _, s := range []Slot{
				{Name: mod + ".weight_quantizer", Kind: WeightSlot, Weight: n, WeightShape: shape},
				{Name: mod + ".input_quantizer", Kind: InputSlot},
				{Name: mod + ".output_quantizer", Kind: OutputSlot},
			} {
				s.ParentClass, s.Expert = "nn.Conv1d", -1
				if err := add(s); err != nil {
					return nil, err
				}
			}
		case param == "weight" && len(shape) == 2:
			_, last, _ := cut(mod)
			if last == "" {
				last = mod
			}
			parent, _, _ := cut(mod)
			switch {
			case last == "embed_tokens" && fam != nil && fam.ScaledEmbedding:
				// An nn.Embedding subclass with its own forward, which
				// QuantModuleRegistry does not convert: no quantizers.
			case embeddingNames[last]:
				for _, s := range []Slot{
					{Name: mod + ".weight_quantizer", Kind: WeightSlot, Weight: n, WeightShape: shape},
					{Name: mod + ".input_quantizer", Kind: InputSlot, HardDisabled: true},
					{Name: mod + ".output_quantizer", Kind: OutputSlot},
				} {
					s.ParentClass, s.Expert = "nn.Embedding", -1
					if err := add(s); err != nil {
						return nil, err
					}
				}
			case (fused[parent+".experts"] || perExpert[parent+".experts"]) && (last == "gate" || fam != nil && slices.Contains(fam.Routers(), last)):
				// transformers ≥ 5 routers of fused MoE blocks are TopKRouter modules
				// holding a weight parameter, not nn.Linear, and those of batched-matmul
				// experts (GptOssTopKRouter; Llama4Router, an nn.Linear with its own
				// forward) are not converted either: ModelOpt leaves them alone.
			default:
				if err := linear(mod, n, shape); err != nil {
					return nil, err
				}
				if last == "q_proj" || last == "qkv_proj" || last == "query_key_value" || last == "c_attn" {
					attn[parent] = true
				}
			}
		}
	}
	tied := cfg.TieWordEmbeddings != nil && *cfg.TieWordEmbeddings
	if cfg.TieWordEmbeddings == nil && cfg.TextConfig != nil && cfg.TextConfig.TieWordEmbeddings != nil {
		tied = *cfg.TextConfig.TieWordEmbeddings
	}
	if _, ok := shapes["lm_head.weight"]; !ok && tied && (strings.HasSuffix(m.Arch, "ForCausalLM") || strings.HasSuffix(m.Arch, "ForConditionalGeneration")) {
		// A tied lm_head is still an nn.Linear module of its own (its weight is the
		// embedding's), so it has quantizers even though the checkpoint has no tensor.
		var emb string
		for _, n := range names {
			if strings.HasSuffix(n, "embed_tokens.weight") {
				if emb != "" {
					return nil, fmt.Errorf("%w: lm_head is tied (tie_word_embeddings) to the embedding, and both %s and %s are one", ErrModel, emb, n)
				}
				emb = n
			}
		}
		if emb == "" {
			return nil, fmt.Errorf("%w: lm_head is tied (tie_word_embeddings), but no tensor is an embed_tokens.weight to tie it to", ErrModel)
		}
		if err := linear("lm_head", emb, shapes[emb]); err != nil {
			return nil, err
		}
	}
	for a := range attn {
		for _, q := range []string{"q_bmm_quantizer", "k_bmm_quantizer", "v_bmm_quantizer", "p_bmm_quantizer"} {
			if err := add(Slot{Name: a + "." + q, Kind: BMMSlot, ParentClass: prefix + "Attention", Expert: -1}); err != nil {
				return nil, err
			}
		}
	}
	sort.Slice(m.Slots, func(i, j int) bool { return m.Slots[i].Name < m.Slots[j].Name })
	return m, nil
}

// checkExpertsShapes checks a 3-D experts container against the layout its family
// gives it. Gated experts tell the layouts apart by shape: fused gate_up_proj
// [E, 2I, H] goes with down_proj [E, H, I], batched-matmul [E, H, 2I] with
// [E, I, H]; a pair that fits neither, or not the family's, would be cut along the
// wrong axis, so it is refused.
func checkExpertsShapes(mod string, shapes map[string][]int64, bmm bool, family string) error {
	gu, dn := shapes[mod+".gate_up_proj"], shapes[mod+".down_proj"]
	if gu == nil || dn == nil {
		return nil // up_proj-only experts, or a lone tensor: NewModel's own checks
	}
	if len(gu) == 3 && len(dn) == 3 && gu[0] == dn[0] {
		if bmm && gu[1] == dn[2] && gu[2] == 2*dn[1] {
			return nil
		}
		if !bmm && gu[2] == dn[1] && gu[1] == 2*dn[2] {
			return nil
		}
	}
	want := "fused experts [E, 2I, H] / [E, H, I]"
	if bmm {
		want = "batched-matmul experts [E, H, 2I] / [E, I, H]"
	}
	return fmt.Errorf("%w: %s: gate_up_proj %v and down_proj %v are not %s, the layout family %s gives them; fix the family's experts.layouts (--arch FILE, docs/arch-rules.md) or the checkpoint", ErrModel, mod, gu, dn, want, family)
}

func sortedSet(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// textConfig is the text config's model type, for family detection.
func textConfig(c *ModelConfig) *arch.Config {
	if c == nil {
		return nil
	}
	return &arch.Config{ModelType: c.ModelType, Architectures: c.Architectures}
}

// cut splits "a.b.c" into "a.b" and "c".
func cut(name string) (string, string, bool) {
	i := strings.LastIndexByte(name, '.')
	if i < 0 {
		return "", "", false
	}
	return name[:i], name[i+1:], true
}
