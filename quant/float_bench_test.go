package quant

import (
	"bytes"
	"encoding/binary"
	"math"
	"math/rand/v2"
	"testing"
)

// fqTestWeight is a deterministic BF16 weight: N(0, 0.02) with 0.5 % outliers ×80
// and, every 7th row, values on a 1/8 grid (many rounding ties).
func fqTestWeight(rows, cols int, seed uint64) Tensor {
	r := rand.New(rand.NewPCG(seed, 1))
	data := make([]byte, 2*rows*cols)
	for i := range rows * cols {
		v := float32(r.NormFloat64() * 0.02)
		if r.IntN(200) == 0 {
			v *= 80
		}
		if (i/cols)%7 == 3 {
			v = float32(r.IntN(97)-48) / 8
		}
		binary.LittleEndian.PutUint16(data[2*i:], F32ToBF16(v))
	}
	return Tensor{DType: BF16, Shape: []int64{int64(rows), int64(cols)}, Data: data}
}

func fqScalarTensor(v float32) Tensor {
	t, _ := FromFloat32(F32, nil, []float32{v})
	return t
}

// Naive reference implementations, written from ModelOpt's rules with no tables or
// precomputed maps: the fast kernels must give the same bytes.

func naiveFP8PerTensor(w Tensor, s float32) []byte {
	x, _ := Float32s(w)
	out := make([]byte, len(x))
	for i, v := range x {
		out[i] = F32ToE4M3(RoundTo(w.DType, v/s))
	}
	return out
}

func naiveFP8PerRow(w Tensor, s []float32) []byte {
	x, _ := Float32s(w)
	cols := int(w.Shape[len(w.Shape)-1])
	out := make([]byte, len(x))
	for i, v := range x {
		out[i] = F32ToE4M3(v / s[i/cols])
	}
	return out
}

func naiveFP8Block(w Tensor, s []float32, b int) []byte {
	x, _ := Float32s(w)
	cols := int(w.Shape[1])
	nbc := (cols + b - 1) / b
	out := make([]byte, len(x))
	for i, v := range x {
		r, c := i/cols, i%cols
		out[i] = F32ToE4M3(v / s[(r/b)*nbc+c/b])
	}
	return out
}

func naiveNVFP4(w Tensor, block int, s2 float32) (packed, scales []byte) {
	x, _ := Float32s(w)
	nblk := len(x) / block
	scales = make([]byte, nblk)
	nib := make([]uint8, len(x))
	for b := range nblk {
		var a float32
		for _, v := range x[b*block : (b+1)*block] {
			a = max(a, float32(math.Abs(float64(v))))
		}
		s := a / float32(6*s2)
		if s == 0 {
			s = 1
		}
		scales[b] = F32ToE4M3(min(max(s, 1.0/512), 448))
		d := E4M3ToF32(scales[b]) * s2
		for i := b * block; i < (b+1)*block; i++ {
			nib[i] = e2m1NVRef(x[i] / d)
		}
	}
	packed = make([]byte, len(x)/2)
	for j := range packed {
		packed[j] = nib[2*j] | nib[2*j+1]<<4
	}
	return packed, scales
}

func naiveMXFP4(w Tensor, block int) (packed, scales []byte) {
	x, _ := Float32s(w)
	nblk := len(x) / block
	nib := make([]uint8, len(x))
	for b := range nblk {
		var a float32
		for _, v := range x[b*block : (b+1)*block] {
			a = max(a, float32(math.Abs(float64(v))))
		}
		e := float32(-127)
		if a > 0 {
			e = float32(math.Ceil(math.Max(float64(float32(math.Log2(float64(a/6)))), -127)))
		}
		p := float32(math.Pow(2, float64(e)))
		for i := b * block; i < (b+1)*block; i++ {
			nib[i] = e2m1MXRef(x[i] / p)
		}
		scales = append(scales, uint8(int(e)+127))
	}
	packed = make([]byte, len(x)/2)
	for j := range packed {
		packed[j] = nib[2*j] | nib[2*j+1]<<4
	}
	return packed, scales
}

