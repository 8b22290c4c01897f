package parity

import (
	"encoding/json"
	"fmt"
	"strings"

	"github.com/quantstream/quantstream/modelopt"
	"github.com/quantstream/quantstream/quant"
	"github.com/quantstream/quantstream/stages"
)

// paramQuantizer decodes a quantizer description of a module case: an attribute object,
// or a list of them for a SequentialQuantizer.
func paramQuantizer(raw json.RawMessage) (*quant.Quantizer, error) {
	var list []json.RawMessage
	if json.Unmarshal(raw, &list) == nil {
		seq := &quant.Quantizer{Class: "SequentialQuantizer"}
		for _, r := range list {
			q, err := paramQuantizer(r)
			if err != nil {
				return nil, err
			}
			seq.Sequential = append(seq.Sequential, q)
			seq.Enabled = seq.Enabled || q.Enabled
		}
		return seq, nil
	}
	var a struct {
		Class      string                     `json:"class"`
		Enabled    bool                       `json:"enabled"`
		NumBits    json.RawMessage            `json:"num_bits"`
		Axis       json.RawMessage            `json:"axis"`
		BlockSizes map[string]json.RawMessage `json:"block_sizes"`
		FakeQuant  *bool                      `json:"fake_quant"`
	}
	if err := json.Unmarshal(raw, &a); err != nil {
		return nil, err
	}
	nb, err := modelopt.ParseNumBits(a.NumBits)
	if err != nil {
		return nil, err
	}
	q := &quant.Quantizer{Class: a.Class, Enabled: a.Enabled, NumBits: nb, FakeQuant: a.FakeQuant == nil || *a.FakeQuant}
	var axis int
	var axes []int
	switch {
	case len(a.Axis) == 0 || string(a.Axis) == "null":
	case json.Unmarshal(a.Axis, &axis) == nil:
		q.Axis = []int{axis}
	case json.Unmarshal(a.Axis, &axes) == nil:
		q.Axis, q.AxisTuple = axes, true
	}
	if a.BlockSizes != nil {
		if q.BlockSizes, err = modelopt.ParseBlockSizes(a.BlockSizes); err != nil {
			return nil, err
		}
	}
	return q, nil
}

func allInputs(c *Case) (map[string]quant.Tensor, error) {
	sd := map[string]quant.Tensor{}
	for role := range c.Inputs {
		t, ok, err := c.Input(role)
		if err != nil {
			return nil, err
		}
		if ok {
			sd[role] = t
		}
	}
	return sd, nil
}

func tensorResult(sd map[string]quant.Tensor, roles map[string]*TensorRef) *Result {
	res := &Result{Tensors: map[string]*quant.Tensor{}}
	for role := range roles {
		if t, ok := sd[role]; ok {
			res.Tensors[role] = &t
		}
	}
	return res
}

// preprocessLinearFusionCase: the modules' state before and after. The case gives the
// weight quantizer of one module (all share the recipe); an input quantizer is enabled
// where it holds an amax. The format is the case's: without the input quantizer's
// attributes the module cannot be classified here.
func preprocessLinearFusionCase(c *Case) (*Result, error) {
	var names []string
	var resmoothOnly bool
	var qraw map[string]json.RawMessage
	for k, v := range map[string]any{"modules": &names, "resmooth_only": &resmoothOnly, "quantizers": &qraw} {
		if _, err := c.Param(k, v); err != nil {
			return nil, err
		}
	}
	var wq *quant.Quantizer
	for _, raw := range qraw {
		q, err := paramQuantizer(raw)
		if err != nil {
			return nil, err
		}
		wq = q
	}
	sd, err := allInputs(c)
	if err != nil {
		return nil, err
	}
	var mods []*stages.Module
	for _, n := range names {
		_, hasAmax := sd[n+".input_quantizer._amax"]
		m, err := stagesRef.NewModule(n, sd, wq, &quant.Quantizer{Enabled: hasAmax})
		if err != nil {
			return nil, err
		}
		m.Format = c.Format
		mods = append(mods, m)
	}
	out, err := stagesRef.PreprocessLinearFusion(sd, mods, resmoothOnly, quant.DivIEEE)
	if err != nil {
		return nil, err
	}
	return tensorResult(out, c.Outputs), nil
}

