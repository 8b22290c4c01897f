package parity

import (
	"encoding/json"
	"fmt"
	"sort"
	"strconv"

	"github.com/quantstream/quantstream/quant"
)

// Handlers for the float-format functions (FP8, NVFP4, MXFP4, MXFP8) of the unit
// group. The golden sets were produced on CPU, so ÷scalar steps use quant.DivIEEE.

const flMode = quant.DivIEEE

// ref holds the ModelOpt steps the unit and module groups check one by one.
var ref quant.Reference

// withDequantized adds the "dequantized" output the case asks for (the reference's
// dequantize of its own result, in the weight dtype).
func withDequantized(c *Case, r *Result, dequantize func() (quant.Tensor, error)) (*Result, error) {
	if !flWants(c, "dequantized") {
		return r, nil
	}
	d, err := dequantize()
	if err != nil {
		return nil, err
	}
	r.Tensors["dequantized"] = &d
	return r, nil
}

// flIntParam reads an integer parameter; def is used when it is absent or null.
func flIntParam(c *Case, name string, def int) (int, error) {
	var v *int
	if _, err := c.Param(name, &v); err != nil {
		return 0, err
	}
	if v == nil {
		return def, nil
	}
	return *v, nil
}

func flBoolParam(c *Case, name string) (bool, error) {
	var v bool
	_, err := c.Param(name, &v)
	return v, err
}

// flBlockSizes reads params.block_sizes: a dict {"-1": 128, "-2": 128} (ModelOpt's
// form) or a list of sizes for the last dimensions, leading dimension first
// ([128, 128] = {-2: 128, -1: 128}). Non-integer dict keys ("type", ...) are ignored.
func flBlockSizes(c *Case) (map[int]int, error) {
	raw, ok := c.Params["block_sizes"]
	if !ok || string(raw) == "null" {
		return nil, nil
	}
	var list []int
	if err := json.Unmarshal(raw, &list); err == nil {
		b := map[int]int{}
		for i, n := range list {
			b[i-len(list)] = n
		}
		return b, nil
	}
	var dict map[string]json.RawMessage
	if err := json.Unmarshal(raw, &dict); err != nil {
		return nil, fmt.Errorf("parity: case %s: block_sizes %s: %w", c.ID, raw, err)
	}
	b := map[int]int{}
	for k, v := range dict {
		d, err := strconv.Atoi(k)
		if err != nil {
			continue
		}
		var n int
		if err := json.Unmarshal(v, &n); err != nil {
			return nil, fmt.Errorf("parity: case %s: block_sizes[%s]: %w", c.ID, k, err)
		}
		b[d] = n
	}
	return b, nil
}

// flAxis reads params.axis: null, an int or a list of ints.
func flAxis(c *Case) ([]int, error) {
	raw, ok := c.Params["axis"]
	if !ok || string(raw) == "null" {
		return nil, nil
	}
	var one int
	if err := json.Unmarshal(raw, &one); err == nil {
		return []int{one}, nil
	}
	var list []int
	if err := json.Unmarshal(raw, &list); err != nil {
		return nil, fmt.Errorf("parity: case %s: axis %s: %w", c.ID, raw, err)
	}
	sort.Ints(list)
	return list, nil
}

// flOutDType is the dtype a dequantizing function returns: params.dtype when given,
// else the fallback (the original weight's dtype, ModelOpt's metadata default).
func flOutDType(c *Case, fallback quant.DType) (quant.DType, error) {
	var s string
	ok, err := c.Param("dtype", &s)
	if err != nil || !ok {
		return fallback, err
	}
	return torchDType(s)
}

func flResult(kv ...any) *Result {
	r := &Result{Tensors: map[string]*quant.Tensor{}}
	for i := 0; i < len(kv); i += 2 {
		t := kv[i+1].(quant.Tensor)
		r.Tensors[kv[i].(string)] = &t
	}
	return r
}

func flWants(c *Case, role string) bool { return c.Outputs[role] != nil }

func unitFP8QTensorQuantize(c *Case) (*Result, error) {
	w, err := c.MustInput("weight")
	if err != nil {
		return nil, err
	}
	blocks, err := flBlockSizes(c)
	if err != nil {
		return nil, err
	}
	axis, err := flAxis(c)
	if err != nil {
		return nil, err
	}
	s, err := optInput(c, "scales")
	if err != nil {
		return nil, err
	}
	if s != nil {
		q, err := ref.FP8QTensorQuantizeWithScales(w, *s, blocks, flMode)
		if err != nil {
			return nil, err
		}
		return flResult("quantized", q, "scales", *s), nil
	}
	q, sc, err := ref.FP8QTensorQuantize(w, axis, blocks, flMode)
	if err != nil {
		return nil, err
	}
	return flResult("quantized", q, "scales", sc), nil
}

