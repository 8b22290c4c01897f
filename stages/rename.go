package stages

import (
	"fmt"
	"regexp"
	"slices"
	"strings"

	quantstream "github.com/quantstream/quantstream"
	"github.com/quantstream/quantstream/quant"
)

// RenameRule maps an in-memory (transformers ≥ 5, post-conversion) name to the name
// the model hub checkpoint uses: Go regexp Pattern replaced by Replace ($1, ${1} for
// groups), on every match. It is the reverse of one transformers conversion_mapping
// entry, as ModelOpt's quant_aware_conversion.build_reverse_name_mapper derives it:
// ModelOpt applies these rules to every exported tensor name and to the module names
// of hf_quant_config.json (exclude_modules, quantized_layers), so an export of a model
// loaded with in-memory names (a state dict, a save_pretrained(save_original_format=
// False) folder) writes the hub names engines load.
//
// Rules are applied in order, each to the result of the previous one. A tensor name
// is the module name plus a leaf (".weight", ".weight_scale", ...); a module name is
// matched as name + ".\x00" so that a pattern ending in "\." also matches a module
// at the end of the name (ModelOpt's sentinel). Rules must leave hub names unchanged
// (they are applied to checkpoints that have hub names already, the data-free input).
type RenameRule struct {
	Pattern string
	Replace string
}

// renamer is a compiled list of rename rules.
type renamer []compiledRename

type compiledRename struct {
	re   *regexp.Regexp
	repl string
	src  RenameRule
}

// compileRenames compiles rules; a bad pattern is an ErrConfig naming the family.
func compileRenames(family string, rules []RenameRule) (renamer, error) {
	var out renamer
	for _, r := range rules {
		re, err := regexp.Compile(r.Pattern)
		if err != nil {
			return nil, fmt.Errorf("%w: family %s: rename pattern %q: %v", ErrConfig, family, r.Pattern, err)
		}
		out = append(out, compiledRename{re, r.Replace, r})
	}
	return out, nil
}

// tensor maps a tensor name.
func (rn renamer) tensor(name string) string {
	for _, r := range rn {
		name = r.re.ReplaceAllString(name, r.repl)
	}
	return name
}

// moduleSentinel ends a module name while the rules run (see RenameRule).
const moduleSentinel = ".\x00"

// module maps a module name or an exclude_modules pattern: a trailing "*" or ".*"
// is kept aside, the rest mapped with the sentinel appended. A rule that eats the
// sentinel would write a corrupt name (ModelOpt's nemotron_h defect): an error.
func (rn renamer) module(name string) (string, error) {
	if len(rn) == 0 {
		return name, nil
	}
	base, suffix := name, ""
	if b, ok := strings.CutSuffix(name, ".*"); ok {
		base, suffix = b, ".*"
	} else if b, ok := strings.CutSuffix(name, "*"); ok {
		base, suffix = b, "*"
	}
	m := rn.tensor(base + moduleSentinel)
	out, ok := strings.CutSuffix(m, moduleSentinel)
	if !ok || strings.Contains(out, "\x00") {
		return "", fmt.Errorf("%w: the rename rules map module %q to %q: a rule matches across the end of the name; anchor its pattern", ErrConfig, name, m)
	}
	return out + suffix, nil
}

// renameOutputs applies the rules to every tensor of ts. Two tensors mapped to one
// name are an error (ModelOpt: "rename collision").
func (rn renamer) renameOutputs(ts *tensorSet) error {
	if len(rn) == 0 {
		return nil
	}
	moves := map[string]string{}
	dest := map[string]string{}
	for _, n := range sortedKeys(ts.hdr) {
		h := rn.tensor(n)
		if other, dup := dest[h]; dup {
			return fmt.Errorf("%w: the rename rules map both %s and %s to %s", ErrPlanMismatch, other, n, h)
		}
		dest[h] = n
		if h != n {
			moves[n] = h
		}
	}
	// Take every moved tensor out first, then put it back: a chain a→b, b→c stays right.
	type held struct {
		name string
		t    heldTensor
	}
	var hs []held
	for _, n := range sortedKeys(moves) {
		hs = append(hs, held{moves[n], ts.take(n)})
	}
	for _, h := range hs {
		ts.put(h.name, h.t)
	}
	return nil
}

