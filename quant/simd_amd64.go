//go:build goexperiment.simd && amd64

package quant

import (
	"math"
	"simd/archsimd"
)

// fqSIMD selects the AVX2 kernels; tests turn it off to compare both paths.
var fqSIMD = archsimd.X86.AVX2()

// nvfp4PackRowVec is nvfp4PackRow eight elements at a time (block a multiple of
// 8). The quotient is the same IEEE division per lane, and the E2M1 code is
// counted with integer comparisons on the sign-cleared bits: for non-negative
// floats (and NaN, whose bits exceed every bound) bit order is value order, so
// "bound < |y|" and "|y| == tie" are exact, NaN counts 7 and never ties, and
// y < 0 (false for NaN and −0) gives the sign.
func nvfp4PackRowVec(o []byte, row, divs []float32, block int) {
	zero := archsimd.BroadcastFloat32x8(0)
	abs := archsimd.BroadcastInt32x8(0x7FFFFFFF)
	eight := archsimd.BroadcastInt32x8(8)
	izero := archsimd.BroadcastInt32x8(0)
	nib := archsimd.BroadcastInt64x4(0xF)
	var bound [7]archsimd.Int32x8
	for k, b := range e2m1Bounds {
		bound[k] = archsimd.BroadcastInt32x8(int32(math.Float32bits(b)))
	}
	var lanes [4]int64
	for b, div := range divs {
		d := archsimd.BroadcastFloat32x8(div)
		for i := b * block; i < (b+1)*block; i += 8 {
			y := archsimd.LoadFloat32x8Slice(row[i : i+8]).Div(d)
			a := y.AsInt32x8().And(abs)
			// Each true mask lane is −1, so the sum is minus the count.
			m := a.Greater(bound[0]).ToInt32x8().
				Add(a.Greater(bound[1]).ToInt32x8()).
				Add(a.Greater(bound[2]).ToInt32x8()).
				Add(a.Greater(bound[3]).ToInt32x8()).
				Add(a.Greater(bound[4]).ToInt32x8()).
				Add(a.Greater(bound[5]).ToInt32x8()).
				Add(a.Greater(bound[6]).ToInt32x8()).
				// Ties that go up to the even code: 0.75, 1.75, 3.5.
				Add(a.Equal(bound[1]).ToInt32x8()).
				Add(a.Equal(bound[3]).ToInt32x8()).
				Add(a.Equal(bound[5]).ToInt32x8())
			code := izero.Sub(m).Or(y.Less(zero).ToInt32x8().And(eight))
			v := code.AsInt64x4()
			v.And(nib).Or(v.ShiftAllRight(32).ShiftAllLeft(4)).Store(&lanes)
			j := i / 2
			o[j], o[j+1], o[j+2], o[j+3] = byte(lanes[0]), byte(lanes[1]), byte(lanes[2]), byte(lanes[3])
		}
	}
}
