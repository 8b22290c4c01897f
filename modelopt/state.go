package modelopt

import (
	"errors"
	"fmt"
	"path/filepath"
	"sort"
	"strconv"
	"strings"

	"github.com/quantstream/quantstream"
	"github.com/quantstream/quantstream/quant"
)

// ErrState is returned when a decoded modelopt_state does not have the structure
// ModelOpt writes (modes, quantizer_state, attribute types).
var ErrState = errors.New("modelopt: unexpected modelopt_state structure")

// StateFileName is the file ModelOpt's Hugging Face checkpointing writes next to the
// weights (modelopt.torch.opt.enable_huggingface_checkpointing + save_pretrained).
const StateFileName = "modelopt_state.pth"

// Mode is one entry of modelopt_state_dict: a mode name ("quantize", "max_calibrate",
// "awq_lite_calibrate", ...) with its config and metadata dicts.
type Mode struct {
	Name     string
	Config   *Dict
	Metadata *Dict
}

// QuantizerExtra is what a quantizer's state holds beyond the quant.Quantizer attributes.
type QuantizerExtra struct {
	// Buffers lists the buffers saved with the weights, by buffer name (_amax,
	// _pre_quant_scale, ...): the header _pytorch_state_metadata.buffers records for
	// each, named as the tensor in the checkpoint's safetensors ("<quantizer
	// name>.<buffer>"). DType is quant.Invalid and Shape nil where the metadata
	// lacks them.
	Buffers map[string]quantstream.TensorInfo
	// EnablePreQuantScale is _enable_pre_quant_scale.
	EnablePreQuantScale bool
	// AmaxForSmoothing is the AWQ activation statistic kept in the pickle itself
	// (input quantizers of AWQ recipes with an enabled input quantizer); nil otherwise.
	AmaxForSmoothing *Tensor
}

// HasBuffer reports whether the quantizer saved a buffer of that name (e.g.
// "_pre_quant_scale", "_amax").
func (x *QuantizerExtra) HasBuffer(name string) bool {
	if x == nil {
		return false
	}
	_, ok := x.Buffers[name]
	return ok
}

// State is a decoded modelopt_state.pth.
type State struct {
	Version string // modelopt_version
	Modes   []Mode
	// CalibMode is the mode whose quantizer_state was used: the last mode that has one
	// (the calibration mode; "quantize" alone when the model was never calibrated).
	CalibMode string
	// Quantizers holds the attributes of every quantizer of CalibMode's quantizer_state.
	// A SequentialQuantizer appears as "<name>.0", "<name>.1", … (Table.Get rebuilds it).
	Quantizers Table
	// Extra holds per quantizer (same keys as Quantizers) the buffers and tensors.
	Extra map[string]*QuantizerExtra
	// Tree is the whole decoded pickle, for EncodeJSON or for fields not lifted here.
	Tree any
}

// QuantCfg returns the "quantize" mode's config (quant_cfg, algorithm), or nil.
func (s *State) QuantCfg() *Dict {
	for _, m := range s.Modes {
		if m.Name == "quantize" {
			return m.Config
		}
	}
	return nil
}

// ReadState reads and interprets a modelopt_state.pth file.
func ReadState(path string) (*State, error) {
	tree, err := DecodeFile(path, Limits{})
	if err != nil {
		return nil, err
	}
	s, err := ParseState(tree)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return s, nil
}

// ReadSavedDir reads dir/modelopt_state.pth of a checkpoint folder written by
// save_pretrained with ModelOpt's Hugging Face checkpointing enabled.
func ReadSavedDir(dir string) (*State, error) {
	return ReadState(filepath.Join(dir, StateFileName))
}

func dictStr(d *Dict, key string) (any, bool) { return d.Get(key) }

