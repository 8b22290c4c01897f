package modelopt

import (
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/quantstream/quantstream/quant"
)

// ApplyOptions select what calibration Apply emulates.
type ApplyOptions struct {
	Forwarded      bool // a calibration forward loop ran (activation quantizers saw data)
	ActivationRank int  // rank of the activations they saw; 0 means 3 ([batch, seq, hidden])
}

// Quantized is a recipe applied to a model: what mtq.quantize leaves (quantizers
// configured by the rules, then the effects of weight calibration on the attributes).
type Quantized struct {
	Recipe *Recipe
	Model  *Model
	// Table holds every quantizer; a SequentialQuantizer appears as "<name>.0", "<name>.1".
	Table Table
	// AmaxShapes gives the shape of the _amax buffer calibration leaves on each weight
	// quantizer (absent: no amax, as for MX formats and disabled quantizers).
	AmaxShapes map[string][]int64
	// Constants holds the _amax of every quantizer configured with constant_amax:
	// torch.tensor(float(v)), a float32 scalar registered when the rule is applied,
	// which calibration then leaves alone (TensorQuantizer._constant_amax_setter).
	Constants map[string]float32
	// slots maps a Table key to its slot (for a chain element, the chain's slot).
	slots map[string]*Slot
}

// Slot returns the model slot of a Table key.
func (q *Quantized) Slot(name string) (*Slot, bool) {
	s, ok := q.slots[name]
	return s, ok
}

// node is one quantizer during rule application: a TensorQuantizer (q set) or a
// SequentialQuantizer (children set).
type node struct {
	name     string
	slot     *Slot
	q        *quant.Quantizer
	children []*node
	parent   *node // for a chain element
	hard     bool
	detached bool
}

func defaultQuantizer(hard bool) *quant.Quantizer {
	q := &quant.Quantizer{Class: "TensorQuantizer", Enabled: true, NumBits: quant.BitsInt8, FakeQuant: true}
	if hard {
		q.Class, q.Enabled = "HardDisabledTensorQuantizer", false
	}
	return q
}

// fromAttributes is TensorQuantizer.set_from_attribute_config with a full
// QuantizerAttributeConfig: every attribute is replaced, absent keys take defaults.
func fromAttributes(a Attributes, enable, hard bool) *quant.Quantizer {
	q := defaultQuantizer(hard)
	q.Enabled = enable && !hard
	if a.NumBits != nil {
		q.NumBits = *a.NumBits
	}
	if a.Axis != nil {
		q.Axis, q.AxisTuple = slices.Clone(a.Axis.Values), a.Axis.Tuple
	}
	if a.BlockSizes != nil {
		bs := *a.BlockSizes
		bs.Dims = make(map[int]int, len(a.BlockSizes.Dims))
		for k, v := range a.BlockSizes.Dims {
			bs.Dims[k] = v
		}
		q.BlockSizes = &bs
		// block_sizes and axis are exclusive: ModelOpt's setter clears the axis.
		q.Axis, q.AxisTuple = nil, false
	}
	q.Dynamic = a.Type == "dynamic"
	if a.FakeQuant != nil {
		q.FakeQuant = *a.FakeQuant
	}
	if a.Unsigned != nil {
		q.Unsigned = *a.Unsigned
	}
	if a.NarrowRange != nil {
		q.NarrowRange = *a.NarrowRange
	}
	if a.UseConstantAmax != nil {
		q.UseConstantAmax = *a.UseConstantAmax
	}
	if a.ConstantAmax != nil {
		v := *a.ConstantAmax
		q.ConstantAmax = &v
	}
	return q
}

var (
	patMu    sync.Mutex
	patCache = map[string]*regexp.Regexp{}
)

