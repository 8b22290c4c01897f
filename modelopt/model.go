package modelopt

import (
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

// embeddingNames are the module names transformers gives nn.Embedding layers.
var embeddingNames = map[string]bool{
	"embed_tokens": true, "wte": true, "wpe": true, "word_embeddings": true,
	"tok_embeddings": true, "embed_in": true, "embed_positions": true, "position_embeddings": true,
	// NemotronH: backbone.embedding on disk, model.embeddings in memory.
	"embedding": true, "embeddings": true,
}

// NewModel derives the quantizer slots from config.json and the checkpoint's tensor
// shapes (name → shape, e.g. from the safetensors headers), for a model of a built-in
// family (arch.Builtin); NewModelFor takes the family a caller detected in its own
// registry (convert --arch).
func NewModel(config []byte, shapes map[string][]int64) (*Model, error) {
	cfg, fam, err := detect(config, arch.Builtin())
	if err != nil {
		return nil, err
	}
	return NewModelFor(cfg, fam, shapes)
}

// detect parses config.json and picks its family in reg; an unknown family is an
// error (arch.ErrUnknown), never a guess.
func detect(config []byte, reg *arch.Registry) (*arch.Config, *arch.Family, error) {
	cfg, err := arch.ParseConfig(config)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %w", ErrModel, err)
	}
	fam, err := reg.Detect(cfg)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %w", ErrModel, err)
	}
	return cfg, fam, nil
}

