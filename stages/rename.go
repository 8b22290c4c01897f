package stages

import (
	"fmt"
	"slices"
	"strings"

	quantstream "github.com/quantstream/quantstream"
	"github.com/quantstream/quantstream/quant"
)

// renameOutputs applies the family's rename rules (arch.Rename) to every tensor of ts. Two tensors mapped to one
// name are an error (ModelOpt: "rename collision").
func renameOutputs(ts *tensorSet, a *Arch) error {
	if len(a.Renames) == 0 {
		return nil
	}
	moves := map[string]string{}
	dest := map[string]string{}
	for _, n := range sortedKeys(ts.hdr) {
		h := a.HubName(n)
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
func hubQuantConfig(qc Obj, a *Arch) error {
	if len(a.Renames) == 0 {
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
				m, err := a.HubModule(e)
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
				m, err := a.HubModule(f.K)
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
func hubQuantizers(qs Quantizers, inputs []quantstream.TensorInfo, a *Arch) (Quantizers, error) {
	if len(a.Renames) == 0 || qs == nil {
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
		h := a.HubName(n)
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