func naiveMXFP8(w Tensor) (q, scales []byte) {
	x, _ := Float32s(w)
	q = make([]byte, len(x))
	for b := range len(x) / 32 {
		var a float32
		for _, v := range x[b*32 : (b+1)*32] {
			a = max(a, float32(math.Abs(float64(v))))
		}
		e := float32(-127)
		if d := a / 448; d > 0 {
			e = float32(math.Ceil(float64(float32(math.Log2(float64(d))))))
		}
		e = min(max(e, -127), 127)
		scales = append(scales, uint8(int(e)+127))
		f := float32(math.Pow(2, float64(-e)))
		for i := b * 32; i < (b+1)*32; i++ {
			q[i] = F32ToE4M3(min(max(x[i]*f, -448), 448))
		}
	}
	return q, scales
}

func TestFastMatchesNaive(t *testing.T) {
	w := fqTestWeight(64, 512, 7)
	amax, err := TensorAmax(w)
	if err != nil {
		t.Fatal(err)
	}
	s := DivScalar(amax, 448, DivIEEE)
	t.Run("fp8", func(t *testing.T) {
		q, err := ToQuantizedWeight(w, fqPtr(fqScalarTensor(s)), nil, "fp8", 0, DivIEEE)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(q.Data, naiveFP8PerTensor(w, s)) {
			t.Error("fp8 differs from the naive loop")
		}
	})
	t.Run("fp8_pc_pt", func(t *testing.T) {
		x, _ := Float32s(w)
		rs := make([]float32, 64)
		for r := range rs {
			rs[r] = DivScalar(fqAbsMax(0, x[r*512:(r+1)*512]), 448, DivIEEE)
		}
		st, _ := FromFloat32(F32, []int64{64}, rs)
		q, err := ToQuantizedWeight(w, &st, nil, "fp8_pc_pt", 0, DivIEEE)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(q.Data, naiveFP8PerRow(w, rs)) {
			t.Error("fp8_pc_pt differs from the naive loop")
		}
	})
	t.Run("fp8_pb_wo", func(t *testing.T) {
		bs := []float32{0.01, 0.02, 0.003, 0.5}
		st, _ := FromFloat32(F32, []int64{1, 1, 4, 1}, bs)
		q, err := ToQuantizedWeight(w, &st, nil, "fp8_pb_wo", 128, DivIEEE)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(q.Data, naiveFP8Block(w, bs, 128)) {
			t.Error("fp8_pb_wo differs from the naive loop")
		}
	})
	t.Run("nvfp4", func(t *testing.T) {
		s2 := nvfp4GlobalScale(amax, 448, DivIEEE)
		r, err := nvfp4Quantize(w, 16, nil, fqPtr(fqScalarTensor(s2)), DivIEEE)
		if err != nil {
			t.Fatal(err)
		}
		p, sc := naiveNVFP4(w, 16, s2)
		if !bytes.Equal(r.Packed.Data, p) || !bytes.Equal(r.Scales.Data, sc) {
			t.Error("nvfp4 differs from the naive loop")
		}
	})
	t.Run("mxfp4", func(t *testing.T) {
		p, sc, err := mxfp4Quantize(w, 32, DivIEEE)
		if err != nil {
			t.Fatal(err)
		}
		np, nsc := naiveMXFP4(w, 32)
		if !bytes.Equal(p.Data, np) || !bytes.Equal(sc.Data, nsc) {
			t.Error("mxfp4 differs from the naive loop")
		}
	})
	t.Run("mxfp8", func(t *testing.T) {
		q, sc, err := mxfp8Quantize(w, nil, DivIEEE)
		if err != nil {
			t.Fatal(err)
		}
		nq, nsc := naiveMXFP8(w)
		if !bytes.Equal(q.Data, nq) || !bytes.Equal(sc.Data, nsc) {
			t.Error("mxfp8 differs from the naive loop")
		}
	})
}

func fqPtr[T any](v T) *T { return &v }

