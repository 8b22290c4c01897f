package quant

import (
	"fmt"
	"math"
	"sort"
)

// CalibrateAmax is ModelOpt's max calibration of a weight quantizer on its weight w
// (forward_loop=None, and the recalibration after AWQ rescaling). The reduction follows
// the quantizer's layout:
//
//	per-tensor (no axis, no blocks)        → 0-dim
//	axis a (int or tuple)                  → w reduced over the other dims, keepdims: (O,1)
//	static blocks on the last axis only, B → (N·ceil(I/B), 1) over w flattened to (-1, B)
//	blocks on several axes ({-1:B1,-2:B2}) → (ceil(O/B2),1,ceil(I/B1),1)
//
// A result with one element is squeezed to 0-dim (reduce_amax's squeeze_scalar). Short
// blocks are zero-padded, which leaves the amax unchanged. The value is max(|x|) in w's
// dtype; integer static-block quantizers (INT4) are promoted to
// StaticBlockScaleQuantizer, which keeps its amax in float32. Dynamic quantizers and MX
// formats keep no amax (ErrNoAmax); a NaN or infinite weight is an ErrAssertion, as the
// max calibrator asserts. For a SequentialQuantizer calibrate each element on w.
//
// It reads w's bytes once, row by row, without a float32 copy (RowCalibration, which
// also splits the work for several cores); calibrateAmaxRef is the reference.
func CalibrateAmax(q *Quantizer, w Tensor) (Tensor, error) {
	c, err := NewRowCalibration(q, w)
	if err != nil {
		return Tensor{}, err
	}
	cells := make([]uint32, c.Cells())
	c.Reduce(cells, 0, c.Rows())
	return c.Amax(cells)
}

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

func normAxis(a, rank int) int {
	if a < 0 {
		return a + rank
	}
	return a
}

func containsInt(s []int, x int) bool {
	for _, v := range s {
		if v == x {
			return true
		}
	}
	return false
}

// calibKey finds the block_sizes key naming axis i (written as i or i-rank).
func calibKey(bs *BlockSizes, i, rank int) int {
	if _, ok := bs.Dims[i]; ok {
		return i
	}
	return i - rank
}

// CalibratedAmaxDType is the dtype of the amax CalibrateAmax computes for q on a
// weight of dtype dt and the given rank, known without the weight's data so that a
// plan can lay out the buffer before calibration: integer static last-axis block
// quantizers become StaticBlockScaleQuantizer and keep a float32 amax; every other
// amax keeps the weight's dtype.
func CalibratedAmaxDType(q *Quantizer, dt DType, rank int) DType {
	bs := q.BlockSizes
	if bs == nil || bs.Dynamic() {
		return dt
	}
	if axes := calibBlockAxes(bs, rank); len(axes) == 1 && axes[0] == rank-1 {
		if _, isInt := q.NumBits.Int(); isInt && q.FakeQuant {
			return F32
		}
	}
	return dt
}

// calibBlockAxes lists the axes with a block size > 0, sorted.
func calibBlockAxes(bs *BlockSizes, rank int) []int {
	if bs == nil {
		return nil
	}
	var axes []int
	for ax, b := range bs.Dims {
		if b > 0 {
			axes = append(axes, normAxis(ax, rank))
		}
	}
	sort.Ints(axes)
	return axes
}

// calibPerChannelBlocks reports block sizes whose integer keys are all None.
func calibPerChannelBlocks(bs *BlockSizes) bool {
	if len(bs.Dims) == 0 {
		return false
	}
	for _, b := range bs.Dims {
		if b > 0 {
			return false
		}
	}
	return true
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

// CheckCalibrationDType reports whether CalibrateAmax can calibrate a weight of dtype
// dt (ErrUnsupportedDType otherwise): only BF16, F16 and F32 weights, so that a
// planner can refuse, from headers, a weight that is already quantized.
func CheckCalibrationDType(dt DType) error {
	if !intFloatDType(dt) {
		return fmt.Errorf("%w: calibrate on %v (only BF16, F16 and F32 weights)", ErrUnsupportedDType, dt)
	}
	return nil
}