// ParseState interprets a decoded modelopt_state tree.
func ParseState(tree any) (*State, error) {
	root, ok := tree.(*Dict)
	if !ok {
		return nil, fmt.Errorf("%w: top level is a %T, want a dict", ErrState, tree)
	}
	s := &State{Tree: tree}
	if v, ok := dictStr(root, "modelopt_version"); ok {
		s.Version, _ = v.(string)
	}
	msd, ok := dictStr(root, "modelopt_state_dict")
	if !ok {
		return nil, fmt.Errorf("%w: no modelopt_state_dict", ErrState)
	}
	modes, ok := msd.(*List)
	if !ok {
		return nil, fmt.Errorf("%w: modelopt_state_dict is a %T, want a list", ErrState, msd)
	}
	var qstate *Dict
	for i, m := range modes.Items {
		t, ok := m.(Tuple)
		if !ok || len(t) != 2 {
			return nil, fmt.Errorf("%w: mode %d is not a (name, dict) pair", ErrState, i)
		}
		name, ok1 := t[0].(string)
		body, ok2 := t[1].(*Dict)
		if !ok1 || !ok2 {
			return nil, fmt.Errorf("%w: mode %d is (%T, %T), want (str, dict)", ErrState, i, t[0], t[1])
		}
		mode := Mode{Name: name}
		if c, ok := dictStr(body, "config"); ok {
			mode.Config, _ = c.(*Dict)
		}
		if md, ok := dictStr(body, "metadata"); ok {
			mode.Metadata, _ = md.(*Dict)
		}
		s.Modes = append(s.Modes, mode)
		if q, ok := dictStr(mode.Metadata, "quantizer_state"); ok {
			qd, ok := q.(*Dict)
			if !ok {
				return nil, fmt.Errorf("%w: mode %q quantizer_state is a %T", ErrState, name, q)
			}
			qstate, s.CalibMode = qd, name
		}
	}
	if qstate == nil {
		return nil, fmt.Errorf("%w: no mode has a quantizer_state (was the model quantized with mtq.quantize?)", ErrState)
	}
	s.Quantizers = make(Table, qstate.Len())
	s.Extra = make(map[string]*QuantizerExtra, qstate.Len())
	type seqDecl struct {
		name string
		n    int64
	}
	var seqs []seqDecl
	for i, k := range qstate.Keys {
		name, ok := k.(string)
		if !ok {
			return nil, fmt.Errorf("%w: quantizer_state key of type %T", ErrState, k)
		}
		attrs, ok := qstate.Values[i].(*Dict)
		if !ok {
			return nil, fmt.Errorf("%w: quantizer %q state is a %T", ErrState, name, qstate.Values[i])
		}
		if v, ok := attrs.Get("is_sequential_quantizer"); ok && v == true {
			n, _ := attrs.Get("num_quantizers")
			cnt, ok := n.(int64)
			if !ok || cnt < 1 || cnt > 64 {
				return nil, fmt.Errorf("%w: sequential quantizer %q with num_quantizers %v", ErrState, name, n)
			}
			seqs = append(seqs, seqDecl{name, cnt})
			continue
		}
		q, x, err := quantizerFromState(name, attrs)
		if err != nil {
			return nil, fmt.Errorf("%w: quantizer %q: %w", ErrState, name, err)
		}
		s.Quantizers[name] = q
		s.Extra[name] = x
	}
	for _, sq := range seqs {
		for j := range sq.n {
			if _, ok := s.Quantizers[sq.name+"."+strconv.FormatInt(j, 10)]; !ok {
				return nil, fmt.Errorf("%w: sequential quantizer %q lacks element %d", ErrState, sq.name, j)
			}
		}
		if _, ok := s.Quantizers[sq.name]; ok {
			return nil, fmt.Errorf("%w: %q is both a sequential and a plain quantizer", ErrState, sq.name)
		}
	}
	return s, nil
}

func asBool(d *Dict, key string, def bool) (bool, error) {
	v, ok := d.Get(key)
	if !ok {
		return def, nil
	}
	b, ok := v.(bool)
	if !ok {
		return false, fmt.Errorf("%s is a %T, want bool", key, v)
	}
	return b, nil
}