func unitFP8QTensorDequantize(c *Case) (*Result, error) {
	q, err := c.MustInput("quantized")
	if err != nil {
		return nil, err
	}
	s, err := c.MustInput("scales")
	if err != nil {
		return nil, err
	}
	blocks, err := flBlockSizes(c)
	if err != nil {
		return nil, err
	}
	dt, err := flOutDType(c, s.DType)
	if err != nil {
		return nil, err
	}
	var out quant.Tensor
	if len(blocks) > 0 {
		out, err = ref.FP8BlockDequantize(q, s, blocks, dt)
	} else {
		out, err = quant.UnquantizeWeight(q, &s, "fp8", dt)
	}
	if err != nil {
		return nil, err
	}
	return flResult("dequantized", out), nil
}

func unitMXFP4Quantize(c *Case) (*Result, error) {
	w, err := c.MustInput("weight")
	if err != nil {
		return nil, err
	}
	block, err := flIntParam(c, "block_size", 32)
	if err != nil {
		return nil, err
	}
	p, s, err := ref.MXFP4Quantize(w, block, flMode)
	if err != nil {
		return nil, err
	}
	r := flResult("quantized", p, "e8m0_scale", s)
	return withDequantized(c, r, func() (quant.Tensor, error) { return ref.MXFP4Dequantize(p, s, block, w.DType) })
}

func unitMXFP8Scale(c *Case) (*Result, error) {
	w, err := c.MustInput("weight")
	if err != nil {
		return nil, err
	}
	if len(w.Shape) < 2 {
		return nil, fmt.Errorf("%w: MXFP8 weight must be at least 2-D, got %v", quant.ErrAssertion, w.Shape)
	}
	rows := int(w.Numel() / w.Shape[len(w.Shape)-1])
	b, err := ref.MXFP8Scales(nil, w, 0, rows, flMode)
	if err != nil {
		return nil, err
	}
	shape := append([]int64(nil), w.Shape...)
	shape[len(shape)-1] /= 32
	return flResult("e8m0_scale", quant.Tensor{DType: quant.U8, Shape: shape, Data: b}), nil
}

func unitMXFP8Quantize(c *Case) (*Result, error) {
	w, err := c.MustInput("weight")
	if err != nil {
		return nil, err
	}
	given, err := optInput(c, "weights_scaling_factor")
	if err != nil {
		return nil, err
	}
	q, s, err := ref.MXFP8Quantize(w, given, flMode)
	if err != nil {
		return nil, err
	}
	r := flResult("quantized", q, "e8m0_scale", s)
	return withDequantized(c, r, func() (quant.Tensor, error) { return ref.MXFP8Dequantize(q, s, w.DType) })
}

func unitNVFP4CastFP4(c *Case) (*Result, error) {
	v, err := c.MustInput("values")
	if err != nil {
		return nil, err
	}
	x, err := quant.Float32s(v)
	if err != nil {
		return nil, err
	}
	out := make([]byte, len(x))
	for i, y := range x {
		out[i] = quant.F32ToE2M1Even(y)
	}
	return flResult("codes", quant.Tensor{DType: quant.U8, Shape: v.Shape, Data: out}), nil
}

func unitNVFP4CastBlockScale(c *Case) (*Result, error) {
	s, err := c.MustInput("per_block_scale")
	if err != nil {
		return nil, err
	}
	smaxT, err := optInput(c, "per_block_scale_max")
	if err != nil {
		return nil, err
	}
	fp8Max := float32(quant.E4M3Max)
	var fm *float64
	if _, err := c.Param("fp8_max_for_normalization", &fm); err != nil {
		return nil, err
	}
	if fm != nil {
		fp8Max = float32(*fm)
	}
	x, err := quant.Float32s(s)
	if err != nil {
		return nil, err
	}
	var smax float32
	if smaxT != nil {
		if smaxT.Numel() != 1 {
			return nil, fmt.Errorf("%w: per_block_scale_max %v is not a scalar", quant.ErrShape, smaxT.Shape)
		}
		if smax, err = quant.Scalar(*smaxT); err != nil {
			return nil, err
		}
	}
	out := make([]byte, len(x))
	for i, v := range x {
		out[i] = ref.NVFP4CastBlockScale(v, smax, fp8Max, smaxT != nil)
	}
	return flResult("fp8_scale", quant.Tensor{DType: quant.F8E4M3, Shape: s.Shape, Data: out}), nil
}

