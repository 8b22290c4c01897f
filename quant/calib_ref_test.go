package quant

import (
	"fmt"
	"math"
)

// calibrateAmaxRef is CalibrateAmax written after ModelOpt's reduction: the weight
// decoded to float32, zero-padded to whole blocks, reduced with keepdims. The tests
// hold CalibrateAmax to it.
func calibrateAmaxRef(q *Quantizer, w Tensor) (Tensor, error) {
	if q == nil || isSequential(q) {
		return Tensor{}, fmt.Errorf("%w: calibrate a single quantizer", ErrShape)
	}
	if q.Dynamic || IsMXFormat(q) {
		return Tensor{}, ErrNoAmax
	}
	if !intFloatDType(w.DType) {
		return Tensor{}, fmt.Errorf("%w: calibrate on %v", ErrUnsupportedDType, w.DType)
	}
	v, err := Float32s(w)
	if err != nil {
		return Tensor{}, fmt.Errorf("weight: %w", err)
	}
	for _, x := range v {
		if x != x || math.IsInf(float64(x), 0) {
			return Tensor{}, fmt.Errorf("%w: detected nan or inf values in amax", ErrAssertion)
		}
	}
	outDT := w.DType
	rank := len(w.Shape)

	var shape []int64
	var amax []float32
	bs := q.BlockSizes
	axes := calibBlockAxes(bs, rank)
	if bs.Dynamic() {
		// Dynamic block quantizers (NVFP4) calibrate one amax for the whole tensor;
		// their blocks are scaled at quantization time.
		axes, bs = nil, nil
	}
	switch {
	case bs != nil && len(axes) == 0 && calibPerChannelBlocks(bs):
		// {-1: None, ...}: block sizes that only name axes are converted to an axis.
		keep := map[int]bool{}
		for ax := range bs.Dims {
			keep[normAxis(ax, rank)] = true
		}
		var axis []int
		for i := 0; i < rank; i++ {
			if !keep[i] {
				axis = append(axis, i)
			}
		}
		if axis == nil {
			shape, amax = []int64{}, []float32{fqAbsMax(0, v)}
		} else {
			shape, amax = calibReduceKeep(v, w.Shape, axis)
		}
	case len(axes) == 1 && axes[0] == rank-1:
		b := int64(bs.Dims[calibKey(bs, rank-1, rank)])
		in := w.Shape[rank-1]
		nb := (in + b - 1) / b
		rows := Numel(w.Shape) / max(in, 1)
		amax = make([]float32, 0, rows*nb)
		for r := int64(0); r < rows; r++ {
			row := v[r*in : (r+1)*in]
			for j := int64(0); j < nb; j++ {
				amax = append(amax, fqAbsMax(0, row[j*b:min((j+1)*b, in)]))
			}
		}
		shape = []int64{rows * nb, 1}
		outDT = CalibratedAmaxDType(q, w.DType, rank)
	case len(axes) > 0:
		// Reshape every blocked axis d into (ceil(d/b), b) and reduce over the b's.
		var rshape []int64
		var keepAx []int
		for i := 0; i < rank; i++ {
			d := w.Shape[i]
			if b := int64(bs.Dims[calibKey(bs, i, rank)]); b > 0 {
				keepAx = append(keepAx, len(rshape))
				rshape = append(rshape, (d+b-1)/b, b)
				continue
			}
			keepAx = append(keepAx, len(rshape))
			rshape = append(rshape, d)
		}
		padded := calibPad(v, w.Shape, rshape, bs, rank)
		var red []int
		for i := range rshape {
			if !containsInt(keepAx, i) {
				red = append(red, i)
			}
		}
		shape, amax = calibReduceKeep(padded, rshape, red)
	case q.Axis == nil:
		shape, amax = []int64{}, []float32{fqAbsMax(0, v)}
	default:
		keep := map[int]bool{}
		for _, a := range q.Axis {
			keep[normAxis(a, rank)] = true
		}
		var red []int
		for i := 0; i < rank; i++ {
			if !keep[i] {
				red = append(red, i)
			}
		}
		shape, amax = calibReduceKeep(v, w.Shape, red)
	}
	if len(amax) == 1 {
		shape = []int64{}
	}
	return FromFloat32(outDT, shape, amax)
}

func containsInt(s []int, x int) bool {
	for _, v := range s {
		if v == x {
			return true
		}
	}
	return false
}

// calibPad lays v (shape) out in the block-reshaped shape rshape, zero-padding every
// blocked axis to a multiple of its block.
func calibPad(v []float32, shape, rshape []int64, bs *BlockSizes, rank int) []float32 {
	pshape := make([]int64, rank)
	for i := 0; i < rank; i++ {
		pshape[i] = shape[i]
		if b := int64(bs.Dims[calibKey(bs, i, rank)]); b > 0 {
			pshape[i] = (shape[i] + b - 1) / b * b
		}
	}
	out := make([]float32, Numel(pshape))
	idx := make([]int64, rank)
	for n := range v {
		off := int64(0)
		for i := 0; i < rank; i++ {
			off = off*pshape[i] + idx[i]
		}
		out[off] = v[n]
		for d := rank - 1; d >= 0; d-- {
			idx[d]++
			if idx[d] < shape[d] {
				break
			}
			idx[d] = 0
		}
	}
	return out
}

// calibReduceKeep is max(|x|) over the axes red of a tensor of shape, with keepdims.
func calibReduceKeep(v []float32, shape []int64, red []int) ([]int64, []float32) {
	out := cloneShape(shape)
	for _, a := range red {
		out[a] = 1
	}
	res := make([]float32, Numel(out))
	st := make([]int64, len(out))
	acc := int64(1)
	for i := len(out) - 1; i >= 0; i-- {
		st[i] = acc
		acc *= out[i]
	}
	idx := make([]int64, len(shape))
	for _, x := range v {
		off := int64(0)
		for i := range shape {
			if out[i] != 1 {
				off += idx[i] * st[i]
			}
		}
		a := float32(math.Abs(float64(x)))
		if a > res[off] {
			res[off] = a
		}
		for d := len(shape) - 1; d >= 0; d-- {
			idx[d]++
			if idx[d] < shape[d] {
				break
			}
			idx[d] = 0
		}
	}
	return out, res
}
