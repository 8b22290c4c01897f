package parity

import (
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/quantstream/quantstream/quant"
)

// Handlers for the integer-format functions of quant_utils (group "unit"). The golden
// sets were produced on CPU, so ÷scalar steps use quant.DivIEEE.

// torchDType maps a manifest dtype ("bf16", "torch.float16", ...) to a quant.DType.
func torchDType(s string) (quant.DType, error) {
	switch strings.TrimPrefix(s, "torch.") {
	case "bf16", "bfloat16":
		return quant.BF16, nil
	case "f16", "float16", "half":
		return quant.F16, nil
	case "f32", "float32", "float":
		return quant.F32, nil
	}
	return quant.Invalid, fmt.Errorf("parity: unknown torch dtype %q", s)
}

func intParam(c *Case, name string) (int, error) {
	var v int
	ok, err := c.Param(name, &v)
	if err != nil {
		return 0, err
	}
	if !ok {
		return 0, fmt.Errorf("parity: case %s: param %q missing", c.ID, name)
	}
	return v, nil
}

func optInput(c *Case, role string) (*quant.Tensor, error) {
	t, ok, err := c.Input(role)
	if err != nil || !ok {
		return nil, err
	}
	return &t, nil
}

func unitScalingFactorFromWeight(c *Case) (*Result, error) {
	w, err := c.MustInput("weight")
	if err != nil {
		return nil, err
	}
	g, err := intParam(c, "group_size")
	if err != nil {
		return nil, err
	}
	s, err := ref.ScalingFactorFromWeight(w, g, quant.DivIEEE)
	if err != nil {
		return nil, err
	}
	return &Result{Tensors: map[string]*quant.Tensor{"scale": &s}}, nil
}

func unitPackInt4(c *Case) (*Result, error) {
	w, err := c.MustInput("weight")
	if err != nil {
		return nil, err
	}
	s, err := c.MustInput("weights_scaling_factor")
	if err != nil {
		return nil, err
	}
	p, err := ref.PackInt4InUint8(w, s)
	if err != nil {
		return nil, err
	}
	return &Result{Tensors: map[string]*quant.Tensor{"packed": &p}}, nil
}

func unitFromQuantizedWeight(c *Case) (*Result, error) {
	w, err := c.MustInput("weight")
	if err != nil {
		return nil, err
	}
	s, err := optInput(c, "weights_scaling_factor")
	if err != nil {
		return nil, err
	}
	var dts string
	if _, err := c.Param("torch_dtype", &dts); err != nil {
		return nil, err
	}
	dt, err := torchDType(dts)
	if err != nil {
		return nil, err
	}
	format := c.Format
	var qp *string
	if ok, err := c.Param("quantization", &qp); err != nil {
		return nil, err
	} else if ok {
		format = ""
		if qp != nil {
			format = *qp
		}
	}
	d, err := quant.UnquantizeWeight(w, s, format, dt)
	if err != nil {
		return nil, err
	}
	return &Result{Tensors: map[string]*quant.Tensor{"dequantized": &d}}, nil
}

func unitResmooth(c *Case) (*Result, error) {
	merged, err := c.MustInput("merged_weights")
	if err != nil {
		return nil, err
	}
	// pre_quant_scales.<i>, in index order.
	var idx []int
	for role := range c.Inputs {
		if n, ok := strings.CutPrefix(role, "pre_quant_scales."); ok {
			i, err := strconv.Atoi(n)
			if err != nil {
				return nil, fmt.Errorf("parity: case %s: input %q", c.ID, role)
			}
			idx = append(idx, i)
		}
	}
	sort.Ints(idx)
	pqs := make([]quant.Tensor, len(idx))
	for k, i := range idx {
		if i != k {
			return nil, fmt.Errorf("parity: case %s: pre_quant_scales.%d missing", c.ID, k)
		}
		if pqs[k], err = c.MustInput(fmt.Sprintf("pre_quant_scales.%d", i)); err != nil {
			return nil, err
		}
	}
	newPQS, err := optInput(c, "new_pre_quant_scale")
	if err != nil {
		return nil, err
	}
	ranks, err := intParam(c, "ranks")
	if err != nil {
		return nil, err
	}
	g, err := intParam(c, "group_size")
	if err != nil {
		return nil, err
	}
	var q *string
	if _, err := c.Param("quantization", &q); err != nil {
		return nil, err
	}
	quantization := ""
	if q != nil {
		quantization = *q
	}
	w, s, avg, err := ref.ResmoothAndGetScale(merged, pqs, ranks, g, newPQS, quantization, quant.DivIEEE)
	if err != nil {
		return nil, err
	}
	return &Result{Tensors: map[string]*quant.Tensor{"weights": &w, "scales": &s, "avg_pre_quant_scale": &avg}}, nil
}

func unitMaybeTranspose(c *Case) (*Result, error) {
	w, err := c.MustInput("weight")
	if err != nil {
		return nil, err
	}
	s, err := optInput(c, "weight_scale")
	if err != nil {
		return nil, err
	}
	isBMM := true
	if _, err := c.Param("is_bmm_expert_weight", &isBMM); err != nil {
		return nil, err
	}
	tw, ts, err := ref.MaybeTransposeExpertWeightDimensions(w, s, isBMM)
	if err != nil {
		return nil, err
	}
	res := &Result{Tensors: map[string]*quant.Tensor{"weight": &tw}}
	if _, want := c.Outputs["weight_scale"]; want || s != nil {
		res.Tensors["weight_scale"] = ts
	}
	return res, nil
}
