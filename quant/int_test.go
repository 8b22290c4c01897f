package quant

import (
	"bytes"
	"errors"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// intTensor builds a tensor of dtype dt from float32 values (rounded to dt).
func intTensor(t testing.TB, dt DType, shape []int64, v []float32) Tensor {
	t.Helper()
	x, err := FromFloat32(dt, shape, v)
	if err != nil {
		t.Fatal(err)
	}
	return x
}

func intRandom(r *rand.Rand, n int, std float64) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(r.NormFloat64() * std)
	}
	return v
}

// refInt8 is the naive reference: one element at a time, in float64 where exact.
func refInt8(w []float32, s []float32, cols int) []byte {
	out := make([]byte, len(w))
	for i, x := range w {
		y := float64(x / s[i/cols])
		if math.IsNaN(y) {
			out[i] = 0
			continue
		}
		y = math.Max(-128, math.Min(127, math.RoundToEven(y)))
		out[i] = byte(int8(y))
	}
	return out
}

// refInt4 is the naive reference of pack_int4_in_uint8 for a 2-D weight.
func refInt4(w []float32, s []float32, rows, cols, scaleCols int) []byte {
	b := cols / scaleCols
	q := func(r, c int) byte {
		y := float64(w[r*cols+c] / s[r*scaleCols+c/b])
		if math.IsNaN(y) {
			return 0
		}
		return byte(int8(math.Max(-8, math.Min(7, math.RoundToEven(y))))) & 0xF
	}
	out := make([]byte, rows/2*cols)
	for p := 0; p < rows/2; p++ {
		for c := 0; c < cols; c++ {
			out[p*cols+c] = q(2*p, c) | q(2*p+1, c)<<4
		}
	}
	return out
}

func TestInt8RoundingTiesAndClamp(t *testing.T) {
	// scale 1: the quotient is the value itself.
	tests := []struct {
		name string
		x    float32
		want int8
	}{
		{"half to even 0", 0.5, 0},
		{"half to even 2", 1.5, 2},
		{"half to even 2 from 2.5", 2.5, 2},
		{"negative half", -0.5, 0},
		{"negative 2.5", -2.5, -2},
		{"126.5 to 126", 126.5, 126},
		{"127.5 clamps to 127", 127.5, 127},
		{"-128 reachable", -128, -128},
		{"-128.4 rounds to -128", -128.4, -128},
		{"-127.5 to -128", -127.5, -128},
		{"below range clamps", -1000, -128},
		{"above range clamps", 1e9, 127},
		{"+inf clamps", float32(math.Inf(1)), 127},
		{"-inf clamps", float32(math.Inf(-1)), -128},
		{"negative zero", float32(math.Copysign(0, -1)), 0},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := intTensor(t, F32, []int64{1, 1}, []float32{tc.x})
			s := intTensor(t, F32, []int64{1}, []float32{1})
			q, err := quantizeInt8(w, s)
			if err != nil {
				t.Fatal(err)
			}
			if got := int8(q.Data[0]); got != tc.want {
				t.Fatalf("q(%v) = %d, want %d", tc.x, got, tc.want)
			}
		})
	}
}

func TestInt4RoundingTiesAndNibbles(t *testing.T) {
	tests := []struct {
		name   string
		lo, hi float32 // quotients of the even and odd row
		want   byte
	}{
		{"zeros", 0, 0, 0x00},
		{"0.5 and 1.5", 0.5, 1.5, 0x20},
		{"2.5 and -2.5", 2.5, -2.5, 0xE2},
		{"-8 reachable", -8, 7, 0x78},
		{"-7.5 to -8", -7.5, 6.5, 0x68},
		{"7.5 clamps to 7", 7.5, -8.5, 0x87},
		{"-1 is 0xF", -1, 1, 0x1F},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := intTensor(t, F32, []int64{2, 1}, []float32{tc.lo, tc.hi})
			s := intTensor(t, F32, []int64{2, 1}, []float32{1, 1})
			p, err := packInt4InUint8(w, s)
			if err != nil {
				t.Fatal(err)
			}
			if p.Data[0] != tc.want || !slices.Equal(p.Shape, []int64{1, 1}) {
				t.Fatalf("packed %#02x %v, want %#02x [1 1]", p.Data[0], p.Shape, tc.want)
			}
			u, err := unpackInt4(p)
			if err != nil {
				t.Fatal(err)
			}
			want := []int8{intRound(tc.lo, -8, 7), intRound(tc.hi, -8, 7)}
			if int8(u.Data[0]) != want[0] || int8(u.Data[1]) != want[1] {
				t.Fatalf("unpacked %d %d, want %v", int8(u.Data[0]), int8(u.Data[1]), want)
			}
		})
	}
}

