package quantsrc

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/quantstream/quantstream"
	"github.com/quantstream/quantstream/stages"
)

// ErrMTP marks multi-token-prediction weights in a layout quantstream does not
// handle.
var ErrMTP = errors.New("quantsrc: unsupported MTP layout")

// MTP is the set of inlined multi-token-prediction layers of a checkpoint
// (DeepSeek-V3's layer 61, GLM's likewise): model.layers.N for N in
// [num_hidden_layers, num_hidden_layers + num_nextn_predict_layers), present in the
// safetensors but not built by transformers. ModelOpt's hf_ptq flow
// (example_utils.load_mtp_weights) carries them into the export unchanged
// (export_hf_checkpoint's extra_state_dict) and lists "<prefix>*" in
// exclude_modules (unified_export_hf._add_mtp_exclusions), so no quantizer is
// ever attached to them. The zero value has no layers.
type MTP struct {
	Prefixes []string // "model.layers.61", sorted
}

// FindMTP reads the MTP layers from config.json's num_nextn_predict_layers and
// num_hidden_layers (top level, as hf_ptq reads model.config) and the tensor names:
// like load_mtp_weights, it finds them only when some tensor lies under one of the
// prefixes. Tensors named "mtp…" outside them are the separate-file convention
// (GLM-4.7's mtp.safetensors, Qwen3-Next's mtp.* shard), which hf_ptq loads into
// the model where it has a slot: refused with ErrMTP, since quantstream cannot tell
// which do.
func FindMTP(configName string, configJSON []byte, tensors []quantstream.TensorInfo) (MTP, error) {
	var cfg struct {
		NextN  *int64 `json:"num_nextn_predict_layers"`
		Hidden *int64 `json:"num_hidden_layers"`
	}
	if len(configJSON) > 0 {
		if err := json.Unmarshal(configJSON, &cfg); err != nil {
			return MTP{}, fmt.Errorf("%w: %s: %v", ErrInvalid, configName, err)
		}
	}
	var prefixes []string
	if cfg.NextN != nil && *cfg.NextN > 0 {
		if cfg.Hidden == nil || *cfg.Hidden < 0 || *cfg.NextN > 1<<10 {
			return MTP{}, fmt.Errorf("%w: %s: num_nextn_predict_layers %d with num_hidden_layers %v", ErrInvalid, configName, *cfg.NextN, cfg.Hidden)
		}
		for i := *cfg.Hidden; i < *cfg.Hidden+*cfg.NextN; i++ {
			prefixes = append(prefixes, "model.layers."+strconv.FormatInt(i, 10))
		}
	}
	m := MTP{Prefixes: prefixes}
	found := false
	var separate []string
	for _, t := range tensors {
		if m.Has(t.Name) {
			found = true
		} else if strings.Contains(t.Name, "mtp") {
			separate = append(separate, t.Name)
		}
	}
	if len(separate) > 0 {
		sort.Strings(separate)
		return MTP{}, fmt.Errorf("%w: %s: tensors named mtp… outside the inlined layers %v (%s): the separate-file MTP convention, which hf_ptq loads into the model where it has a slot and quantstream does not model",
			ErrMTP, configName, prefixes, listSome(separate))
	}
	if !found {
		return MTP{}, nil
	}
	sort.Strings(m.Prefixes)
	return m, nil
}

// Has reports whether the tensor name lies under an MTP layer.
func (m MTP) Has(name string) bool {
	for _, p := range m.Prefixes {
		if strings.HasPrefix(name, p+".") {
			return true
		}
	}
	return false
}

// Exclude applies _add_mtp_exclusions to an hf_quant_config object (stages'
// Plan.QuantConfig): "<prefix>*" appended to quantization.exclude_modules, in sorted
// prefix order, unless already there. Entries the planner made for modules inside
// an MTP layer are dropped first (in ModelOpt those modules do not exist), so the
// result is what ModelOpt writes whatever the wildcard summary made of them.
func (m MTP) Exclude(qc stages.Obj) error {
	if len(m.Prefixes) == 0 || qc == nil {
		return nil
	}
	qv, ok := qc.Get("quantization")
	q, isObj := qv.(stages.Obj)
	if !ok || !isObj {
		return fmt.Errorf("quantsrc: hf_quant_config has no quantization object")
	}
	var ex []string
	if v, ok := q.Get("exclude_modules"); ok && v != nil {
		list, ok := v.([]string)
		if !ok {
			return fmt.Errorf("quantsrc: exclude_modules is %T, want a list of names", v)
		}
		for _, e := range list {
			if !m.covers(e) {
				ex = append(ex, e)
			}
		}
	}
	for _, p := range m.Prefixes {
		if pat := p + "*"; !slices.Contains(ex, pat) {
			ex = append(ex, pat)
		}
	}
	if ex == nil {
		ex = []string{}
	}
	q.Set("exclude_modules", ex)
	qc.Set("quantization", q)
	return nil
}

// covers reports whether an exclude entry names a module inside an MTP layer (or
// the layer's own wildcard).
func (m MTP) covers(entry string) bool {
	for _, p := range m.Prefixes {
		if entry == p || entry == p+"*" || strings.HasPrefix(entry, p+".") {
			return true
		}
	}
	return false
}