func unitNVFP4Scale(c *Case) (*Result, error) {
	w, err := c.MustInput("weight")
	if err != nil {
		return nil, err
	}
	block, err := flIntParam(c, "block_size", 0)
	if err != nil {
		return nil, err
	}
	if block == 0 {
		return nil, fmt.Errorf("%w: block size is zero", quant.ErrAssertion)
	}
	high, err := flBoolParam(c, "keep_high_precision")
	if err != nil {
		return nil, err
	}
	s2t, err := optInput(c, "weights_scaling_factor_2")
	if err != nil {
		return nil, err
	}
	if s2t == nil {
		a, err := quant.TensorAmax(w)
		if err != nil {
			return nil, err
		}
		t, _ := quant.FromFloat32(quant.F32, nil, []float32{ref.NVFP4GlobalScale(a, quant.E4M3Max, flMode)})
		s2t = &t
	}
	s2, err := quant.Float32s(*s2t) // one value, or one per expert as ModelOpt broadcasts it
	if err != nil {
		return nil, err
	}
	if len(w.Shape) == 0 || w.Shape[len(w.Shape)-1]%int64(block) != 0 {
		return nil, fmt.Errorf("%w: weight shape %v is not divisible by block %d", quant.ErrAssertion, w.Shape, block)
	}
	n := quant.NVFP4{Block: block, Scale2: s2}
	rows := int(w.Numel() / w.Shape[len(w.Shape)-1])
	shape := append([]int64(nil), w.Shape...)
	shape[len(shape)-1] /= int64(block)
	st, err := flNVFP4BlockScales(n, w, rows, shape, high)
	if err != nil {
		return nil, err
	}
	return flResult("weights_scaling_factor", st, "weights_scaling_factor_2", *s2t), nil
}

// flNVFP4BlockScales is get_weights_scaling_factor's block scales of rows [0, rows)
// of w, in shape: float32 before the FP8 cast with keep_high_precision (high), else
// the E4M3 codes.
func flNVFP4BlockScales(n quant.NVFP4, w quant.Tensor, rows int, shape []int64, high bool) (quant.Tensor, error) {
	if high {
		v, err := n.AppendBlockScalesF32(nil, w, 0, rows)
		if err != nil {
			return quant.Tensor{}, err
		}
		return quant.FromFloat32(quant.F32, shape, v)
	}
	b, err := n.AppendBlockScales(nil, w, 0, rows)
	if err != nil {
		return quant.Tensor{}, err
	}
	return quant.Tensor{DType: quant.F8E4M3, Shape: shape, Data: b}, nil
}

