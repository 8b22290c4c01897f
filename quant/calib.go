package quant

import (
	"fmt"
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
// also splits the work for several cores); calibrateAmaxRef in calib_ref_test.go is
// the reference it is tested against.
func CalibrateAmax(q *Quantizer, w Tensor) (Tensor, error) {
	c, err := NewRowCalibration(q, w)
	if err != nil {
		return Tensor{}, err
	}
	cells := make([]uint32, c.Cells())
	c.Reduce(cells, 0, c.Rows())
	return c.Amax(cells)
}

func normAxis(a, rank int) int {
	if a < 0 {
		return a + rank
	}
	return a
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

// CheckCalibrationDType reports whether CalibrateAmax can calibrate a weight of dtype
// dt (ErrUnsupportedDType otherwise): only BF16, F16 and F32 weights, so that a
// planner can refuse, from headers, a weight that is already quantized.
func CheckCalibrationDType(dt DType) error {
	if !intFloatDType(dt) {
		return fmt.Errorf("%w: calibrate on %v (only BF16, F16 and F32 weights)", ErrUnsupportedDType, dt)
	}
	return nil
}
