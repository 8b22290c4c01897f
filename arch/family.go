package arch

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strings"
)

// Errors a caller can act on.
var (
	// ErrUnknown: no family describes the model (add one with convert --arch FILE).
	ErrUnknown = errors.New("arch: unknown architecture")
	// ErrFamily: a family file is malformed; the message names the file and the key.
	ErrFamily = errors.New("arch: bad family file")
	// ErrConfig: config.json cannot be read.
	ErrConfig = errors.New("arch: bad model config")
)

// Family is the model rules of one architecture family. The JSON names below are the
// family file format (docs/arch-rules.md); they are part of that format.
type Family struct {
	// Name identifies the family in messages.
	Name string `json:"name"`
	// Notes say why the rules are what they are (the ModelOpt or transformers
	// behaviour each stands in for). Not read by the converter.
	Notes []string `json:"notes,omitempty"`
	// ModelTypes are the config.json model_type values the family covers.
	ModelTypes []string `json:"model_types"`
	// Architectures are config.json architectures class names, matched when the
	// model_type is none of the families'.
	Architectures []string `json:"architectures,omitempty"`
	// LayerBases are the prefixes decoder layers may be under ("model." for
	// "model.layers.N."); nil means ["model."]. Decoder layers under another prefix
	// are refused: the rules name modules relative to these.
	LayerBases []string `json:"layer_bases,omitempty"`
	// OnePlusNorm: the norms scale by (1 + w) (Gemma), which the AWQ norm fold
	// must know.
	OnePlusNorm bool `json:"one_plus_norm,omitempty"`
	// ScaledEmbedding: the token embedding (embed_tokens) is an nn.Embedding subclass
	// with its own forward (Gemma 2/3's ScaledWordEmbedding). QuantModuleRegistry only
	// converts subclasses that keep the registered class's forward
	// (_get_registered_nn_class), so it gets no quantizers and is not listed in
	// exclude_modules; a plain nn.Embedding (Llama's) is.
	ScaledEmbedding bool `json:"scaled_embedding,omitempty"`
	// Fusion lists the module groups that read one input tensor.
	Fusion []FusionRule `json:"fusion,omitempty"`
	// Prequant lists fuse_prequant_to_linear's folds (nvfp4_awq only).
	Prequant []PrequantRule `json:"prequant,omitempty"`
	// Experts describes the MoE blocks; nil for a family without experts, whose
	// checkpoints must then hold no expert tensors.
	Experts *Experts `json:"experts,omitempty"`
	// Renames map in-memory names (transformers ≥ 5, after its load-time conversion)
	// to the names on disk ("hub names"); nil when the two agree. See Rename.
	Renames []Rename `json:"renames,omitempty"`
	// FromHub maps module names on disk to the in-memory ones, where the two differ
	// beyond what Renames undoes (NemotronH's backbone.embedding is
	// model.embeddings in memory): ModelOpt names modules in exclude_modules in memory
	// and maps them with Renames, so a hub-named input (data-free) must name them the
	// same way. Rules as Renames'; they must leave in-memory names unchanged.
	FromHub []Rename `json:"from_hub,omitempty"`
	// Linears are the modules of the model that hold a matrix weight ModelOpt gives
	// quantizers (nn.Linear, the nn.Conv1d of a mixer, a fused or batched-matmul
	// experts container), as Go regular expressions matched against a whole module
	// name: relative to its decoder layer inside one ("self_attn.q_proj",
	// "mlp.experts.[0-9]+.up_proj", "mlp.experts"), the full name outside
	// ("lm_head"). Embeddings and routers are told by name and need no entry. A
	// data-free export derives quantizers from the checkpoint's names alone, so a
	// weight of a module no entry matches (an extra or renamed module, which
	// transformers would not load into the model ModelOpt exports) is refused rather
	// than quantized as a guess. Empty: every such weight is taken as a linear (a
	// user's family file that does not list them).
	Linears []string `json:"linears,omitempty"`

	linears []*regexp.Regexp

	// Filled in by Registry.Detect from config.json, for messages.
	ModelType    string `json:"-"`
	Architecture string `json:"-"`
	// Source is where the rules came from: "built-in families/llama.json" or the
	// path of a user's family file.
	Source string `json:"-"`
}

// FusionRule names modules of one parent that read the same input tensor in the
// Hugging Face forward (ModelOpt finds them with a dummy forward; we know them by name).
// Members are the module names relative to the parent; Norm is the sibling norm
// (relative to the decoder layer) whose output is that input, "" when the input is not
// a norm's output object (routed expert slices, reshaped views).
type FusionRule struct {
	Parent  string   `json:"parent"`         // relative to the layer: "self_attn", "mlp.experts.*"
	Members []string `json:"members"`        // e.g. q_proj, k_proj, v_proj
	Norm    string   `json:"norm,omitempty"` // e.g. input_layernorm
}

