package quant

import (
	"math"
	"testing"
)

func TestDivScalarReciprocalBits(t *testing.T) {
	// The float32 reciprocals CUDA multiplies by, as bit patterns.
	for _, tc := range []struct {
		d    float32
		bits uint32
	}{{448, 0x3b124925}, {2688, 0x39c30c31}, {6, 0x3e2aaaab}, {7, 0x3e124925}, {127, 0x3c010204}, {1536, 0x3a2aaaab}} {
		if got := math.Float32bits(DivScalar(1, tc.d, DivCUDA)); got != tc.bits {
			t.Errorf("1/%v = %#08x, want %#08x", tc.d, got, tc.bits)
		}
	}
	// The modes must disagree somewhere, or DivCUDA is not doing its job.
	differ := 0
	for i := 1; i < 1000; i++ {
		a := float32(i) * 0.0137
		if DivScalar(a, 448, DivIEEE) != DivScalar(a, 448, DivCUDA) {
			differ++
		}
	}
	if differ == 0 {
		t.Fatal("DivIEEE and DivCUDA never differ for d=448")
	}
}