// TestRowSplitInvariance: quantizing row ranges separately gives the same bytes as
// one pass, whatever the split (callers parallelise across row ranges).
func TestRowSplitInvariance(t *testing.T) {
	w := fqTestWeight(48, 256, 11)
	rows := 48
	splits := [][]int{{0, 48}, {0, 1, 48}, {0, 13, 30, 47, 48}, {0, 24, 48}}
	run := func(name string, f func(r0, r1 int) []byte) {
		t.Run(name, func(t *testing.T) {
			var want []byte
			for _, sp := range splits {
				var got []byte
				for i := 0; i+1 < len(sp); i++ {
					got = append(got, f(sp[i], sp[i+1])...)
				}
				if want == nil {
					want = got
				} else if !bytes.Equal(got, want) {
					t.Errorf("split %v differs", sp)
				}
			}
		})
	}
	d, err := newFP8PerTensor(w, fqScalarTensor(0.01), DivIEEE)
	if err != nil {
		t.Fatal(err)
	}
	run("fp8", func(r0, r1 int) []byte { return d.AppendRows(nil, r0, r1) })
	n := NVFP4{Block: 16, Scale2: []float32{0.0003}}
	var sc []byte
	if sc, err = n.AppendBlockScales(nil, w, 0, rows); err != nil {
		t.Fatal(err)
	}
	sv, _ := Float32s(Tensor{DType: F8E4M3, Shape: []int64{int64(len(sc))}, Data: sc})
	run("nvfp4 scales", func(r0, r1 int) []byte { b, _ := n.AppendBlockScales(nil, w, r0, r1); return b })
	run("nvfp4", func(r0, r1 int) []byte { b, _ := n.AppendRows(nil, w, sv, r0, r1); return b })
	run("mxfp8 scales", func(r0, r1 int) []byte { b, _ := appendMXFP8Scales(nil, w, r0, r1, DivIEEE); return b })
	ms, _ := appendMXFP8Scales(nil, w, 0, rows, DivIEEE)
	run("mxfp8", func(r0, r1 int) []byte { b, _ := appendMXFP8Rows(nil, w, ms, r0, r1); return b })
	run("nvfp4 fused", func(r0, r1 int) []byte { b, _, _ := n.AppendQuantizeRows(nil, nil, w, r0, r1); return b })
	run("nvfp4 fused scales", func(r0, r1 int) []byte { _, s, _ := n.AppendQuantizeRows(nil, nil, w, r0, r1); return s })
	run("mxfp8 fused", func(r0, r1 int) []byte { b, _, _ := appendMXFP8QuantizeRows(nil, nil, w, r0, r1, DivIEEE); return b })
	run("mxfp8 fused scales", func(r0, r1 int) []byte { _, s, _ := appendMXFP8QuantizeRows(nil, nil, w, r0, r1, DivIEEE); return s })
	run("mxfp4", func(r0, r1 int) []byte {
		p, _, _ := AppendMXFP4Blocks(nil, nil, w, 32, r0*8, r1*8, DivIEEE)
		return p
	})
	run("mxfp4 scales", func(r0, r1 int) []byte {
		_, s, _ := AppendMXFP4Blocks(nil, nil, w, 32, r0*8, r1*8, DivIEEE)
		return s
	})
}

// Benchmarks on a 4096×4096 BF16 weight; SetBytes is the input size, so the
// figures read as input bytes per second on one core.

const fqBenchN = 4096