// PrequantRule is one fuse_prequant_to_linear pattern: the pre_quant_scale of Source
// is folded into the output rows of Target (both under Parent). Only for nvfp4_awq.
type PrequantRule struct {
	Parent string `json:"parent"`
	Source string `json:"source"`
	Target string `json:"target"`
}

// Layout is a way MoE experts are stored.
type Layout string

// The expert layouts; these strings are part of the family file format.
const (
	// PerExpert: one module per expert, "<block>.experts.<e>.<proj>.weight" (hub
	// names of Mixtral, Qwen-MoE, DeepSeek).
	PerExpert Layout = "per_expert"
	// Fused3D: transformers 5's load-time fusion, "<block>.experts.gate_up_proj"
	// [E, 2I, H] and "down_proj" [E, H, I] with one weight quantizer per expert
	// ("gate_up_proj_weight_quantizers.<e>"); the export splits them per expert.
	Fused3D Layout = "fused_3d"
	// BMM: batched-matmul experts (GPT-OSS, Llama-4), "<block>.experts.gate_up_proj"
	// [E, H, 2I] (input before output) with one quantizer for all experts; the
	// export keeps them fused.
	BMM Layout = "bmm"
)

var layouts = []Layout{PerExpert, Fused3D, BMM}

// Experts describes a family's MoE blocks.
type Experts struct {
	// Layouts are the layouts a checkpoint of the family may hold its experts in;
	// any other is refused.
	Layouts []Layout `json:"layouts"`
	// GateUp is the (gate, up) expert projection pair whose weight amax
	// sync_moe_gate_up_amax makes equal; empty when the experts have none.
	GateUp []string `json:"gate_up,omitempty"`
	// Class is the QuantModuleRegistry name of a fused or batched-matmul experts
	// module ("hf.GptOssExperts"), which recipes' parent_class rules match; ""
	// derives "hf.<Arch>Experts" from the architecture's class name.
	Class string `json:"class,omitempty"`
	// Routers are the router attribute names of an MoE block
	// (_get_unquantized_moe_router_names: gate, router, shared_expert_gate); an
	// unquantized one is listed in exclude_modules.
	Routers []string `json:"routers,omitempty"`
	// AWQ: ModelOpt's get_experts_list knows this family's experts, so AWQ models
	// with per-expert modules can be resmoothed (otherwise it raises).
	AWQ bool `json:"awq,omitempty"`
	// FusedInMemory: transformers ≥ 5 loads the routed experts as one fused module
	// (experts.gate_up_proj [E, 2I, H], experts.down_proj), even from per-expert hub
	// tensors, with one weight quantizer per expert over gate and up together. Gate
	// and up then share a per-tensor amax but keep their own rows of a per-channel or
	// per-block one, and sync_moe_gate_up_amax does not reach them (the experts
	// module is not iterable).
	FusedInMemory bool `json:"fused_in_memory,omitempty"`
}

// Rename maps an in-memory name to the name the model hub checkpoint uses: Go regexp
// Pattern replaced by Replace ($1, ${1} for groups), on every match. It is the reverse
// of one transformers conversion_mapping entry, as ModelOpt's
// quant_aware_conversion.build_reverse_name_mapper derives it: ModelOpt applies these
// rules to every exported tensor name and to the module names of
// hf_quant_config.json (exclude_modules, quantized_layers), so an export of a model
// loaded with in-memory names (a state dict, a save_pretrained(save_original_format=
// False) folder) writes the hub names engines load.
//
// Rules are applied in order, each to the result of the previous one. A tensor name
// is the module name plus a leaf (".weight", ".weight_scale", ...); a module name is
// matched as name + ".\x00" so that a pattern ending in "\." also matches a module
// at the end of the name (ModelOpt's sentinel). Rules must leave hub names unchanged
// (they are applied to checkpoints that have hub names already, the data-free input).
type Rename struct {
	Pattern string `json:"pattern"`
	Replace string `json:"replace"`

	re *regexp.Regexp
}

// Allows reports whether the family's experts may come in layout l.
func (f *Family) Allows(l Layout) bool {
	return f.Experts != nil && slices.Contains(f.Experts.Layouts, l)
}

// Bases is LayerBases, or ["model."] when the family does not say.
func (f *Family) Bases() []string {
	if len(f.LayerBases) == 0 {
		return []string{"model."}
	}
	return f.LayerBases
}

