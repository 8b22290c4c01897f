package parity

import (
	"encoding/json"
	"fmt"
	"strconv"
	"strings"

	"github.com/quantstream/quantstream/modelopt"
	"github.com/quantstream/quantstream/quant"
)

// Handlers for the quantizer-level functions (group "modules"): a case's inputs are one
// linear's state dict (weight + quantizer buffers) and params.quantizers gives the
// quantizer attributes.

// caseQuantizer is one quantizer's attributes as params.quantizers spells them.
type caseQuantizer struct {
	Class       string                     `json:"class"`
	Enabled     bool                       `json:"enabled"`
	NumBits     json.RawMessage            `json:"num_bits"`
	Axis        json.RawMessage            `json:"axis"`
	BlockSizes  map[string]json.RawMessage `json:"block_sizes"`
	FakeQuant   *bool                      `json:"fake_quant"`
	Unsigned    bool                       `json:"unsigned"`
	NarrowRange bool                       `json:"narrow_range"`
	Dynamic     bool                       `json:"dynamic"`
	// MaxBound is a number, null, or a note such as "raises TypeError" (MXFP4).
	MaxBound json.RawMessage `json:"maxbound"`
}

func (cq caseQuantizer) quantizer() (*quant.Quantizer, error) {
	q := &quant.Quantizer{
		Class:       cq.Class,
		Enabled:     cq.Enabled,
		FakeQuant:   cq.FakeQuant == nil || *cq.FakeQuant,
		Unsigned:    cq.Unsigned,
		NarrowRange: cq.NarrowRange,
		Dynamic:     cq.Dynamic,
	}
	var mb float64
	if json.Unmarshal(cq.MaxBound, &mb) == nil {
		q.MaxBound = &mb
	}
	var err error
	if q.NumBits, err = modelopt.ParseNumBits(cq.NumBits); err != nil {
		return nil, err
	}
	if len(cq.Axis) > 0 && string(cq.Axis) != "null" {
		var n int
		if json.Unmarshal(cq.Axis, &n) == nil {
			q.Axis = []int{n}
		} else if err := json.Unmarshal(cq.Axis, &q.Axis); err != nil {
			return nil, fmt.Errorf("axis %s: %w", cq.Axis, err)
		} else {
			q.AxisTuple = true
		}
	}
	if cq.BlockSizes != nil {
		if q.BlockSizes, err = modelopt.ParseBlockSizes(cq.BlockSizes); err != nil {
			return nil, err
		}
	}
	return q, nil
}

// parseCaseQuantizer decodes an object (one quantizer) or a list (a SequentialQuantizer).
func parseCaseQuantizer(raw json.RawMessage) (*quant.Quantizer, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	if strings.HasPrefix(strings.TrimSpace(string(raw)), "[") {
		var list []caseQuantizer
		if err := json.Unmarshal(raw, &list); err != nil {
			return nil, err
		}
		seq := &quant.Quantizer{Class: "SequentialQuantizer"}
		for _, cq := range list {
			q, err := cq.quantizer()
			if err != nil {
				return nil, err
			}
			seq.Sequential = append(seq.Sequential, q)
		}
		if len(seq.Sequential) > 0 {
			seq.Enabled = seq.Sequential[0].Enabled
		}
		return seq, nil
	}
	var cq caseQuantizer
	if err := json.Unmarshal(raw, &cq); err != nil {
		return nil, err
	}
	return cq.quantizer()
}

// caseModule builds the quant.Module of a modules case.
func caseModule(c *Case) (*quant.Module, error) {
	m := &quant.Module{}
	if _, err := c.Param("linear", &m.Name); err != nil {
		return nil, err
	}
	var qs map[string]json.RawMessage
	if _, err := c.Param("quantizers", &qs); err != nil {
		return nil, err
	}
	var err error
	if m.WeightQuantizer, err = parseCaseQuantizer(qs["weight_quantizer"]); err != nil {
		return nil, fmt.Errorf("parity: case %s: weight_quantizer: %w", c.ID, err)
	}
	if m.InputQuantizer, err = parseCaseQuantizer(qs["input_quantizer"]); err != nil {
		return nil, fmt.Errorf("parity: case %s: input_quantizer: %w", c.ID, err)
	}
	if m.OutputQuantizer, err = parseCaseQuantizer(qs["output_quantizer"]); err != nil {
		return nil, fmt.Errorf("parity: case %s: output_quantizer: %w", c.ID, err)
	}
	if wq := m.WeightQuantizer; wq != nil && strings.Contains(wq.Class, "SVDQuant") {
		m.SVDQuant = true
	}
	if m.Weight, err = c.MustInput("weight"); err != nil {
		return nil, err
	}
	for role := range c.Inputs {
		t, err := optInput(c, role)
		if err != nil {
			return nil, err
		}
		if t == nil {
			continue
		}
		switch role {
		case "weight":
		case "weight_quantizer._amax":
			m.WeightAmax = t
		case "weight_quantizer._global_amax":
			m.GlobalAmax = t
		case "weight_quantizer._scale":
			m.WeightScaleBuf = t
		case "weight_quantizer._svdquant_lora_a", "weight_quantizer._svdquant_lora_b":
			m.SVDQuant = true
		case "input_quantizer._amax":
			m.InputAmax = t
		case "input_quantizer._pre_quant_scale":
			m.PreQuantScale = t
		case "output_quantizer._amax":
			m.OutputAmax = t
		default:
			rest, ok := strings.CutPrefix(role, "weight_quantizer.")
			idx, buf, _ := strings.Cut(rest, ".")
			i, err := strconv.Atoi(idx)
			if !ok || err != nil || buf != "_amax" || i < 0 || i > 16 {
				return nil, fmt.Errorf("parity: case %s: unknown input %q", c.ID, role)
			}
			for len(m.WeightAmaxSeq) <= i {
				m.WeightAmaxSeq = append(m.WeightAmaxSeq, nil)
			}
			m.WeightAmaxSeq[i] = t
		}
	}
	return m, nil
}

