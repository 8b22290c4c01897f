package quant

import (
	"bytes"
	"errors"
	"fmt"
	"math"
	"slices"
	"testing"
)

func fqTensor(t *testing.T, dt DType, shape []int64, v ...float32) Tensor {
	t.Helper()
	x, err := FromFloat32(dt, shape, v)
	if err != nil {
		t.Fatal(err)
	}
	return x
}

func fqRamp(n int, scale float32) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(i%37-18) * scale
	}
	return v
}

// TestFP8PerTensorPromotion pins the dtype rules of to_quantized_weight "fp8" (a 0-dim
// scale does not promote a bf16 weight, so the quotient is rounded to bf16) on values where
// the single and double roundings, and the CPU and CUDA divisors, differ.
func TestFP8PerTensorPromotion(t *testing.T) {
	// w/s = 1.0625 + a bit: f32 → E4M3 rounds up to 1.125, but the quotient first
	// rounded to bf16 is exactly 1.0625, a tie that goes to even 1.0.
	s := float32(0.9999)
	w := fqTensor(t, BF16, []int64{1, 2}, 1.0625, -1.0625)
	q0, err := quantizeFP8(w, fqTensor(t, F32, nil, s), DivIEEE)
	if err != nil {
		t.Fatal(err)
	}
	q1, err := quantizeFP8(w, fqTensor(t, F32, []int64{1}, s), DivIEEE)
	if err != nil {
		t.Fatal(err)
	}
	for i, x := range []float32{1.0625, -1.0625} {
		if want := F32ToE4M3(RoundTo(BF16, x/s)); q0.Data[i] != want {
			t.Errorf("0-dim scale, element %d: %#02x, want double rounding %#02x", i, q0.Data[i], want)
		}
		if want := F32ToE4M3(x / s); q1.Data[i] != want {
			t.Errorf("(1,) scale, element %d: %#02x, want single rounding %#02x", i, q1.Data[i], want)
		}
	}
	if bytes.Equal(q0.Data, q1.Data) {
		t.Error("test values do not separate the two roundings")
	}
	// DivCUDA also rounds the 0-dim divisor to bf16.
	sc := float32(0.0123457)
	wc := fqTensor(t, BF16, []int64{1, 64}, fqRamp(64, 0.37)...)
	qc, err := quantizeFP8(wc, fqTensor(t, F32, nil, sc), DivCUDA)
	if err != nil {
		t.Fatal(err)
	}
	x, _ := Float32s(wc)
	for i, v := range x {
		if want := F32ToE4M3(RoundTo(BF16, v/RoundTo(BF16, sc))); qc.Data[i] != want {
			t.Fatalf("DivCUDA element %d: %#02x, want %#02x", i, qc.Data[i], want)
		}
	}
	// A 3-D weight unsqueezes its scale: single rounding even with a 0-dim scale.
	w3 := fqTensor(t, BF16, []int64{1, 1, 2}, 1.0625, -1.0625)
	q3, err := quantizeFP8(w3, fqTensor(t, F32, nil, s), DivIEEE)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(q3.Data, q1.Data) {
		t.Errorf("3-D: % x, want single rounding % x", q3.Data, q1.Data)
	}
	// An FP8 weight passes through unchanged.
	f8 := Tensor{DType: F8E4M3, Shape: []int64{2}, Data: []byte{1, 2}}
	if q, err := quantizeFP8(f8, fqTensor(t, F32, nil, 3), DivIEEE); err != nil || !bytes.Equal(q.Data, f8.Data) {
		t.Errorf("fp8 weight: %v %v", q.Data, err)
	}
}