func fusePrequantLayernormCase(c *Case) (*Result, error) {
	var kind string
	if _, err := c.Param("layernorm_kind", &kind); err != nil {
		return nil, err
	}
	w, err := c.MustInput("layernorm.weight")
	if err != nil {
		return nil, err
	}
	p, err := c.MustInput("pre_quant_scale")
	if err != nil {
		return nil, err
	}
	sd := map[string]quant.Tensor{"layernorm.weight": w, "linear.input_quantizer._pre_quant_scale": p}
	m, err := stagesRef.NewModule("linear", sd, nil, nil)
	if err != nil {
		return nil, err
	}
	onePlus := !strings.HasPrefix(kind, "plain")
	out, err := stagesRef.FusePrequantLayernorm(sd, "layernorm", onePlus, []*stages.Module{m})
	if err != nil {
		return nil, err
	}
	if _, left := out["linear.input_quantizer._pre_quant_scale"]; left {
		return nil, fmt.Errorf("pre_quant_scale not removed after fusion")
	}
	return tensorResult(out, c.Outputs), nil
}

func adjustAttnAmaxCase(c *Case) (*Result, error) {
	var children []string
	if _, err := c.Param("children", &children); err != nil {
		return nil, err
	}
	amax := map[string]float32{}
	dtypes := map[string]quant.Tensor{}
	for _, ch := range children {
		t, ok, err := c.Input(ch + ".weight_quantizer._amax")
		if err != nil {
			return nil, err
		}
		if !ok {
			continue
		}
		if t.DType != quant.F32 || t.Numel() != 1 {
			return nil, fmt.Errorf("amax %s is %v %v, want a scalar F32", ch, t.DType, t.Shape)
		}
		if amax[ch], err = quant.Scalar(t); err != nil {
			return nil, err
		}
		dtypes[ch] = t
	}
	out, err := stagesRef.AdjustAttnAmax(amax, children)
	if err != nil {
		return nil, err
	}
	res := &Result{Tensors: map[string]*quant.Tensor{}}
	for ch, v := range out {
		t, err := quant.FromFloat32(quant.F32, dtypes[ch].Shape, []float32{v})
		if err != nil {
			return nil, err
		}
		res.Tensors[ch+".weight_quantizer._amax"] = &t
	}
	return res, nil
}

// getQuantConfigCase: a Block(input_layernorm, q_proj, k_proj, v_proj, o_proj,
// up_proj, down_proj) with every linear quantized by the case's recipe. The case gives
// the weight quantizers; the format is the case's (the input quantizers are not
// described), the block size is derived from the weight quantizer.
func getQuantConfigCase(c *Case) (*Result, error) {
	var mods map[string]json.RawMessage
	if _, err := c.Param("modules", &mods); err != nil {
		return nil, err
	}
	raw, ok := mods["q_proj"]
	if !ok {
		return nil, fmt.Errorf("case %s: no q_proj quantizer", c.ID)
	}
	wq, err := paramQuantizer(raw)
	if err != nil {
		return nil, err
	}
	block := quant.WeightBlockSize(&quant.Module{WeightQuantizer: wq})
	var cm []stages.ConfigModule
	for _, n := range []string{"q_proj", "k_proj", "v_proj", "o_proj", "up_proj", "down_proj"} {
		cm = append(cm, stages.ConfigModule{Name: n, Format: c.Format, Block: block})
	}
	qc := stages.QuantConfig(cm, nil, "", stages.ModelOptVersion)
	b, err := qc.MarshalJSON()
	if err != nil {
		return nil, err
	}
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		return nil, err
	}
	return &Result{Values: map[string]any{"quant_config": v}}, nil
}

// stagesRef holds the export steps of package stages that the modules group checks
// one by one.
var stagesRef stages.Reference