// noneOrFormat is get_quantization_format's JSON value: null for QUANTIZATION_NONE.
func noneOrFormat(f string) any {
	if f == "" {
		return nil
	}
	return f
}

func modScalingFactors(c *Case) (*Result, error) {
	m, err := caseModule(c)
	if err != nil {
		return nil, err
	}
	format, err := quant.QuantizationFormat(m)
	if err != nil {
		return nil, err
	}
	res := &Result{Tensors: map[string]*quant.Tensor{}, Values: map[string]any{
		"get_quantization_format": noneOrFormat(format),
		"get_weight_block_size":   quant.WeightBlockSize(m),
	}}
	steps := []struct {
		role string
		f    func() (*quant.Tensor, error)
	}{
		{"weight_scaling_factor", func() (*quant.Tensor, error) { return ref.WeightScalingFactor(m, quant.DivIEEE) }},
		{"weight_scaling_factor_2", func() (*quant.Tensor, error) { return ref.WeightScalingFactor2(m, quant.DivIEEE) }},
		{"activation_scaling_factor", func() (*quant.Tensor, error) { return ref.ActivationScalingFactor(m, quant.DivIEEE) }},
		{"prequant_scaling_factor", func() (*quant.Tensor, error) { return ref.PrequantScalingFactor(m) }},
	}
	for _, s := range steps {
		t, err := s.f()
		if err != nil {
			return nil, fmt.Errorf("%s: %w", s.role, err)
		}
		res.Tensors[s.role] = t
	}
	return res, nil
}

func modExportQuantizedWeight(c *Case) (*Result, error) {
	m, err := caseModule(c)
	if err != nil {
		return nil, err
	}
	var dts string
	if _, err := c.Param("dtype", &dts); err != nil {
		return nil, err
	}
	dt, err := torchDType(dts)
	if err != nil {
		return nil, err
	}
	ex, err := quant.ExportQuantizedWeight(m, dt, quant.DivIEEE)
	if err != nil {
		return nil, err
	}
	res := &Result{Tensors: map[string]*quant.Tensor{}}
	if ex == nil {
		// Format None: the module keeps its weight.
		res.Tensors["weight"] = &m.Weight
		return res, nil
	}
	res.Tensors["weight"] = &ex.Weight
	for role, t := range map[string]*quant.Tensor{"weight_scale": ex.WeightScale, "weight_scale_2": ex.WeightScale2, "input_scale": ex.InputScale} {
		if t != nil {
			res.Tensors[role] = t
		}
	}
	for role := range res.Tensors {
		if _, want := c.Outputs[role]; !want {
			return nil, fmt.Errorf("parity: case %s: we register %q, the reference does not", c.ID, role)
		}
	}
	return res, nil
}

// kvQuantizer is the k/v bmm quantizer of the KV-cache recipes for a num_bits value
// (modelopt_recipes/configs/ptq/units): FP8 and INT8 per-tensor, NVFP4 with dynamic 16-blocks and E4M3 scales.
func kvQuantizer(nb quant.NumBits) *quant.Quantizer {
	q := &quant.Quantizer{Class: "TensorQuantizer", Enabled: true, NumBits: nb, FakeQuant: true}
	if nb == quant.BitsE2M1 {
		sb := quant.BitsE4M3
		q.BlockSizes = &quant.BlockSizes{Dims: map[int]int{-1: 16}, Type: "dynamic", ScaleBits: &sb}
	}
	return q
}

func modKVCacheScalingFactor(c *Case) (*Result, error) {
	var raw json.RawMessage
	if _, err := c.Param("num_bits", &raw); err != nil {
		return nil, err
	}
	nb, err := modelopt.ParseNumBits(raw)
	if err != nil {
		return nil, fmt.Errorf("parity: case %s: %w", c.ID, err)
	}
	k, v := kvQuantizer(nb), kvQuantizer(nb)
	kAmax, err := optInput(c, "k_bmm_quantizer._amax")
	if err != nil {
		return nil, err
	}
	vAmax, err := optInput(c, "v_bmm_quantizer._amax")
	if err != nil {
		return nil, err
	}
	// An affine KV cache (NVFP4_AFFINE) has a _bias_value on every quantizer.
	bias := []bool{c.Has("k_bmm_quantizer._bias_value"), c.Has("v_bmm_quantizer._bias_value")}
	dtype := quant.KVCacheDType([]*quant.Quantizer{k, v}, bias)
	ks, vs, err := ref.KVCacheScalingFactor(k, v, kAmax, vAmax, dtype, quant.DivIEEE)
	if err != nil {
		return nil, err
	}
	return &Result{
		Tensors: map[string]*quant.Tensor{"k_scale": ks, "v_scale": vs},
		Values:  map[string]any{"get_kv_cache_dtype": noneOrFormat(dtype)},
	}, nil
}
