package quant

import (
	"errors"
	"math"
	"testing"
)

func TestAppendFloat32RoundTrip(t *testing.T) {
	vals := []float32{0, 1, -2.5, 3.140625, 1e-3, -65504, float32(math.Copysign(0, -1))}
	for _, dt := range []DType{BF16, F16, F32, F8E4M3} {
		t.Run(dt.String(), func(t *testing.T) {
			src := make([]float32, len(vals))
			for i, v := range vals {
				src[i] = v
				if dt == F8E4M3 {
					src[i] = E4M3ToF32(F32ToE4M3(v))
				} else {
					src[i] = RoundTo(dt, v)
				}
			}
			if dt == F8E4M3 {
				src[5] = -448
			}
			tn, err := FromFloat32(dt, []int64{int64(len(src))}, src)
			if err != nil {
				t.Fatal(err)
			}
			prefix := []float32{42}
			got, err := appendFloat32(prefix, tn)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(src)+1 || got[0] != 42 {
				t.Fatalf("got %v", got)
			}
			for i := range src {
				if math.Float32bits(got[i+1]) != math.Float32bits(src[i]) {
					t.Errorf("element %d: %v, want %v", i, got[i+1], src[i])
				}
			}
		})
	}
}

func TestAppendFloat32Errors(t *testing.T) {
	if _, err := appendFloat32(nil, Tensor{DType: I8, Shape: []int64{1}, Data: []byte{1}}); !errors.Is(err, ErrUnsupportedDType) {
		t.Errorf("I8: %v", err)
	}
	if _, err := appendFloat32(nil, Tensor{DType: BF16, Shape: []int64{2}, Data: []byte{1}}); err == nil {
		t.Error("short data accepted")
	}
	if _, err := AppendEncoded(nil, []float32{1}, U8); !errors.Is(err, ErrUnsupportedDType) {
		t.Errorf("U8: %v", err)
	}
	if _, err := FromFloat32(F32, []int64{2, 2}, []float32{1}); !errors.Is(err, ErrShape) {
		t.Errorf("shape: %v", err)
	}
}

func TestScalar(t *testing.T) {
	s, err := FromFloat32(F32, nil, []float32{0.5})
	if err != nil {
		t.Fatal(err)
	}
	if v, err := Scalar(s); err != nil || v != 0.5 {
		t.Errorf("Scalar = %v, %v", v, err)
	}
}