// numBitsValue converts an int or an (E, M) tuple.
func numBitsValue(v any) (quant.NumBits, error) {
	switch t := v.(type) {
	case int64:
		return quant.NumBits{M: int(t)}, nil
	case Tuple:
		if len(t) == 2 {
			e, ok1 := t[0].(int64)
			m, ok2 := t[1].(int64)
			if ok1 && ok2 {
				return quant.NumBits{E: int(e), M: int(m)}, nil
			}
		}
	}
	return quant.NumBits{}, fmt.Errorf("num_bits %v is neither an int nor an (E, M) tuple", v)
}

func axisValue(v any) (axis []int, tuple bool, err error) {
	switch t := v.(type) {
	case nil:
		return nil, false, nil
	case int64:
		return []int{int(t)}, false, nil
	case Tuple, *List:
		items := []any(nil)
		if tt, ok := t.(Tuple); ok {
			items = tt
		} else {
			items = t.(*List).Items
		}
		axis = make([]int, len(items))
		for i, e := range items {
			n, ok := e.(int64)
			if !ok {
				return nil, false, fmt.Errorf("axis element %v is not an int", e)
			}
			axis[i] = int(n)
		}
		return axis, true, nil
	}
	return nil, false, fmt.Errorf("axis %v is neither None, an int nor a tuple", v)
}

func blockSizesValue(v any) (*quant.BlockSizes, error) {
	if v == nil {
		return nil, nil
	}
	d, ok := v.(*Dict)
	if !ok {
		return nil, fmt.Errorf("block_sizes is a %T, want a dict", v)
	}
	bs := &quant.BlockSizes{Dims: map[int]int{}}
	for i, k := range d.Keys {
		val := d.Values[i]
		switch key := k.(type) {
		case int64:
			switch n := val.(type) {
			case nil:
				bs.Dims[int(key)] = 0
			case int64:
				bs.Dims[int(key)] = int(n)
			default:
				return nil, fmt.Errorf("block_sizes[%d] is a %T", key, val)
			}
		case string:
			switch key {
			case "type":
				if val == nil {
					continue
				}
				s, ok := val.(string)
				if !ok {
					return nil, fmt.Errorf("block_sizes type is a %T", val)
				}
				bs.Type = s
			case "scale_bits":
				if val == nil {
					continue
				}
				nb, err := numBitsValue(val)
				if err != nil {
					return nil, fmt.Errorf("block_sizes scale_bits: %w", err)
				}
				bs.ScaleBits = &nb
			case "four_over_six":
				b, ok := val.(bool)
				if !ok {
					return nil, fmt.Errorf("block_sizes four_over_six is a %T", val)
				}
				bs.FourOverSix = b
			}
			// Other string keys are not quantization attributes ModelOpt reads for export.
		default:
			return nil, fmt.Errorf("block_sizes key of type %T", k)
		}
	}
	return bs, nil
}