// hubQuantConfig is revert_quant_config_names: the module names of exclude_modules
// (kept in their order, sorted on in-memory names) and the keys of quantized_layers
// mapped to hub names, in place.
func hubQuantConfig(qc Obj, rn renamer) error {
	if len(rn) == 0 {
		return nil
	}
	qv, _ := qc.Get("quantization")
	q, ok := qv.(Obj)
	if !ok {
		return nil
	}
	if ev, ok := q.Get("exclude_modules"); ok {
		if ex, ok := ev.([]string); ok {
			out := make([]string, len(ex))
			for i, e := range ex {
				m, err := rn.module(e)
				if err != nil {
					return err
				}
				out[i] = m
			}
			q.Set("exclude_modules", out)
		}
	}
	if lv, ok := q.Get("quantized_layers"); ok {
		if layers, ok := lv.(Obj); ok {
			out := make(Obj, 0, len(layers))
			for _, f := range layers {
				m, err := rn.module(f.K)
				if err != nil {
					return err
				}
				out = append(out, Field{m, f.V})
			}
			q.Set("quantized_layers", out)
		}
	}
	return nil
}

// hubQuantizers renames quantizers to the namespace of the tensors they quantize: a
// saved checkpoint can hold hub-named tensors while its modelopt_state names the
// quantizers in memory (Gemma 3: language_model.model.* on disk,
// model.language_model.* in the state). A quantizer whose module no input tensor is
// under, while its hub name's module is, is looked up under its hub name. Mapping
// two quantizers to one name is an error.
func hubQuantizers(qs Quantizers, inputs []quantstream.TensorInfo, rn renamer) (Quantizers, error) {
	if len(rn) == 0 || qs == nil {
		return qs, nil
	}
	modules := map[string]bool{}
	for _, t := range inputs {
		for i := 0; i < len(t.Name); i++ {
			if t.Name[i] == '.' {
				modules[t.Name[:i]] = true
			}
		}
	}
	r := &renamedQuantizers{Quantizers: qs, orig: map[string]string{}, moved: map[string]bool{}}
	names := qs.Names()
	have := make(map[string]bool, len(names))
	for _, n := range names {
		have[n] = true
	}
	for _, n := range names {
		h := rn.tensor(n)
		if h == n || modules[quantizerOwner(n)] || !modules[quantizerOwner(h)] {
			continue
		}
		if have[h] {
			return nil, fmt.Errorf("%w: quantizer %s maps to the tensors' name %s, which the quantizer table has too", ErrConfig, n, h)
		}
		if o := r.orig[h]; o != "" {
			return nil, fmt.Errorf("%w: quantizers %s and %s both map to the tensors' name %s", ErrConfig, o, n, h)
		}
		r.orig[h], r.moved[n] = n, true
	}
	if len(r.orig) == 0 {
		return qs, nil
	}
	for _, n := range names {
		if !r.moved[n] {
			r.names = append(r.names, n)
		}
	}
	for h := range r.orig {
		r.names = append(r.names, h)
	}
	slices.Sort(r.names)
	return r, nil
}

// quantizerOwner is the module a quantizer belongs to: its name up to the first
// component that names a quantizer ("a.q_proj.weight_quantizer" -> "a.q_proj",
// "a.experts.gate_up_proj_weight_quantizers.3" -> "a.experts").
func quantizerOwner(name string) string {
	parts := strings.Split(name, ".")
	for i, p := range parts {
		if strings.Contains(p, "quantizer") {
			return strings.Join(parts[:i], ".")
		}
	}
	return name
}

type renamedQuantizers struct {
	Quantizers
	orig  map[string]string // hub name -> the table's name
	moved map[string]bool   // the table's names looked up under a hub name
	names []string
}

func (r *renamedQuantizers) Get(name string) (*quant.Quantizer, bool) {
	if o, ok := r.orig[name]; ok {
		return r.Quantizers.Get(o)
	}
	if r.moved[name] {
		return nil, false
	}
	return r.Quantizers.Get(name)
}

func (r *renamedQuantizers) Names() []string { return r.names }
