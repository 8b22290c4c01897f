package quant

import (
	"errors"
	"math"
	"testing"
)

func TestCheckFinite(t *testing.T) {
	nan, inf := float32(math.NaN()), float32(math.Inf(1))
	for _, tc := range []struct {
		name     string
		v        []float32
		positive bool
		want     error
	}{
		{"ok", []float32{0, 1, 2}, false, nil},
		{"zero allowed", []float32{0}, false, nil},
		{"zero refused", []float32{1, 0}, true, ErrNonPositive},
		{"negative", []float32{1, -2}, false, ErrNonPositive},
		{"NaN", []float32{nan}, false, ErrNonFinite},
		{"+Inf", []float32{inf}, true, ErrNonFinite},
		{"-Inf", []float32{-inf}, false, ErrNonFinite},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, dt := range []DType{BF16, F16, F32} {
				x, err := FromFloat32(dt, []int64{int64(len(tc.v))}, tc.v)
				if err != nil {
					t.Fatal(err)
				}
				if err := CheckFinite(x, tc.positive); !errors.Is(err, tc.want) || (tc.want == nil) != (err == nil) {
					t.Errorf("%v: got %v, want %v", dt, err, tc.want)
				}
			}
		})
	}
}

// TestTensorCheckErrShape: every Check failure is ErrShape, also for hostile shapes
// whose element count overflows.
func TestTensorCheckErrShape(t *testing.T) {
	for _, tt := range []Tensor{
		{DType: F32, Shape: []int64{-1}},
		{DType: F32, Shape: []int64{2}, Data: make([]byte, 4)},
		{DType: F32, Shape: []int64{1 << 40, 1 << 40}},
		{DType: F32, Shape: []int64{3, 1 << 62, 4}},
		{DType: F4, Shape: []int64{3}, Data: make([]byte, 2)},
	} {
		if err := tt.Check(); !errors.Is(err, ErrShape) {
			t.Errorf("%v %v: %v, want ErrShape", tt.DType, tt.Shape, err)
		}
	}
}