func TestScalingFactorFromWeightZeros(t *testing.T) {
	v := []float32{
		0, 0, 0, 0, // zero row: int8 scale 1, both int4 blocks 1
		0, 0, 3.5, -7, // first block zero
		float32(math.Copysign(0, -1)), 0, 127, 0, // -0 counts as zero
	}
	w := intTensor(t, BF16, []int64{3, 4}, v)
	s8, err := scalingFactorFromWeight(w, 0, DivIEEE)
	if err != nil {
		t.Fatal(err)
	}
	got8, _ := Float32s(s8)
	want8 := []float32{1, float32(7) / 127, 1}
	for i := range want8 {
		if got8[i] != want8[i] {
			t.Errorf("int8 scale[%d] = %v, want %v", i, got8[i], want8[i])
		}
	}
	s4, err := scalingFactorFromWeight(w, 2, DivIEEE)
	if err != nil {
		t.Fatal(err)
	}
	got4, _ := Float32s(s4)
	want4 := []float32{1, 1, 1, 1, 1, float32(127) / 7}
	if !slices.Equal(s4.Shape, []int64{3, 2}) {
		t.Fatalf("int4 scale shape %v", s4.Shape)
	}
	for i := range want4 {
		if got4[i] != want4[i] {
			t.Errorf("int4 scale[%d] = %v, want %v", i, got4[i], want4[i])
		}
	}
	// A hand-checked vector: groups of two, amax / 7, a zero group gets 1.
	tv := intTensor(t, F32, []int64{2, 4}, []float32{0, 0.35, 0.28, 7, 0.49, 0.84, -0.77, 0.07})
	s, err := scalingFactorFromWeight(tv, 2, DivIEEE)
	if err != nil {
		t.Fatal(err)
	}
	got, _ := Float32s(s)
	for i, want := range []float32{0.05, 1, 0.12, 0.11} {
		if got[i] != want {
			t.Errorf("test vector scale[%d] = %v, want %v", i, got[i], want)
		}
	}
	if _, err := scalingFactorFromWeight(tv, 3, DivIEEE); !errors.Is(err, ErrNotImplemented) {
		t.Errorf("group 3 of 4 columns: err %v, want ErrNotImplemented", err)
	}
}

func TestInt8KernelMatchesReference(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	const rows, cols = 37, 96
	for _, dt := range []DType{BF16, F16, F32} {
		v := intRandom(r, rows*cols, 0.02)
		for i := 0; i < cols; i++ {
			v[5*cols+i] = 0 // a zero row
		}
		w := intTensor(t, dt, []int64{rows, cols}, v)
		s, err := scalingFactorFromWeight(w, 0, DivIEEE)
		if err != nil {
			t.Fatal(err)
		}
		sv, _ := Float32s(s)
		wv, _ := Float32s(w)
		q, err := quantizeInt8(w, s)
		if err != nil {
			t.Fatal(err)
		}
		if want := refInt8(wv, sv, cols); !bytes.Equal(q.Data, want) {
			t.Fatalf("%v: kernel differs from reference", dt)
		}
		// Row ranges are independent: two halves give the same bytes.
		es := dt.Size()
		half := rows / 2
		part, err := appendInt8Rows(nil, w.Data[:half*cols*es], dt, cols, sv[:half])
		if err != nil {
			t.Fatal(err)
		}
		if part, err = appendInt8Rows(part, w.Data[half*cols*es:], dt, cols, sv[half:]); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(part, q.Data) {
			t.Fatalf("%v: row-range split differs", dt)
		}
	}
}

func TestInt4KernelMatchesReference(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	const rows, cols, block = 12, 256, 64
	for _, dt := range []DType{BF16, F16, F32} {
		v := intRandom(r, rows*cols, 0.02)
		for i := 0; i < block; i++ {
			v[3*cols+64+i] = 0 // a zero block
		}
		w := intTensor(t, dt, []int64{rows, cols}, v)
		s, err := scalingFactorFromWeight(w, block, DivIEEE)
		if err != nil {
			t.Fatal(err)
		}
		sv, _ := Float32s(s)
		wv, _ := Float32s(w)
		p, err := packInt4InUint8(w, s)
		if err != nil {
			t.Fatal(err)
		}
		if want := refInt4(wv, sv, rows, cols, cols/block); !bytes.Equal(p.Data, want) {
			t.Fatalf("%v: kernel differs from reference", dt)
		}
		es, sc := dt.Size(), cols/block
		part, err := appendInt4RowPairs(nil, w.Data[:4*cols*es], dt, cols, sv[:4*sc], sc)
		if err != nil {
			t.Fatal(err)
		}
		if part, err = appendInt4RowPairs(part, w.Data[4*cols*es:], dt, cols, sv[4*sc:], sc); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(part, p.Data) {
			t.Fatalf("%v: row-range split differs", dt)
		}
	}
}