func TestFP8PerChannelLayouts(t *testing.T) {
	w := fqTensor(t, F32, []int64{2, 3, 4}, fqRamp(24, 0.5)...)
	x, _ := Float32s(w)
	for _, tc := range []struct {
		name  string
		shape []int64
		scale []float32
		idx   func(e, a, b int) int
		err   bool
	}{
		{"per expert", []int64{2}, []float32{2, 4}, func(e, a, b int) int { return e }, false},
		{"per output row", []int64{2, 3}, []float32{1, 2, 3, 4, 5, 6}, func(e, a, b int) int { return e*3 + a }, false},
		{"bmm per column", []int64{2, 4}, []float32{1, 2, 3, 4, 5, 6, 7, 8}, func(e, a, b int) int { return e*4 + b }, false},
		{"expert mismatch", []int64{3, 4}, make([]float32, 12), nil, true},
		{"no matching dim", []int64{2, 5}, make([]float32, 10), nil, true},
		{"0-dim", nil, []float32{1}, nil, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q, err := quantizeFP8PerChannel(w, fqTensor(t, F32, tc.shape, tc.scale...))
			if tc.err {
				if !errors.Is(err, ErrShape) {
					t.Fatalf("err = %v, want ErrShape", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for e := range 2 {
				for a := range 3 {
					for b := range 4 {
						i := (e*3+a)*4 + b
						if want := F32ToE4M3(x[i] / tc.scale[tc.idx(e, a, b)]); q.Data[i] != want {
							t.Fatalf("element (%d,%d,%d): %#02x, want %#02x", e, a, b, q.Data[i], want)
						}
					}
				}
			}
		})
	}
	sq := fqTensor(t, F32, []int64{2, 4, 4}, fqRamp(32, 1)...)
	if _, err := quantizeFP8PerChannel(sq, fqTensor(t, F32, []int64{2, 4}, make([]float32, 8)...)); !errors.Is(err, ErrShape) {
		t.Errorf("square expert weight: %v, want ErrShape", err)
	}
}

func TestFloatFormatDispatch(t *testing.T) {
	w := fqTensor(t, BF16, []int64{4, 64}, fqRamp(256, 0.01)...)
	t.Run("mxfp4 ignores the given scale", func(t *testing.T) {
		junk := fqTensor(t, F32, []int64{1}, 123)
		a, err := ToQuantizedWeight(w, &junk, nil, "mxfp4", 32, DivIEEE)
		if err != nil {
			t.Fatal(err)
		}
		b, err := ToQuantizedWeight(w, nil, nil, "w4a8_mxfp4_fp8", 32, DivIEEE)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(a.Data, b.Data) || a.DType != U8 || !slices.Equal(a.Shape, []int64{4, 32}) {
			t.Errorf("mxfp4: %v %v vs %v", a.DType, a.Shape, b.Shape)
		}
	})
	t.Run("nvfp4 asserts", func(t *testing.T) {
		s2 := fqTensor(t, F32, nil, 0.001)
		if _, err := ToQuantizedWeight(w, nil, nil, "nvfp4", 16, DivIEEE); !errors.Is(err, ErrAssertion) {
			t.Errorf("no scale2: %v", err)
		}
		if _, err := ToQuantizedWeight(w, nil, &s2, "nvfp4_svdquant", 0, DivIEEE); !errors.Is(err, ErrAssertion) {
			t.Errorf("no block: %v", err)
		}
	})
	t.Run("fp8_pb_real", func(t *testing.T) {
		if _, err := ToQuantizedWeight(w, nil, nil, "fp8_pb_real", 128, DivIEEE); !errors.Is(err, ErrNotImplemented) {
			t.Errorf("bf16 weight: %v", err)
		}
	})
	t.Run("fp8_pb_wo needs a grid-sized scale", func(t *testing.T) {
		s := fqTensor(t, F32, []int64{2}, 1, 1)
		if _, err := ToQuantizedWeight(w, &s, nil, "fp8_pb_wo", 128, DivIEEE); !errors.Is(err, ErrShape) {
			t.Errorf("%v, want ErrShape", err)
		}
	})
	t.Run("unsupported weight dtype", func(t *testing.T) {
		i8 := Tensor{DType: I8, Shape: []int64{1, 2}, Data: []byte{1, 2}}
		s := fqTensor(t, F32, nil, 1)
		if _, err := ToQuantizedWeight(i8, &s, nil, "fp8", 0, DivIEEE); !errors.Is(err, ErrUnsupportedDType) {
			t.Errorf("%v, want ErrUnsupportedDType", err)
		}
	})
}

// TestFloatRoundTrip quantizes and dequantizes through the registry and checks
// the error against each format's grid spacing.
func TestFloatRoundTrip(t *testing.T) {
	w := fqTestWeight(8, 256, 3)
	x, _ := Float32s(w)
	amax, _ := TensorAmax(w)
	type setup struct {
		s, s2 *Tensor
		block int
		tol   float64 // relative to the tensor amax
	}
	per := fqTensor(t, F32, nil, DivScalar(amax, 448, DivIEEE))
	s2 := fqTensor(t, F32, nil, nvfp4GlobalScale(amax, 448, DivIEEE))
	mxs, _ := appendMXFP8Scales(nil, w, 0, 8, DivIEEE)
	mx8 := Tensor{DType: U8, Shape: []int64{8, 8}, Data: mxs}
	_, mx4, _ := mxfp4Quantize(w, 32, DivIEEE)
	for name, c := range map[string]setup{
		"fp8":    {s: &per, tol: 1.0 / 8},
		"nvfp4":  {s2: &s2, block: 16, tol: 1.0 / 3},
		"mxfp8":  {s: &mx8, block: 32, tol: 1.0 / 8},
		"mxfp4":  {s: &mx4, block: 32, tol: 1.0 / 2},
		"fp8_pb": {block: 128, tol: 1.0 / 8},
	} {
		t.Run(name, func(t *testing.T) {
			format := name
			if name == "fp8_pb" {
				format = "fp8_pb_wo"
				bs, err := fp8BlockScales(w, fp8Blocks{-1: 128, -2: 128}, DivIEEE)
				if err != nil {
					t.Fatal(err)
				}
				c.s = &bs
			}
			var q Tensor
			var err error
			if name == "nvfp4" {
				r, err := nvfp4Quantize(w, 16, nil, c.s2, DivIEEE)
				if err != nil {
					t.Fatal(err)
				}
				q, c.s = r.Packed, &r.Scales
			} else if q, err = ToQuantizedWeight(w, c.s, c.s2, format, c.block, DivIEEE); err != nil {
				t.Fatal(err)
			}
			d, err := FromQuantizedWeight(q, c.s, c.s2, format, c.block, F32)
			if err != nil {
				t.Fatal(err)
			}
			y, _ := Float32s(d)
			if len(y) != len(x) {
				t.Fatalf("%d values, want %d", len(y), len(x))
			}
			for i := range x {
				if e := math.Abs(float64(y[i] - x[i])); e > c.tol*float64(amax) {
					t.Fatalf("element %d: %v -> %v", i, x[i], y[i])
				}
			}
		})
	}
}

func ExampleF32ToE4M3() {
	for _, x := range []float32{1.0625, 448, 464, 465, -1.0 / 2048} {
		fmt.Printf("%g -> %#02x\n", x, F32ToE4M3(x))
	}
	// Output:
	// 1.0625 -> 0x38
	// 448 -> 0x7e
	// 464 -> 0x7e
	// 465 -> 0x7f
	// -0.00048828125 -> 0x80
}

func ExampleF32ToE2M1Even() {
	for _, y := range []float32{0.75, 2.5, 3.5, -0.1, 0} {
		fmt.Printf("%g: nvfp4 %#x mxfp4 %#x\n", y, F32ToE2M1Even(y), F32ToE2M1Down(y))
	}
	// Output:
	// 0.75: nvfp4 0x2 mxfp4 0x1
	// 2.5: nvfp4 0x4 mxfp4 0x4
	// 3.5: nvfp4 0x6 mxfp4 0x5
	// -0.1: nvfp4 0x8 mxfp4 0x8
	// 0: nvfp4 0x0 mxfp4 0x8
}

func ExampleToQuantizedWeight() {
	w, _ := FromFloat32(BF16, []int64{1, 16}, []float32{0, 0.5, 1, 1.5, 2, 3, 4, 6, -6, -4, -3, -2, -1.5, -1, -0.5, 0})
	s2, _ := FromFloat32(F32, nil, []float32{1.0 / 448}) // amax 6 ÷ (6·448)
	q, err := ToQuantizedWeight(w, nil, &s2, "nvfp4", 16, DivIEEE)
	if err != nil {
		panic(err)
	}
	fmt.Printf("%v %v % x\n", q.DType, q.Shape, q.Data)
	// Output:
	// U8 [1 8] 10 32 54 76 ef cd ab 09
}

// TestMXFP8Padding: MXFP8QTensor.quantize pads the last dimension to 32 and crops
// the codes; get_weights_scaling_factor and quantize_with_scale assert instead.
func TestMXFP8Padding(t *testing.T) {
	v := fqRamp(2*40, 0.3)
	w := fqTensor(t, F32, []int64{2, 40}, v...)
	q, s, err := mxfp8Quantize(w, nil, DivIEEE)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(q.Shape, []int64{2, 40}) || !slices.Equal(s.Shape, []int64{2, 2}) {
		t.Fatalf("shapes %v %v", q.Shape, s.Shape)
	}
	padded := make([]float32, 2*64)
	copy(padded[:40], v[:40])
	copy(padded[64:104], v[40:])
	pq, ps, err := mxfp8Quantize(fqTensor(t, F32, []int64{2, 64}, padded...), nil, DivIEEE)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(s.Data, ps.Data) || !bytes.Equal(q.Data[:40], pq.Data[:40]) || !bytes.Equal(q.Data[40:], pq.Data[64:104]) {
		t.Error("padded quantization differs from explicit zero padding")
	}
	d, err := mxfp8Dequantize(q, s, F32)
	if err != nil || !slices.Equal(d.Shape, []int64{2, 40}) {
		t.Fatalf("dequantize: %v %v", d.Shape, err)
	}
	if _, err := appendMXFP8Scales(nil, w, 0, 2, DivIEEE); !errors.Is(err, ErrShape) {
		t.Errorf("get_weights_scaling_factor: %v, want ErrShape", err)
	}
	if _, err := ToQuantizedWeight(w, &s, nil, "mxfp8", 32, DivIEEE); !errors.Is(err, ErrShape) {
		t.Errorf("quantize_with_scale: %v, want ErrShape", err)
	}
}

// TestNVFP4StaticBlockScalesF32: the static block scales before the FP8 cast are
// amax ÷scalar 6 with 0 → 1, and normalising and casting them gives
// nvfp4StaticBlockScales' codes, in both division modes.
func TestNVFP4StaticBlockScalesF32(t *testing.T) {
	amax := []float32{0, 6, 3, 0.75, 448, 1e-3, 2.5e-7}
	for _, mode := range []DivMode{DivIEEE, DivCUDA} {
		t.Run(mode.String(), func(t *testing.T) {
			got := nvfp4StaticBlockScalesF32(nil, amax, mode)
			if want := []float32{1, 1, 0.5, 0.125}; !slices.Equal(got[:len(want)], want) {
				t.Errorf("scales %v, want %v first", got, want)
			}
			for i, a := range amax {
				if want := DivScalar(a, E2M1Max, mode); a != 0 && got[i] != want {
					t.Errorf("scale of amax %v = %v, want %v", a, got[i], want)
				}
			}
			const ga, fp8Max = 448, E4M3Max
			codes := nvfp4StaticBlockScales(nil, amax, ga, fp8Max, mode)
			smax := DivScalar(ga, E2M1Max, mode)
			for i, s := range got {
				if c := nvfp4CastBlockScale(s, smax, fp8Max, true); c != codes[i] {
					t.Errorf("block %d: cast of %v = %#02x, nvfp4StaticBlockScales %#02x", i, s, c, codes[i])
				}
			}
		})
	}
}
