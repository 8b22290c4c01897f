package stages

import (
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"

	quantstream "github.com/quantstream/quantstream"
	"github.com/quantstream/quantstream/arch"
	"github.com/quantstream/quantstream/quant"
)

// Errors a caller can act on.
var (
	// ErrUnknownArch and ErrConfig are the model rules' (package arch owns them).
	ErrUnknownArch   = arch.ErrUnknown
	ErrConfig        = arch.ErrConfig
	ErrMissingAmax   = errors.New("stages: missing amax")
	ErrShape         = errors.New("stages: bad shape")
	ErrDType         = errors.New("stages: unsupported dtype")
	ErrUnsupported   = errors.New("stages: unsupported quantizer")
	ErrIncomplete    = errors.New("stages: incomplete module group")
	ErrPlanMismatch  = quantstream.ErrPlanMismatch // the one value pipeline also returns
	ErrKVCacheFormat = errors.New("stages: unsupported kv cache format")
	// ErrStructure: the checkpoint holds a structure its family's rules do not
	// describe (an experts layout, a 3-D experts weight without quantizers); the
	// message names the tensors and the rule to add (docs/arch-rules.md).
	ErrStructure = errors.New("stages: structure not in the family's rules")
)

// Quantizers is where quantizer attributes come from: modelopt.Table satisfies it, and
// so can any other source (a decoded modelopt_state, a recipe applied data-free).
type Quantizers interface {
	// Get returns the quantizer of a module name such as
	// "model.layers.0.self_attn.q_proj.weight_quantizer"; a chain stored as
	// "<name>.0", "<name>.1" comes back as one Sequential quantizer.
	Get(name string) (*quant.Quantizer, bool)
	// Names lists every quantizer name, sorted.
	Names() []string
}

// Module is one quantizable weight of a layer with its quantizers and the names of
// its quantizer buffers in the layer (empty when the buffer is absent).
type Module struct {
	Name   string // "model.layers.0.self_attn.q_proj"
	Parent string // "model.layers.0.self_attn"
	Proj   string // "q_proj"
	Weight string // "<Name>.weight", or "<Name>.<Attr>" for a BMM expert weight
	// Attr is the weight attribute: "weight", or "gate_up_proj" / "down_proj" of
	// batched-matmul experts (Llama-4, GPT-OSS), whose quantizers and outputs are named
	// "<Name>.<Attr>_weight_quantizer", "<Name>.<Attr>_weight_scale", ...
	Attr string
	// BMM marks a 3-D batched-matmul expert weight [E, in, out].
	BMM bool

	WQ, IQ *quant.Quantizer // nil when the module has no such quantizer
	Format string           // ModelOpt format string, "" for None
	Block  int              // get_weight_block_size

	WAmax, WAmax1, IAmax, PQS, Bias string
	// GAmax is the weight quantizer's _global_amax: a static NVFP4 quantizer
	// (NVFP4QTensor._is_static_quantizer is its presence, not the class).
	GAmax string

	// Expert is the expert index for per-expert modules, else -1. FromFused marks a
	// module cut out of a transformers-5 fused experts tensor (_export_fused_experts).
	Expert    int
	FromFused bool
	// Fused is ModelOpt's fused_with_prequant: its pre_quant_scale went into a norm or
	// another linear (an NVFP4 module then stays nvfp4_awq).
	Fused bool
}

func hasQuant(q *quant.Quantizer) bool { return q != nil && q.Enabled }

// quantizerNames maps a weight attribute to its quantizer names: "weight" ->
// weight_quantizer / input_quantizer, other names -> "<w>_weight_quantizer".
func quantizerNames(mod, attr string) (wq, iq string) {
	if attr == "weight" {
		return mod + ".weight_quantizer", mod + ".input_quantizer"
	}
	return mod + "." + attr + "_weight_quantizer", mod + "." + attr + "_input_quantizer"
}

// discoverModules finds the linear-like modules of one layer: every "<m>.weight" that
// has a weight or input quantizer in qs. names holds the layer's tensor names.
func discoverModules(names map[string]quantstream.TensorInfo, qs Quantizers) ([]*Module, error) {
	var mods []*Module
	var errs []error
	keys := sortedKeys(names)
	for _, n := range keys {
		if !strings.HasSuffix(n, ".weight") || strings.Contains(n, "_quantizer") {
			continue
		}
		mod := strings.TrimSuffix(n, ".weight")
		wqn, iqn := quantizerNames(mod, "weight")
		wq, okW := qs.Get(wqn)
		iq, okI := qs.Get(iqn)
		if !okW && !okI {
			continue
		}
		m := &Module{Name: mod, Weight: n, Attr: "weight", Expert: -1}
		m.Parent, m.Proj = splitLast(mod)
		if okW {
			m.WQ = wq
		}
		if okI {
			m.IQ = iq
		}
		m.fillBuffers(names)
		if e, ok := expertIndex(mod); ok {
			m.Expert = e
		}
		if err := m.classify(); err != nil {
			errs = append(errs, fmt.Errorf("module %s: %w", mod, err))
			continue
		}
		mods = append(mods, m)
	}
	return mods, errors.Join(errs...)
}

// key names a tensor the module owns: "<Name>.<k>" for a "weight" attribute,
// "<Name>.<Attr>_<k>" otherwise (quantizer_attr_names).
func (m *Module) key(k string) string {
	if m.Attr == "" || m.Attr == "weight" {
		return m.Name + "." + k
	}
	return m.Name + "." + m.Attr + "_" + k
}

// ID is the module's name, with the weight attribute for BMM experts (two weights of
// one module).
func (m *Module) ID() string {
	if m.Attr == "" || m.Attr == "weight" {
		return m.Name
	}
	return m.Name + "." + m.Attr
}

func (m *Module) fillBuffers(names map[string]quantstream.TensorInfo) {
	has := func(n string) string {
		if _, ok := names[n]; ok {
			return n
		}
		return ""
	}
	wq := m.key("weight_quantizer")
	if m.WQ != nil && len(m.WQ.Sequential) > 0 {
		m.WAmax = has(wq + ".0._amax")
		m.WAmax1 = has(wq + ".1._amax")
	} else {
		m.WAmax = has(wq + "._amax")
		m.GAmax = has(wq + "._global_amax")
	}
	m.IAmax = has(m.key("input_quantizer._amax"))
	m.PQS = has(m.key("input_quantizer._pre_quant_scale"))
	if m.Attr == "" || m.Attr == "weight" {
		m.Bias = has(m.Name + ".bias")
	}
}

func (m *Module) classify() error {
	qm := m.quantModule(nil)
	f, err := quant.QuantizationFormat(qm)
	if err != nil {
		return err
	}
	m.Format = f
	if f != "" {
		m.Block = quant.WeightBlockSize(qm)
	}
	return nil
}

var expertRe = regexp.MustCompile(`(?:^|\.)experts\.(\d+)$`)

// expertIndex finds e in "<...>.experts.<e>.<proj>".
func expertIndex(mod string) (int, bool) {
	parent, _ := splitLast(mod)
	m := expertRe.FindStringSubmatch(parent)
	if m == nil {
		return 0, false
	}
	n, err := strconv.Atoi(m[1])
	return n, err == nil
}

func splitLast(name string) (string, string) {
	i := strings.LastIndexByte(name, '.')
	if i < 0 {
		return "", name
	}
	return name[:i], name[i+1:]
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
