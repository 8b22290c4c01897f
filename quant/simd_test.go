package quant

import (
	"bytes"
	"math"
	"math/rand/v2"
	"testing"
)

// TestNVFP4VectorMatchesScalar feeds the vector kernel (the scalar one without the
// simd experiment) random bit patterns, grid values, ties, signed zeros, NaN,
// infinities and subnormals, with ordinary, tiny, zero and NaN divisors.
func TestNVFP4VectorMatchesScalar(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	special := []float32{0, float32(math.Copysign(0, -1)), 0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5, 6, -0.75, -3.5,
		float32(math.NaN()), float32(math.Inf(1)), float32(math.Inf(-1)), math.SmallestNonzeroFloat32, -math.SmallestNonzeroFloat32,
		math.Nextafter32(0.75, 1), math.Nextafter32(0.75, 0), 448, -1e30}
	x := make([]float32, 4096)
	for i := range x {
		switch i % 3 {
		case 0:
			x[i] = math.Float32frombits(r.Uint32())
		case 1:
			x[i] = special[r.IntN(len(special))]
		default:
			x[i] = float32(r.IntN(97)-48) / 8
		}
	}
	for _, div := range []float32{1, 0.5, 0.013, 3e-39, 0, float32(math.NaN()), -2, 1e30} {
		got := make([]byte, len(x)/2)
		want := make([]byte, len(x)/2)
		divs := make([]float32, len(x)/16)
		for i := range divs {
			divs[i] = div * float32(i%5+1)
		}
		nvfp4PackRowVec(got, x, divs, 16)
		for b, d := range divs {
			nvfp4PackDivScalar(want[b*8:(b+1)*8], x[b*16:(b+1)*16], d)
		}
		if !bytes.Equal(got, want) {
			for j := range got {
				if got[j] != want[j] {
					t.Fatalf("div %g: byte %d (x = %g, %g): vector %#02x, scalar %#02x", div, j, x[2*j], x[2*j+1], got[j], want[j])
				}
			}
		}
	}
}

// TestNVFP4QuantizeBothPaths quantizes a whole tensor with the vector path on and
// off: the bytes must not depend on it.
func TestNVFP4QuantizeBothPaths(t *testing.T) {
	w := fqTestWeight(32, 512, 9)
	s2 := fqScalarTensor(0.0005)
	run := func(simd bool) NVFP4Quantized {
		saved := fqSIMD
		fqSIMD = simd && saved
		defer func() { fqSIMD = saved }()
		q, err := NVFP4Quantize(w, 16, nil, &s2, DivIEEE)
		if err != nil {
			t.Fatal(err)
		}
		return q
	}
	a, b := run(true), run(false)
	if !bytes.Equal(a.Packed.Data, b.Packed.Data) || !bytes.Equal(a.Scales.Data, b.Scales.Data) {
		t.Error("vector and portable NVFP4 differ")
	}
}