// fnmatch is Python's fnmatch.fnmatchcase: '*' matches any run (dots included), '?'
// one character, [seq] / [!seq] a set; everything else is literal.
func fnmatch(name, pat string) (bool, error) {
	patMu.Lock()
	re, ok := patCache[pat]
	patMu.Unlock()
	if !ok {
		var b strings.Builder
		b.WriteString(`(?s)\A`)
		for i := 0; i < len(pat); i++ {
			c := pat[i]
			switch c {
			case '*':
				b.WriteString(".*")
			case '?':
				b.WriteString(".")
			case '[':
				j := i + 1
				if j < len(pat) && pat[j] == '!' {
					j++
				}
				if j < len(pat) && pat[j] == ']' {
					j++
				}
				for j < len(pat) && pat[j] != ']' {
					j++
				}
				if j >= len(pat) {
					b.WriteString(`\[`) // no closing bracket: a literal '['
					continue
				}
				set := pat[i+1 : j]
				i = j
				if strings.HasPrefix(set, "!") {
					set = "^" + set[1:]
				} else if strings.HasPrefix(set, "^") {
					set = `\^` + set[1:]
				}
				set = strings.ReplaceAll(set, `\`, `\\`)
				b.WriteString("[" + set + "]")
			default:
				b.WriteString(regexp.QuoteMeta(string(c)))
			}
		}
		b.WriteString(`\z`)
		var err error
		re, err = regexp.Compile(b.String())
		if err != nil {
			return false, fmt.Errorf("%w: wildcard %q: %v", ErrRecipe, pat, err)
		}
		patMu.Lock()
		patCache[pat] = re
		patMu.Unlock()
	}
	return re.MatchString(name), nil
}

var fusedListRE = regexp.MustCompile(`(weight_quantizers?|input_quantizers?)\.\d+($|\.)`)

// normalizeFused strips the index of a per-expert (or chain) quantizer name the way
// ModelOpt does before matching: "…gate_up_proj_weight_quantizers.3" →
// "…gate_up_proj_weight_quantizer", so "*weight_quantizer" reaches the experts.
func normalizeFused(name string) string {
	return fusedListRE.ReplaceAllStringFunc(name, func(m string) string {
		tail := ""
		if strings.HasSuffix(m, ".") {
			tail = "."
			m = m[:len(m)-1]
		}
		base := m[:strings.LastIndexByte(m, '.')]
		return strings.TrimSuffix(base, "s") + tail
	})
}

func (n *node) parentClass() string {
	if n.parent != nil {
		return "SequentialQuantizer"
	}
	return n.slot.ParentClass
}

func matchRule(r Rule, n *node) (bool, error) {
	ok, err := fnmatch(n.name, r.QuantizerName)
	if err != nil {
		return false, err
	}
	if !ok {
		if norm := normalizeFused(n.name); norm != n.name {
			if ok, err = fnmatch(norm, r.QuantizerName); err != nil {
				return false, err
			}
		}
	}
	if !ok {
		return false, nil
	}
	return r.ParentClass == "" || r.ParentClass == n.parentClass(), nil
}

// applyRule is one set_quantizer_by_cfg entry on one matched quantizer.
func applyRule(r Rule, n *node) error {
	enable := r.Enable == nil || *r.Enable
	switch {
	case r.Cfg == nil: // only toggles enable; a chain broadcasts it to its elements
		if n.children != nil {
			for _, c := range n.children {
				c.q.Enabled = enable && !c.hard
			}
			return nil
		}
		n.q.Enabled = enable && !n.hard
	case r.CfgList:
		if n.parent != nil {
			return fmt.Errorf("%w: rule %q with a list cfg matches %q, an element of a chain (nested SequentialQuantizer)", ErrRecipe, r.QuantizerName, n.name)
		}
		if n.children == nil {
			// A TensorQuantizer becomes a SequentialQuantizer of fresh TensorQuantizers;
			// they are not visited again by this rule.
			n.q = nil
			for i := range r.Cfg {
				n.children = append(n.children, &node{name: n.name + "." + strconv.Itoa(i), parent: n})
			}
		}
		for i, c := range n.children {
			if i < len(r.Cfg) {
				c.q = fromAttributes(r.Cfg[i], enable, false)
			}
		}
	default:
		if n.children != nil {
			// A dict cfg turns a SequentialQuantizer back into one TensorQuantizer.
			for _, c := range n.children {
				c.detached = true
			}
			n.children = nil
		}
		n.q = fromAttributes(r.Cfg[0], enable, n.hard)
	}
	return nil
}

// Apply configures the model's quantizers with the recipe's rules, in order (later
// rules override earlier ones; a rule with a cfg replaces all attributes, one with only
// enable toggles), then applies what weight calibration changes in the attributes when
// the recipe calibrates (algorithm not None): static-block weight quantizers get their
// block axes as a tuple ((0,) for last-axis blocks, with _amax_shape_for_export
// (*shape[:-1], -1)), and integer or static-NVFP4 ones become StaticBlockScaleQuantizer.
// Every enabled quantizer with a maxbound reports it, as quantizers.json does.
//
// By default this is mtq.quantize with forward_loop=None: only weights are seen. With
// opt.Forwarded, enabled activation quantizers are treated as having seen data (rank
// opt.ActivationRank, 3 when zero): per-channel block_sizes ({-1: None}) turn into an
// axis tuple and per-tensor static ones collect a 0-dim amax.
func Apply(r *Recipe, m *Model, opt ApplyOptions) (*Quantized, error) {
	nodes := make([]*node, len(m.Slots))
	for i := range m.Slots {
		s := &m.Slots[i]
		nodes[i] = &node{name: s.Name, slot: s, q: defaultQuantizer(s.HardDisabled), hard: s.HardDisabled}
	}
	for _, rule := range r.Rules {
		if rule.Cfg != nil && len(rule.Cfg) == 0 {
			return nil, fmt.Errorf("%w: rule %q has an empty cfg list", ErrRecipe, rule.QuantizerName)
		}
		// ModelOpt walks named_modules() while it replaces modules: it sees the chain
		// elements that existed before this rule, right after their chain.
		var snapshot []*node
		for _, n := range nodes {
			snapshot = append(snapshot, n)
			snapshot = append(snapshot, n.children...)
		}
		for _, n := range snapshot {
			if n.detached {
				continue
			}
			ok, err := matchRule(rule, n)
			if err != nil {
				return nil, err
			}
			if ok {
				if err := applyRule(rule, n); err != nil {
					return nil, err
				}
			}
		}
	}
	out := &Quantized{Recipe: r, Model: m, Table: Table{}, AmaxShapes: map[string][]int64{}, Constants: map[string]float32{}, slots: map[string]*Slot{}}
	calibrated := r.Method() != ""
	for _, n := range nodes {
		leaves := []*node{n}
		if n.children != nil {
			leaves = n.children
		}
		for i, l := range leaves {
			q := l.q
			if q.ConstantAmax != nil {
				out.Constants[l.name] = float32(*q.ConstantAmax)
			}
			switch {
			case q.UseConstantAmax || q.ConstantAmax != nil:
				// Calibration skips them (finish_stats_collection).
			case !calibrated || !q.Enabled:
			case n.slot.Kind == WeightSlot:
				shape, err := calibrateAttributes(q, n.slot.WeightShape, i == 0)
				if err != nil {
					return nil, fmt.Errorf("quantizer %q: %w", l.name, err)
				}
				if shape != nil {
					if quant.Numel(shape) == 1 {
						// The max calibrator keeps a single-element amax as a 0-dim
						// tensor (a 128x128-block FP8 weight of one block, say).
						shape = []int64{}
					}
					out.AmaxShapes[l.name] = shape
				}
			case opt.Forwarded:
				rank := opt.ActivationRank
				if rank == 0 {
					rank = 3
				}
				blockSizesToAxis(q, rank)
				if !q.Dynamic && !isMX(q) && q.Axis == nil && !isStaticBlock(q) {
					out.AmaxShapes[l.name] = []int64{}
				}
			}
			if q.Enabled && q.MaxBound == nil {
				if mb, ok := quant.MaxBound(q); ok {
					q.MaxBound = &mb
				}
			}
			out.Table[l.name] = q
			out.slots[l.name] = n.slot
		}
	}
	return out, nil
}

// blockSizesToAxis is TensorQuantizer._block_sizes_to_axis, run on the first tensor a
// fake-quant quantizer sees: block_sizes whose axes all map to None mean "one scale per
// index of the other axes", i.e. an axis tuple.
func blockSizesToAxis(q *quant.Quantizer, rank int) {
	bs := q.BlockSizes
	if bs == nil || !q.FakeQuant {
		return
	}
	for _, n := range bs.Dims {
		if n != 0 {
			return
		}
	}
	reduced := map[int]bool{}
	for k := range bs.Dims {
		if k < 0 {
			k += rank
		}
		reduced[k] = true
	}
	q.Axis, q.AxisTuple = nil, false
	for i := range rank {
		if !reduced[i] {
			q.Axis = append(q.Axis, i)
		}
	}
	if q.Axis != nil {
		q.AxisTuple = true
	}
	q.BlockSizes = nil
}

func isStaticBlock(q *quant.Quantizer) bool {
	return q.BlockSizes != nil && q.BlockSizes.Type != "dynamic" && q.FakeQuant
}

func isMX(q *quant.Quantizer) bool {
	return q.BlockSizes != nil && q.BlockSizes.Type == "dynamic" && q.BlockSizes.ScaleBits != nil && *q.BlockSizes.ScaleBits == quant.BitsE8M0
}

// calibrateAttributes applies to q what max calibration on a weight of the given shape
// changes (TensorQuantizer._setup_for_blockquant, promote_static_block_weight_quantizers)
// and returns the shape of the amax it collects (nil: none). first is false for the
// second element of a chain, which ModelOpt does not promote.
func calibrateAttributes(q *quant.Quantizer, shape []int64, first bool) ([]int64, error) {
	if q.Dynamic || isMX(q) {
		return nil, nil
	}
	if len(shape) == 0 {
		return nil, fmt.Errorf("%w: no weight shape to calibrate on", ErrModel)
	}
	blockSizesToAxis(q, len(shape))
	var amax []int64
	switch {
	case isStaticBlock(q):
		bs := q.BlockSizes
		blockOf := func(ax int) int {
			if n, ok := bs.Dims[ax]; ok {
				return n
			}
			return bs.Dims[ax-len(shape)]
		}
		blockAxes := 0
		for _, n := range bs.Dims {
			if n > 0 {
				blockAxes++
			}
		}
		last := len(shape) - 1
		if blockOf(last) > 0 && blockAxes == 1 {
			// One block axis, the last: the tensor is flattened to (-1, B).
			b := int64(blockOf(last))
			rows := int64(1)
			for _, d := range shape[:last] {
				rows *= d
			}
			cols := (shape[last] + b - 1) / b
			q.Axis, q.AxisTuple = []int{0}, true
			q.AmaxShape = append(slices.Clone(shape[:last]), -1)
			amax = []int64{rows * cols, 1}
		} else {
			q.Axis, q.AxisTuple = nil, true
			for ax, d := range shape {
				if b := int64(blockOf(ax)); b > 0 {
					q.Axis = append(q.Axis, len(amax))
					amax = append(amax, (d+b-1)/b, 1)
				} else {
					q.Axis = append(q.Axis, len(amax))
					amax = append(amax, d)
				}
			}
		}
		if first {
			if _, isInt := q.NumBits.Int(); isInt || (q.NumBits == quant.BitsE2M1 && bs.ScaleBits != nil && *bs.ScaleBits == quant.BitsE4M3) {
				mb, ok := quant.MaxBound(q)
				if !ok {
					return nil, fmt.Errorf("%w: static block quantizer without maxbound", ErrRecipe)
				}
				q.Class = "StaticBlockScaleQuantizer"
				q.MaxBound = &mb
			}
		}
	case q.Axis == nil:
		amax = []int64{}
	default:
		amax = make([]int64, len(shape))
		for i := range amax {
			amax[i] = 1
		}
		for _, a := range q.Axis {
			if a < 0 {
				a += len(shape)
			}
			if a < 0 || a >= len(shape) {
				return nil, fmt.Errorf("%w: axis %v out of range for shape %v", ErrRecipe, q.Axis, shape)
			}
			amax[a] = shape[a]
		}
	}
	return amax, nil
}
