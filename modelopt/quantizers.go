package modelopt

import (
	"encoding/json"
	"fmt"
	"os"
	"sort"
	"strconv"
	"strings"

	"github.com/quantstream/quantstream/quant"
)

// Table maps a quantizer's module name (the prefix of its buffers in the state dict,
// e.g. "model.layers.0.self_attn.q_proj.weight_quantizer") to its attributes.
// Chained quantizers (W4A8's SequentialQuantizer) are stored as "<name>.0", "<name>.1"
// and also reachable as one Sequential entry through Get.
type Table map[string]*quant.Quantizer

// Get returns the quantizer of a module name. For a SequentialQuantizer stored as
// "<name>.0", "<name>.1", … it returns a Quantizer with Class "SequentialQuantizer"
// and the chain in Sequential; it is enabled when any element is.
func (t Table) Get(name string) (*quant.Quantizer, bool) {
	if q, ok := t[name]; ok {
		return q, true
	}
	first, ok := t[name+".0"]
	if !ok {
		return nil, false
	}
	seq := &quant.Quantizer{Class: "SequentialQuantizer", Sequential: []*quant.Quantizer{first}}
	for i := 1; ; i++ {
		q, ok := t[name+"."+strconv.Itoa(i)]
		if !ok {
			break
		}
		seq.Sequential = append(seq.Sequential, q)
	}
	for _, q := range seq.Sequential {
		seq.Enabled = seq.Enabled || q.Enabled
	}
	return seq, true
}

// Names lists the table's keys, sorted.
func (t Table) Names() []string {
	out := make([]string, 0, len(t))
	for k := range t {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

type jsonQuantizer struct {
	Class       string                     `json:"class"`
	Enabled     bool                       `json:"enabled"`
	NumBits     json.RawMessage            `json:"num_bits"`
	Axis        json.RawMessage            `json:"axis"`
	BlockSizes  map[string]json.RawMessage `json:"block_sizes"`
	Unsigned    bool                       `json:"unsigned"`
	NarrowRange bool                       `json:"narrow_range"`
	FakeQuant   *bool                      `json:"fake_quant"`
	Dynamic     bool                       `json:"dynamic"`
	MaxBound    *float64                   `json:"maxbound"`
	AmaxShape   []int64                    `json:"amax_shape_for_export"`
	// BufferShape is the _amax buffer's shape, null when the quantizer has none.
	BufferShape      json.RawMessage `json:"amax_shape"`
	HasPreQuantScale bool            `json:"has_pre_quant_scale"`
}

// LoadQuantizersJSON reads a quantizers.json table (the golden sets' form of the
// quantizer attributes: name -> {class, enabled, num_bits, axis, block_sizes, ...}).
func LoadQuantizersJSON(path string) (Table, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var raw map[string]jsonQuantizer
	if err := json.Unmarshal(b, &raw); err != nil {
		return nil, fmt.Errorf("modelopt: %s: %w", path, err)
	}
	t := make(Table, len(raw))
	for name, jq := range raw {
		q, err := jq.quantizer()
		if err != nil {
			return nil, fmt.Errorf("modelopt: %s: quantizer %q: %w", path, name, err)
		}
		t[name] = q
	}
	return t, nil
}

func (jq jsonQuantizer) quantizer() (*quant.Quantizer, error) {
	q := &quant.Quantizer{
		Class:       jq.Class,
		Enabled:     jq.Enabled,
		Unsigned:    jq.Unsigned,
		NarrowRange: jq.NarrowRange,
		FakeQuant:   jq.FakeQuant == nil || *jq.FakeQuant,
		Dynamic:     jq.Dynamic,
		MaxBound:    jq.MaxBound,
		AmaxShape:   jq.AmaxShape,
	}
	if len(jq.BufferShape) > 0 && string(jq.BufferShape) != "null" {
		if err := json.Unmarshal(jq.BufferShape, &q.BufferShape); err != nil {
			return nil, fmt.Errorf("amax_shape %s: %w", jq.BufferShape, err)
		}
		if q.BufferShape == nil {
			q.BufferShape = []int64{}
		}
		q.HasBufferShape = true
	}
	q.HasPreQuantScale = jq.HasPreQuantScale
	nb, err := ParseNumBits(jq.NumBits)
	if err != nil {
		return nil, err
	}
	q.NumBits = nb
	if q.Axis, q.AxisTuple, err = parseAxis(jq.Axis); err != nil {
		return nil, err
	}
	if jq.BlockSizes != nil {
		bs, err := ParseBlockSizes(jq.BlockSizes)
		if err != nil {
			return nil, err
		}
		q.BlockSizes = bs
	}
	return q, nil
}

// ParseNumBits decodes num_bits: an integer or a two-element [E, M] list.
func ParseNumBits(raw json.RawMessage) (quant.NumBits, error) {
	var n int
	if err := json.Unmarshal(raw, &n); err == nil {
		return quant.NumBits{E: 0, M: n}, nil
	}
	var em []int
	if err := json.Unmarshal(raw, &em); err != nil || len(em) != 2 {
		return quant.NumBits{}, fmt.Errorf("num_bits %s is neither an int nor [E, M]", raw)
	}
	return quant.NumBits{E: em[0], M: em[1]}, nil
}

func parseAxis(raw json.RawMessage) (axis []int, tuple bool, err error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, false, nil
	}
	var n int
	if json.Unmarshal(raw, &n) == nil {
		return []int{n}, false, nil
	}
	if err := json.Unmarshal(raw, &axis); err != nil {
		return nil, false, fmt.Errorf("axis %s is neither null, an int nor a list", raw)
	}
	return axis, true, nil
}

// ParseBlockSizes decodes a block_sizes object: integer axis keys ("-1", "-2") to a
// size or null, plus "type", "scale_bits" and "four_over_six".
func ParseBlockSizes(m map[string]json.RawMessage) (*quant.BlockSizes, error) {
	bs := &quant.BlockSizes{Dims: map[int]int{}}
	for k, v := range m {
		switch k {
		case "type":
			if err := json.Unmarshal(v, &bs.Type); err != nil {
				return nil, fmt.Errorf("block_sizes.type: %w", err)
			}
		case "scale_bits":
			if string(v) == "null" {
				continue
			}
			nb, err := ParseNumBits(v)
			if err != nil {
				return nil, fmt.Errorf("block_sizes.scale_bits: %w", err)
			}
			bs.ScaleBits = &nb
		case "four_over_six":
			if err := json.Unmarshal(v, &bs.FourOverSix); err != nil {
				return nil, fmt.Errorf("block_sizes.four_over_six: %w", err)
			}
		default:
			axis, err := strconv.Atoi(strings.TrimSpace(k))
			if err != nil {
				// Unknown attribute keys are kept out of Dims; ModelOpt ignores them too.
				continue
			}
			var size *int
			if err := json.Unmarshal(v, &size); err != nil {
				return nil, fmt.Errorf("block_sizes[%d]: %w", axis, err)
			}
			if size != nil {
				bs.Dims[axis] = *size
			} else {
				bs.Dims[axis] = 0
			}
		}
	}
	return bs, nil
}