// NewModelFor derives the quantizer slots of a model of family fam (detected from cfg
// in the registry the export plan uses, so that both apply the same rules) from the
// checkpoint's tensor shapes. Without a family there is nothing to derive them from:
// the experts layout, the routers and the embedding's class are the family's.
func NewModelFor(cfg *arch.Config, fam *arch.Family, shapes map[string][]int64) (*Model, error) {
	if cfg == nil || fam == nil {
		return nil, fmt.Errorf("%w: no config.json or no model family: the family decides the experts layout and which modules have quantizers (docs/arch-rules.md)", ErrModel)
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
		if ok && strings.HasSuffix(mod, "experts") && (param == "gate_up_proj" || param == "up_proj" || param == "down_proj") && len(shapes[n]) == 3 {
			fused[mod] = true
		}
	}
	// Batched-matmul experts (GptOssExperts, Llama4TextExperts: [E, in, out]) have one
	// weight and one input quantizer per projection, not one per expert; the family's
	// layouts and the shapes tell the two 3-D layouts apart (expertsLayout).
	bmm := map[string]bool{}
	for _, mod := range sortedSet(fused) {
		b, err := expertsLayout(mod, shapes, fam)
		if err != nil {
			return nil, err
		}
		bmm[mod] = b
	}
	// Blocks whose experts transformers ≥ 5 fuses on load even from per-expert hub
	// tensors (arch.Experts.FusedInMemory): their router is a TopKRouter there too.
	perExpert := map[string]bool{}
	if fam.FusedInMemory() {
		for _, n := range names {
			if i := strings.Index(n, ".experts."); i >= 0 {
				perExpert[n[:i]+".experts"] = true
			}
		}
	}
	expertsClass := "hf." + prefix + "Experts"
	if fam.Experts != nil && fam.Experts.Class != "" {
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
	// Weights of modules the family does not list (arch.Family.Linears), found all at
	// once: quantizing them would be a guess about a module transformers would not
	// load into the model ModelOpt exports.
	var unknown []string
	known := func(mod, tensor string) bool {
		if fam.KnowsLinear(mod) {
			return true
		}
		unknown = append(unknown, tensor)
		return false
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
		case (fused[mod] || param == "weight" && len(shape) == 3) && !known(mod, n):
		case bmm[mod] && (param == "gate_up_proj" || param == "up_proj" || param == "down_proj"):
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
		case fused[mod] && (param == "gate_up_proj" || param == "up_proj" || param == "down_proj"):
			if len(shape) != 3 || shape[0] <= 0 || shape[0] > 1<<16 {
				return nil, fmt.Errorf("%w: fused experts %s has shape %v", ErrModel, n, shape)
			}
			if e := cfg.Experts(); e > 0 && shape[0] != e {
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
			case last == "embed_tokens" && fam.ScaledEmbedding:
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
			case (fused[parent+".experts"] || perExpert[parent+".experts"]) && (last == "gate" || slices.Contains(fam.Routers(), last)):
				// transformers ≥ 5 routers of fused MoE blocks are TopKRouter modules
				// holding a weight parameter, not nn.Linear, and those of batched-matmul
				// experts (GptOssTopKRouter; Llama4Router, an nn.Linear with its own
				// forward) are not converted either: ModelOpt leaves them alone.
			case !known(mod, n):
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
	if len(unknown) > 0 {
		more := ""
		if len(unknown) > 5 {
			more = fmt.Sprintf(" and %d more", len(unknown)-5)
			unknown = unknown[:5]
		}
		return nil, fmt.Errorf("%w: tensor(s) %s%s: their module is none of the linear modules family %s (%s) lists, so transformers would not load them into the model ModelOpt quantizes (an extra or renamed module?) and quantstream will not quantize them on a guess; remove them from the checkpoint, or, if they are part of the model, list the module in \"linears\" of a family file and pass it with --arch (docs/arch-rules.md)",
			ErrModel, strings.Join(unknown, ", "), more, fam.Name, fam.Source)
	}
	if _, ok := shapes["lm_head.weight"]; !ok && cfg.Tied() && (strings.HasSuffix(m.Arch, "ForCausalLM") || strings.HasSuffix(m.Arch, "ForConditionalGeneration")) {
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

// expertsLayout reports whether the 3-D experts container mod holds batched-matmul
// experts (true) or transformers-5 fused ones (false), from the layouts its family
// lists and the shapes. Fused experts are [E, k·I, H] / down_proj [E, H, I],
// batched-matmul ones [E, H, k·I] / [E, I, H] (k = 2 for gate_up_proj, 1 for a
// non-gated up_proj). A pair that fits no layout the family lists, a projection
// without its partner, or non-gated experts of a family that lists both layouts
// (square pairs fit both) would be cut along a guessed axis, so they are refused. A
// family that lists neither layout gets false: the export plan refuses the layout,
// naming it.
func expertsLayout(mod string, shapes map[string][]int64, fam *arch.Family) (bool, error) {
	canB, canF := fam.Allows(arch.BMM), fam.Allows(arch.Fused3D)
	if !canB && !canF {
		return false, nil
	}
	first, attr, k := shapes[mod+".gate_up_proj"], "gate_up_proj", int64(2)
	if first == nil {
		first, attr, k = shapes[mod+".up_proj"], "up_proj", 1
	}
	dn := shapes[mod+".down_proj"]
	fix := fmt.Sprintf("fix the family's experts.layouts (%s, --arch FILE, docs/arch-rules.md) or the checkpoint", fam.Source)
	if first == nil || dn == nil || len(first) != 3 || len(dn) != 3 || first[0] != dn[0] {
		return false, fmt.Errorf("%w: experts %s: %s %v with down_proj %v are not a pair of 3-D experts weights of one expert count; %s", ErrModel, mod, attr, first, dn, fix)
	}
	fitsB := first[1] == dn[2] && first[2] == k*dn[1]
	fitsF := first[2] == dn[1] && first[1] == k*dn[2]
	switch {
	case canB && canF && fitsB && fitsF:
		return false, fmt.Errorf("%w: experts %s: non-gated %s %v / down_proj %v fit both the fused [E, I, H] and the batched-matmul [E, H, I] layout, and family %s lists both; list the one its checkpoints use (%s, --arch FILE, docs/arch-rules.md)", ErrModel, mod, attr, first, dn, fam.Name, fam.Source)
	case canB && fitsB:
		return true, nil
	case canF && fitsF:
		return false, nil
	}
	var want []string
	if canF {
		want = append(want, fmt.Sprintf("fused experts [E, %sI, H] / [E, H, I]", map[int64]string{1: "", 2: "2"}[k]))
	}
	if canB {
		want = append(want, fmt.Sprintf("batched-matmul experts [E, H, %sI] / [E, I, H]", map[int64]string{1: "", 2: "2"}[k]))
	}
	return false, fmt.Errorf("%w: experts %s: %s %v and down_proj %v are not %s, the layouts family %s gives them; %s", ErrModel, mod, attr, first, dn, strings.Join(want, " or "), fam.Name, fix)
}

func sortedSet(m map[string]bool) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// cut splits "a.b.c" into "a.b" and "c".
func cut(name string) (string, string, bool) {
	i := strings.LastIndexByte(name, '.')
	if i < 0 {
		return "", "", false
	}
	return name[:i], name[i+1:], true
}