// GateUp is the experts' (gate, up) pair, or two empty names.
func (f *Family) GateUp() [2]string {
	if f.Experts == nil || len(f.Experts.GateUp) != 2 {
		return [2]string{}
	}
	return [2]string{f.Experts.GateUp[0], f.Experts.GateUp[1]}
}

// Routers are the experts' router attribute names, none without experts.
func (f *Family) Routers() []string {
	if f.Experts == nil {
		return nil
	}
	return f.Experts.Routers
}

// FusedInMemory reports Experts.FusedInMemory.
func (f *Family) FusedInMemory() bool { return f.Experts != nil && f.Experts.FusedInMemory }

// AWQExperts reports whether AWQ can resmooth the family's per-expert modules.
func (f *Family) AWQExperts() bool { return f.Experts != nil && f.Experts.AWQ }

// KnowsLinear reports whether module (a full module name, e.g.
// "model.layers.3.mlp.up_proj") is one of the family's Linears; true when the family
// lists none.
func (f *Family) KnowsLinear(module string) bool {
	if len(f.linears) == 0 {
		return true
	}
	name := module
	if idx, prefix := LayerOf(module + "."); idx >= 0 {
		name = module[len(prefix):]
	}
	for _, re := range f.linears {
		if re.MatchString(name) {
			return true
		}
	}
	return false
}

// HubName maps an in-memory tensor name to its hub name (Renames).
func (f *Family) HubName(tensor string) string {
	for _, r := range f.Renames {
		tensor = r.re.ReplaceAllString(tensor, r.Replace)
	}
	return tensor
}

// MemoryModule maps a module name on disk to its in-memory name (FromHub); names no
// rule changes are returned as they are.
func (f *Family) MemoryModule(name string) string {
	if len(f.FromHub) == 0 {
		return name
	}
	m := name + moduleSentinel
	for _, r := range f.FromHub {
		m = r.re.ReplaceAllString(m, r.Replace)
	}
	if out, ok := strings.CutSuffix(m, moduleSentinel); ok && !strings.Contains(out, "\x00") {
		return out
	}
	return name
}

// moduleSentinel ends a module name while the rules run (see Rename).
const moduleSentinel = ".\x00"

// HubModule maps a module name or an exclude_modules pattern: a trailing "*" or ".*"
// is kept aside, the rest mapped with the sentinel appended. A rule that eats the
// sentinel would write a corrupt name: an error. That is ModelOpt's nemotron_h defect:
// its reverse mapper's rule for NemotronH is an unanchored "model." whose "." matches
// any character, so it rewrites the "modelo" inside its own sentinel
// (".\x00modelopt_name_sentinel") and writes "lm_head.\x00backbone.pt_name_sentinel"
// into exclude_modules. Our nemotron_h rules are anchored ("^model\\."), so the names
// come out as ModelOpt meant them ("lm_head", "backbone.embeddings"), which is what
// the golden files hold.
func (f *Family) HubModule(name string) (string, error) {
	if len(f.Renames) == 0 {
		return name, nil
	}
	base, suffix := name, ""
	if b, ok := strings.CutSuffix(name, ".*"); ok {
		base, suffix = b, ".*"
	} else if b, ok := strings.CutSuffix(name, "*"); ok {
		base, suffix = b, "*"
	}
	m := f.HubName(base + moduleSentinel)
	out, ok := strings.CutSuffix(m, moduleSentinel)
	if !ok || strings.Contains(out, "\x00") {
		return "", fmt.Errorf("%w: %s: the rename rules map module %q to %q: a rule matches across the end of the name; anchor its pattern", ErrFamily, f.Source, name, m)
	}
	return out + suffix, nil
}

// Parse reads a family file's content; file names it in errors. Unknown keys,
// trailing data, bad regular expressions and rules that cannot apply are refused,
// each naming the key.
func Parse(file string, b []byte) (*Family, error) {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var f Family
	if err := dec.Decode(&f); err != nil {
		// encoding/json names the key: `json: unknown field "x"`.
		return nil, fmt.Errorf("%w: %s: %v", ErrFamily, file, strings.TrimPrefix(err.Error(), "json: "))
	}
	if dec.More() {
		return nil, fmt.Errorf("%w: %s: data after the family object", ErrFamily, file)
	}
	if err := f.validate(); err != nil {
		return nil, fmt.Errorf("%w: %s: %w", ErrFamily, file, err)
	}
	f.Source = file
	return &f, nil
}