func TestInt4Pack3DMatchesPerExpert(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	const e, rows, cols, block = 3, 4, 32, 16
	v := intRandom(r, e*rows*cols, 1)
	w := intTensor(t, BF16, []int64{e, rows, cols}, v)
	var scales []float32
	var want []byte
	for x := 0; x < e; x++ {
		we := Tensor{DType: BF16, Shape: []int64{rows, cols}, Data: w.Data[x*rows*cols*2 : (x+1)*rows*cols*2]}
		s, err := scalingFactorFromWeight(we, block, DivIEEE)
		if err != nil {
			t.Fatal(err)
		}
		p, err := packInt4InUint8(we, s)
		if err != nil {
			t.Fatal(err)
		}
		sv, _ := Float32s(s)
		scales = append(scales, sv...)
		want = append(want, p.Data...)
	}
	s3 := intTensor(t, F32, []int64{e, rows, cols / block}, scales)
	p3, err := packInt4InUint8(w, s3)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(p3.Data, want) || !slices.Equal(p3.Shape, []int64{e, rows / 2, cols}) {
		t.Fatalf("3-D packing differs from per-expert packing (shape %v)", p3.Shape)
	}
}

func TestIntPackErrors(t *testing.T) {
	w := intTensor(t, BF16, []int64{3, 4}, make([]float32, 12))
	s := intTensor(t, F32, []int64{3, 1}, []float32{1, 1, 1})
	if _, err := packInt4InUint8(w, s); !errors.Is(err, ErrAssertion) {
		t.Errorf("odd rows: err %v, want ErrAssertion", err)
	}
	w2 := intTensor(t, BF16, []int64{2, 4}, make([]float32, 8))
	s3 := intTensor(t, F32, []int64{2, 3}, make([]float32, 6))
	if _, err := packInt4InUint8(w2, s3); !errors.Is(err, ErrShape) {
		t.Errorf("4 columns in 3 blocks: err %v, want ErrShape", err)
	}
	if _, err := quantizeInt8(w2, intTensor(t, F32, []int64{}, []float32{1})); !errors.Is(err, ErrShape) {
		t.Errorf("0-dim int8 scale: err %v, want ErrShape", err)
	}
	if _, err := appendInt8Rows(nil, []byte{1, 2, 3}, BF16, 2, []float32{1}); !errors.Is(err, ErrShape) {
		t.Errorf("short row data: err %v, want ErrShape", err)
	}
	if _, _, _, err := resmoothAndGetScale(w2, []Tensor{intTensor(t, BF16, []int64{4}, []float32{1, 1, 1, 1})}, 1, 2, nil, "nvfp4_awq", DivIEEE); err == nil {
		t.Error("resmooth nvfp4_awq: no error, ModelOpt raises")
	}
}

// TestIntRoundTrip quantizes random weights and dequantizes them: every element is
// within half a step of its scale (plus the rounding of the result to the dtype).
func TestIntRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	const rows, cols = 16, 256
	for _, tc := range []struct {
		format string
		block  int
	}{{"int8_sq", 0}, {"int8_wo", 0}, {"int4_awq", 128}, {"w4a8_awq", 64}} {
		for _, dt := range []DType{BF16, F16, F32} {
			w := intTensor(t, dt, []int64{rows, cols}, intRandom(r, rows*cols, 0.02))
			s, err := scalingFactorFromWeight(w, tc.block, DivIEEE)
			if err != nil {
				t.Fatal(err)
			}
			q, err := ToQuantizedWeight(w, &s, nil, tc.format, tc.block, DivIEEE)
			if err != nil {
				t.Fatal(err)
			}
			d, err := FromQuantizedWeight(q, &s, nil, tc.format, tc.block, dt)
			if err != nil {
				t.Fatal(err)
			}
			if d.DType != dt || !slices.Equal(d.Shape, w.Shape) {
				t.Fatalf("%s %v: dequantized %v %v", tc.format, dt, d.DType, d.Shape)
			}
			wv, _ := Float32s(w)
			dv, _ := Float32s(d)
			sv, _ := Float32s(s)
			sc := len(sv) / rows
			for i := range wv {
				row, col := i/cols, i%cols
				step := float64(sv[row*sc+col*sc/cols])
				// Half a step, the scale's own rounding to dt (int8 dequantizes in dt),
				// and the rounding of the product to dt.
				tol := step*0.5 + step*128*dtEps(dt) + math.Abs(float64(dv[i]))*dtEps(dt)
				if diff := math.Abs(float64(wv[i]) - float64(dv[i])); diff > tol {
					t.Fatalf("%s %v: element %d: %v → %v (step %v, error %v > %v)", tc.format, dt, i, wv[i], dv[i], step, diff, tol)
				}
			}
		}
	}
}