func quantizerFromState(qname string, d *Dict) (*quant.Quantizer, *QuantizerExtra, error) {
	q := &quant.Quantizer{Class: "TensorQuantizer"}
	x := &QuantizerExtra{Buffers: map[string]quantstream.TensorInfo{}}
	var err error
	disabled, err := asBool(d, "_disabled", false)
	if err != nil {
		return nil, nil, err
	}
	q.Enabled = !disabled
	if v, ok := d.Get("_num_bits"); ok {
		if q.NumBits, err = numBitsValue(v); err != nil {
			return nil, nil, err
		}
	} else {
		q.NumBits = quant.BitsInt8 // TensorQuantizer's default
	}
	if v, ok := d.Get("_axis"); ok {
		if q.Axis, q.AxisTuple, err = axisValue(v); err != nil {
			return nil, nil, err
		}
	}
	if v, ok := d.Get("_block_sizes"); ok {
		if q.BlockSizes, err = blockSizesValue(v); err != nil {
			return nil, nil, err
		}
	}
	for _, f := range []struct {
		key string
		dst *bool
		def bool
	}{
		{"_dynamic", &q.Dynamic, false},
		{"_fake_quant", &q.FakeQuant, true},
		{"_unsigned", &q.Unsigned, false},
		{"_narrow_range", &q.NarrowRange, false},
		{"_enable_pre_quant_scale", &x.EnablePreQuantScale, true},
	} {
		if *f.dst, err = asBool(d, f.key, f.def); err != nil {
			return nil, nil, err
		}
	}
	if v, ok := d.Get("_amax_shape_for_export"); ok && v != nil {
		shape, ok := int64s(v)
		if !ok {
			return nil, nil, fmt.Errorf("_amax_shape_for_export %v is not a tuple of ints", v)
		}
		q.AmaxShape = shape
	}
	if static, err := asBool(d, "_is_static_block_scale_quantizer", false); err != nil {
		return nil, nil, err
	} else if static {
		q.Class = "StaticBlockScaleQuantizer"
	}
	if v, ok := d.Get("_quant_max_bound"); ok && v != nil {
		f, ok := v.(float64)
		if !ok {
			return nil, nil, fmt.Errorf("_quant_max_bound is a %T", v)
		}
		q.MaxBound = &f
	} else if q.Enabled {
		// quantizers.json reports TensorQuantizer.maxbound for enabled quantizers.
		if mb, ok := quant.MaxBound(q); ok {
			q.MaxBound = &mb
		}
	}
	if v, ok := d.Get("_amax_for_smoothing"); ok && v != nil {
		t, ok := v.(*Tensor)
		if !ok {
			return nil, nil, fmt.Errorf("_amax_for_smoothing is a %T", v)
		}
		x.AmaxForSmoothing = t
	}
	if v, ok := d.Get("_pytorch_state_metadata"); ok {
		md, ok := v.(*Dict)
		if !ok {
			return nil, nil, fmt.Errorf("_pytorch_state_metadata is a %T", v)
		}
		if b, ok := md.Get("buffers"); ok {
			bd, ok := b.(*Dict)
			if !ok {
				return nil, nil, fmt.Errorf("_pytorch_state_metadata.buffers is a %T", b)
			}
			for i, k := range bd.Keys {
				name, _ := k.(string)
				meta, _ := bd.Values[i].(*Dict)
				if name == "" || meta == nil {
					return nil, nil, fmt.Errorf("buffer entry %v", k)
				}
				bm := quantstream.TensorInfo{Name: qname + "." + name}
				if sh, ok := meta.Get("shape"); ok {
					s, ok := int64s(sh)
					if !ok {
						return nil, nil, fmt.Errorf("buffer %s shape %v", name, sh)
					}
					bm.Shape = s
				}
				if dt, ok := meta.Get("dtype"); ok {
					dd, _ := dt.(DType)
					bm.DType = dd.Quant()
				}
				x.Buffers[name] = bm
				switch name {
				case "_amax":
					if _, ok := meta.Get("shape"); ok {
						q.BufferShape, q.HasBufferShape = bm.Shape, true
						if q.BufferShape == nil {
							q.BufferShape = []int64{}
						}
					}
				case "_pre_quant_scale":
					q.HasPreQuantScale = true
				}
			}
		}
	}
	return q, x, nil
}

// BufferNames lists the "<quantizer>.<buffer>" tensor names the state says are in the
// checkpoint's safetensors, sorted.
func (s *State) BufferNames() []string {
	var out []string
	for q, x := range s.Extra {
		for b := range x.Buffers {
			out = append(out, q+"."+b)
		}
	}
	sort.Strings(out)
	return out
}

// ModuleOf returns the module name of a quantizer name: "a.b.q_proj.weight_quantizer"
// → "a.b.q_proj", "…experts.gate_up_proj_weight_quantizers.3" → "…experts".
func ModuleOf(quantizer string) string {
	i := strings.LastIndexByte(quantizer, '.')
	if i < 0 {
		return ""
	}
	last := quantizer[i+1:]
	if _, err := strconv.Atoi(last); err == nil {
		return ModuleOf(quantizer[:i])
	}
	return quantizer[:i]
}