// namePart is a dotted module path relative to a layer or parent.
var namePart = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z0-9_]+)*$`)

func (f *Family) validate() error {
	var errs []error
	bad := func(format string, a ...any) { errs = append(errs, fmt.Errorf(format, a...)) }
	if f.Name == "" {
		bad(`"name" is missing`)
	}
	if len(f.ModelTypes) == 0 && len(f.Architectures) == 0 {
		bad(`"model_types" is empty (and no "architectures"): the family would never be chosen`)
	}
	for i, s := range f.ModelTypes {
		if s == "" {
			bad(`"model_types"[%d] is empty`, i)
		}
	}
	for i, s := range f.LayerBases {
		if s != "" && (!namePart.MatchString(strings.TrimSuffix(s, ".")) || !strings.HasSuffix(s, ".")) {
			bad(`"layer_bases"[%d] %q: want a module path ending in "." (e.g. "model.")`, i, s)
		}
	}
	for i, s := range f.Architectures {
		if s == "" {
			bad(`"architectures"[%d] is empty`, i)
		}
	}
	for i, r := range f.Fusion {
		at := fmt.Sprintf(`"fusion"[%d]`, i)
		parent := strings.TrimSuffix(r.Parent, ".*")
		if !namePart.MatchString(parent) || strings.Contains(parent, "*") {
			bad(`%s "parent" %q: want a module path relative to the layer, optionally ending in ".*" (every numbered child)`, at, r.Parent)
		}
		if len(r.Members) == 0 || (len(r.Members) == 1 && r.Norm == "") {
			bad(`%s "members" %q: a group needs at least two modules, or one and the "norm" it reads`, at, r.Members)
		}
		for j, m := range r.Members {
			if !namePart.MatchString(m) {
				bad(`%s "members"[%d] %q is not a module name`, at, j, m)
			}
			if slices.Index(r.Members, m) != j {
				bad(`%s "members" lists %q twice`, at, m)
			}
		}
		if r.Norm != "" && !namePart.MatchString(r.Norm) {
			bad(`%s "norm" %q is not a module path`, at, r.Norm)
		}
	}
	for i, r := range f.Prequant {
		at := fmt.Sprintf(`"prequant"[%d]`, i)
		for k, v := range map[string]string{"parent": r.Parent, "source": r.Source, "target": r.Target} {
			if !namePart.MatchString(v) {
				bad(`%s %q %q is not a module path`, at, k, v)
			}
		}
	}
	if e := f.Experts; e != nil {
		if len(e.Layouts) == 0 {
			bad(`"experts" "layouts" is empty: list %v`, layouts)
		}
		for i, l := range e.Layouts {
			if !slices.Contains(layouts, l) {
				bad(`"experts" "layouts"[%d] %q: want one of %v`, i, l, layouts)
			}
		}
		if len(e.GateUp) != 0 && (len(e.GateUp) != 2 || e.GateUp[0] == e.GateUp[1] || !namePart.MatchString(e.GateUp[0]) || !namePart.MatchString(e.GateUp[1])) {
			bad(`"experts" "gate_up" %q: want two different projection names, gate then up`, e.GateUp)
		}
		for i, r := range e.Routers {
			if !namePart.MatchString(r) {
				bad(`"experts" "routers"[%d] %q is not a module name`, i, r)
			}
		}
	}
	f.linears = f.linears[:0]
	for i, p := range f.Linears {
		re, err := regexp.Compile(`^(?:` + p + `)$`)
		switch {
		case p == "":
			bad(`"linears"[%d] is empty`, i)
		case err != nil:
			bad(`"linears"[%d] %q: %v`, i, p, err)
		default:
			f.linears = append(f.linears, re)
		}
	}
	for i := range f.Renames {
		errs = append(errs, f.Renames[i].compile(fmt.Sprintf(`"renames"[%d]`, i)))
	}
	for i := range f.FromHub {
		errs = append(errs, f.FromHub[i].compile(fmt.Sprintf(`"from_hub"[%d]`, i)))
	}
	return errors.Join(errs...)
}

func (r *Rename) compile(at string) error {
	if r.Pattern == "" {
		return fmt.Errorf(`%s "pattern" is empty`, at)
	}
	re, err := regexp.Compile(r.Pattern)
	if err != nil {
		return fmt.Errorf(`%s "pattern" %q: %v`, at, r.Pattern, err)
	}
	r.re = re
	for _, ref := range groupRefs.FindAllStringSubmatch(r.Replace, -1) {
		if n := atoiSmall(ref[1] + ref[2]); n > re.NumSubexp() {
			return fmt.Errorf(`%s "replace" %q uses $%d, but "pattern" has %d groups`, at, r.Replace, n, re.NumSubexp())
		}
	}
	return nil
}

var groupRefs = regexp.MustCompile(`\$(?:(\d+)|\{(\d+)\})`)

func atoiSmall(s string) int {
	n := 0
	for _, c := range s {
		n = n*10 + int(c-'0')
		if n > 1<<20 {
			break
		}
	}
	return n
}