// dtEps is half an ulp at 1 (the relative rounding error) of dt.
func dtEps(dt DType) float64 {
	switch dt {
	case BF16:
		return 0x1p-8
	case F16:
		return 0x1p-11
	}
	return 0x1p-24
}

func TestMaybeTransposeIsItsOwnInverse(t *testing.T) {
	v := make([]float32, 2*3*4)
	for i := range v {
		v[i] = float32(i)
	}
	w := intTensor(t, BF16, []int64{2, 3, 4}, v)
	tw, _, err := maybeTransposeExpertWeightDimensions(w, nil, true)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(tw.Shape, []int64{2, 4, 3}) {
		t.Fatalf("shape %v", tw.Shape)
	}
	tv, _ := Float32s(tw)
	if tv[1] != v[4] || tv[3] != v[1] || tv[12] != v[12] {
		t.Fatalf("transposed values %v", tv[:13])
	}
	back, _, err := maybeTransposeExpertWeightDimensions(tw, nil, true)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(back.Data, w.Data) {
		t.Fatal("transpose twice differs from the input")
	}
	same, _, _ := maybeTransposeExpertWeightDimensions(w, nil, false)
	if !bytes.Equal(same.Data, w.Data) || !slices.Equal(same.Shape, w.Shape) {
		t.Fatal("not BMM: tensor changed")
	}
}

// intBenchSetup is a 4096×4096 BF16 weight with its int8 (per-row) and int4 (block
// 128) scales.
func intBenchSetup(b *testing.B) (w Tensor, wv, sv8, sv4 []float32) {
	b.Helper()
	const rows, cols = 4096, 4096
	r := rand.New(rand.NewPCG(9, 10))
	w = intTensor(b, BF16, []int64{rows, cols}, intRandom(r, rows*cols, 0.02))
	s8, err := scalingFactorFromWeight(w, 0, DivIEEE)
	if err != nil {
		b.Fatal(err)
	}
	s4, err := scalingFactorFromWeight(w, 128, DivIEEE)
	if err != nil {
		b.Fatal(err)
	}
	sv8, _ = Float32s(s8)
	sv4, _ = Float32s(s4)
	wv, _ = Float32s(w)
	return w, wv, sv8, sv4
}

// BenchmarkQuantizeInt measures the int8 and int4 kernels in MB/s of BF16 input
// (BenchmarkQuantize holds the float formats).
func BenchmarkQuantizeInt(b *testing.B) {
	w, _, sv8, sv4 := intBenchSetup(b)
	cols := int(w.Shape[1])
	dst := make([]byte, 0, w.Numel())
	b.Run("int8_sq", func(b *testing.B) {
		b.SetBytes(int64(len(w.Data)))
		for b.Loop() {
			if _, err := appendInt8Rows(dst[:0], w.Data, BF16, cols, sv8); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("int4_awq", func(b *testing.B) {
		b.SetBytes(int64(len(w.Data)))
		for b.Loop() {
			if _, err := appendInt4RowPairs(dst[:0], w.Data, BF16, cols, sv4, cols/128); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkQuantizeIntNaive is the element-at-a-time reference beside BenchmarkQuantizeInt.
func BenchmarkQuantizeIntNaive(b *testing.B) {
	w, wv, sv8, sv4 := intBenchSetup(b)
	rows, cols := int(w.Shape[0]), int(w.Shape[1])
	b.Run("int8_sq", func(b *testing.B) {
		b.SetBytes(int64(len(w.Data)))
		for b.Loop() {
			refInt8(wv, sv8, cols)
		}
	})
	b.Run("int4_awq", func(b *testing.B) {
		b.SetBytes(int64(len(w.Data)))
		for b.Loop() {
			refInt4(wv, sv4, rows, cols, cols/128)
		}
	})
}

// FuzzIntRound checks the float32 magic-number rounding against float64
// round-half-even and clamping, for every float32 bit pattern the fuzzer finds.
func FuzzIntRound(f *testing.F) {
	for _, y := range []float32{0, 0.5, 1.5, 2.5, -0.5, -2.5, 126.5, 127.5, -127.5, -128.5, 7.5, -8.5, 0x1p22 + 0.5, 0x1p23, 1e30, -1e30} {
		f.Add(math.Float32bits(y))
	}
	f.Fuzz(func(t *testing.T, bits uint32) {
		y := math.Float32frombits(bits)
		for _, lim := range [][2]float32{{-128, 127}, {-8, 7}} {
			want := int8(0)
			if y == y {
				want = int8(math.Max(float64(lim[0]), math.Min(float64(lim[1]), math.RoundToEven(float64(y)))))
			}
			if got := intRound(y, lim[0], lim[1]); got != want {
				t.Fatalf("intRound(%v, %v) = %d, want %d", y, lim, got, want)
			}
		}
	})
}