func fqBenchFormats(b *testing.B) (w Tensor, cases []struct {
	name string
	fast func() error
	slow func()
}) {
	w = fqTestWeight(fqBenchN, fqBenchN, 1)
	amax, _ := TensorAmax(w)
	s := fqScalarTensor(DivScalar(amax, 448, DivIEEE))
	x, _ := Float32s(w)
	rs := make([]float32, fqBenchN)
	for r := range rs {
		rs[r] = DivScalar(fqAbsMax(0, x[r*fqBenchN:(r+1)*fqBenchN]), 448, DivIEEE)
	}
	rowScale, _ := FromFloat32(F32, []int64{fqBenchN}, rs)
	bs := make([]float32, 32*32)
	for i := range bs {
		bs[i] = 0.01 * float32(i%7+1)
	}
	blockScale, _ := FromFloat32(F32, []int64{32, 32}, bs)
	s2v := nvfp4GlobalScale(amax, 448, DivIEEE)
	s2 := fqScalarTensor(s2v)
	nvs, _ := NVFP4{Block: 16, Scale2: []float32{s2v}}.AppendBlockScales(nil, w, 0, fqBenchN)
	nvScale := Tensor{DType: F8E4M3, Shape: []int64{fqBenchN, fqBenchN / 16}, Data: nvs}
	mxs, _ := appendMXFP8Scales(nil, w, 0, fqBenchN, DivIEEE)
	mxScale := Tensor{DType: U8, Shape: []int64{fqBenchN, fqBenchN / 32}, Data: mxs}
	q := func(f string, sc, sc2 *Tensor, blk int) func() error {
		return func() error { _, err := ToQuantizedWeight(w, sc, sc2, f, blk, DivIEEE); return err }
	}
	cases = []struct {
		name string
		fast func() error
		slow func()
	}{
		{"fp8", q("fp8", &s, nil, 0), func() { naiveFP8PerTensor(w, fqScalarOf(s)) }},
		{"fp8_pc_pt", q("fp8_pc_pt", &rowScale, nil, 0), func() { naiveFP8PerRow(w, rs) }},
		{"fp8_pb_wo", q("fp8_pb_wo", &blockScale, nil, 128), func() { naiveFP8Block(w, bs, 128) }},
		{"nvfp4", q("nvfp4", nil, &s2, 16), func() { naiveNVFP4(w, 16, s2v) }},
		{"nvfp4_with_scale", q("nvfp4", &nvScale, &s2, 16), nil},
		{"mxfp4", q("mxfp4", nil, nil, 32), func() { naiveMXFP4(w, 32) }},
		{"mxfp8", func() error {
			_, _, err := mxfp8Quantize(w, nil, DivIEEE)
			return err
		}, func() { naiveMXFP8(w) }},
		{"mxfp8_with_scale", q("mxfp8", &mxScale, nil, 32), nil},
	}
	return w, cases
}

func fqScalarOf(t Tensor) float32 { v, _ := Scalar(t); return v }

func BenchmarkQuantize(b *testing.B) {
	w, cases := fqBenchFormats(b)
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			b.SetBytes(int64(len(w.Data)))
			for b.Loop() {
				if err := c.fast(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkQuantizeNaive(b *testing.B) {
	w, cases := fqBenchFormats(b)
	for _, c := range cases {
		if c.slow == nil {
			continue
		}
		b.Run(c.name, func(b *testing.B) {
			b.SetBytes(int64(len(w.Data)))
			for b.Loop() {
				c.slow()
			}
		})
	}
}

// TestFusedMatchesTwoPass: the one-pass kernels equal scales-then-encode.
func TestFusedMatchesTwoPass(t *testing.T) {
	w := fqTestWeight(16, 256, 5)
	n := NVFP4{Block: 16, Scale2: []float32{0.0007}}
	p, sc, err := n.AppendQuantizeRows(nil, nil, w, 0, 16)
	if err != nil {
		t.Fatal(err)
	}
	sc2, _ := n.AppendBlockScales(nil, w, 0, 16)
	sv, _ := Float32s(Tensor{DType: F8E4M3, Shape: []int64{int64(len(sc2))}, Data: sc2})
	p2, _ := n.AppendRows(nil, w, sv, 0, 16)
	if !bytes.Equal(p, p2) || !bytes.Equal(sc, sc2) {
		t.Error("nvfp4 fused differs from two passes")
	}
	q, ms, err := appendMXFP8QuantizeRows(nil, nil, w, 0, 16, DivIEEE)
	if err != nil {
		t.Fatal(err)
	}
	ms2, _ := appendMXFP8Scales(nil, w, 0, 16, DivIEEE)
	q2, _ := appendMXFP8Rows(nil, w, ms2, 0, 16)
	if !bytes.Equal(q, q2) || !bytes.Equal(ms, ms2) {
		t.Error("mxfp8 fused differs from two passes")
	}
}