func unitNVFP4ScaleFromQuantizer(c *Case) (*Result, error) {
	w, err := c.MustInput("weight")
	if err != nil {
		return nil, err
	}
	block, err := flIntParam(c, "block_size", 0)
	if err != nil {
		return nil, err
	}
	if block < 1 || len(w.Shape) == 0 {
		return nil, fmt.Errorf("%w: block size %d for weight %v", quant.ErrShape, block, w.Shape)
	}
	fos, err := flBoolParam(c, "four_over_six")
	if err != nil {
		return nil, err
	}
	fp8Max := float32(quant.E4M3Max)
	if fos {
		fp8Max = 256
	}
	amaxT, err := c.MustInput("quantizer._amax")
	if err != nil {
		return nil, err
	}
	g, err := optInput(c, "quantizer.global_amax")
	if err != nil {
		return nil, err
	}
	if g == nil {
		if g, err = optInput(c, "quantizer._global_amax"); err != nil {
			return nil, err
		}
	}
	rows := int(w.Numel() / w.Shape[len(w.Shape)-1])
	nb := int(w.Shape[len(w.Shape)-1]) / block
	shape := append([]int64(nil), w.Shape...)
	shape[len(shape)-1] = int64(nb)
	high, err := flBoolParam(c, "keep_high_precision")
	if err != nil {
		return nil, err
	}
	given, err := optInput(c, "weights_scaling_factor_2")
	if err != nil {
		return nil, err
	}
	var s2 float32
	var st quant.Tensor
	if g != nil { // static quantizer: block scales from the per-block _amax
		ga, err := quant.Scalar(*g)
		if err != nil {
			return nil, err
		}
		s2 = ref.NVFP4GlobalScale(ga, fp8Max, flMode)
		amax, err := quant.Float32s(amaxT)
		if err != nil {
			return nil, err
		}
		if len(amax) != rows*nb {
			return nil, fmt.Errorf("%w: %d block amaxes for weight %v with block %d", quant.ErrShape, len(amax), w.Shape, block)
		}
		if high { // scales before normalisation and cast
			if st, err = quant.FromFloat32(quant.F32, shape, ref.NVFP4StaticBlockScalesF32(nil, amax, flMode)); err != nil {
				return nil, err
			}
		} else {
			st = quant.Tensor{DType: quant.F8E4M3, Shape: shape, Data: ref.NVFP4StaticBlockScales(nil, amax, ga, fp8Max, flMode)}
		}
	} else { // dynamic quantizer: wsf2 from _amax, blocks from the weight
		a, err := quant.Scalar(amaxT)
		if err != nil {
			return nil, err
		}
		s2 = ref.NVFP4GlobalScale(a, fp8Max, flMode)
		if w.Shape[len(w.Shape)-1]%int64(block) != 0 {
			return nil, fmt.Errorf("%w: weight %v not divisible by block %d", quant.ErrAssertion, w.Shape, block)
		}
		n := quant.NVFP4{Block: block, Scale2: []float32{s2}}
		if given != nil {
			if n.Scale2, err = quant.Float32s(*given); err != nil {
				return nil, err
			}
		}
		if st, err = flNVFP4BlockScales(n, w, rows, shape, high); err != nil {
			return nil, err
		}
	}
	s2t, _ := quant.FromFloat32(quant.F32, nil, []float32{s2})
	if given != nil { // returned as given; the static block scales do not use it
		s2t = *given
	}
	r := flResult("weights_scaling_factor", st, "weights_scaling_factor_2", s2t)
	if flWants(c, "quantized") && !high {
		q, err := quant.ToQuantizedWeight(w, &st, &s2t, "nvfp4", block, flMode)
		if err != nil {
			return nil, err
		}
		r.Tensors["quantized"] = &q
	}
	return r, nil
}

func unitNVFP4Quantize(c *Case) (*Result, error) {
	w, err := c.MustInput("weight")
	if err != nil {
		return nil, err
	}
	block, err := flIntParam(c, "block_size", 0)
	if err != nil {
		return nil, err
	}
	s, err := optInput(c, "weights_scaling_factor")
	if err != nil {
		return nil, err
	}
	s2, err := optInput(c, "weights_scaling_factor_2")
	if err != nil {
		return nil, err
	}
	p, sc, sc2, err := ref.NVFP4Quantize(w, block, s, s2, flMode)
	if err != nil {
		return nil, err
	}
	r := flResult("quantized", p, "weights_scaling_factor", sc, "weights_scaling_factor_2", sc2)
	return withDequantized(c, r, func() (quant.Tensor, error) {
		return ref.NVFP4Dequantize(p, sc, sc2, block, w.DType)
	})
}

// unitFP8PCBMMExperts is the exporter's BMM-expert sequence for fp8_pc_pt: transpose
// the last two dimensions, quantize with the (E, N) scale, transpose back.
func unitFP8PCBMMExperts(c *Case) (*Result, error) {
	w, err := c.MustInput("weight")
	if err != nil {
		return nil, err
	}
	s, err := c.MustInput("weights_scaling_factor")
	if err != nil {
		return nil, err
	}
	wt, err := quant.TransposeLast2(w)
	if err != nil {
		return nil, err
	}
	q, err := quant.ToQuantizedWeight(wt, &s, nil, "fp8_pc_pt", 0, flMode)
	if err != nil {
		return nil, err
	}
	qt, err := quant.TransposeLast2(q)
	if err != nil {
		return nil, err
	}
	return flResult("quantized", qt), nil
}

func unitToQuantizedWeight(c *Case) (*Result, error) {
	w, err := c.MustInput("weight")
	if err != nil {
		return nil, err
	}
	s, err := optInput(c, "weights_scaling_factor")
	if err != nil {
		return nil, err
	}
	s2, err := optInput(c, "weights_scaling_factor_2")
	if err != nil {
		return nil, err
	}
	block, err := flIntParam(c, "block_size", 0)
	if err != nil {
		return nil, err
	}
	q, err := quant.ToQuantizedWeight(w, s, s2, c.Format, block, flMode)
	if err != nil {
		return nil, err
	}
	return flResult("quantized", q), nil
}
