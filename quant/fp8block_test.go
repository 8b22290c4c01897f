package quant

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
)

// naiveFP8BlockDequant is the reference loop of FP8Block.DequantRows.
func naiveFP8BlockDequant(b FP8Block, q []byte) []uint16 {
	nbj := ceilDivInt(b.Cols, b.BlockCols)
	out := make([]uint16, len(q))
	for i := range b.Rows {
		for j := range b.Cols {
			s := b.Scale[(i/b.BlockRows)*nbj+j/b.BlockCols]
			out[i*b.Cols+j] = F32ToBF16(E4M3ToF32(q[i*b.Cols+j]) * s)
		}
	}
	return out
}

// TestFP8BlockDequantRows: every E4M3 code (NaNs aside) under scales of every
// magnitude, in weights whose edge blocks are partial in either dimension, decoded
// whole and by odd row ranges, equals the reference loop; -0 survives.
func TestFP8BlockDequantRows(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, tc := range []struct{ rows, cols, bi, bj int }{
		{128, 128, 128, 128}, {192, 320, 128, 128}, {576, 448, 128, 128}, {96, 64, 128, 128}, {7, 9, 4, 2},
	} {
		b := FP8Block{Rows: tc.rows, Cols: tc.cols, BlockRows: tc.bi, BlockCols: tc.bj}
		ss := b.ScaleShape()
		for k := range ss[0] * ss[1] {
			// Normal, subnormal-producing, huge and zero scales.
			s := float32(math.Ldexp(1+r.Float64(), r.IntN(60)-40))
			switch k % 7 {
			case 3:
				s = 0
			case 5:
				s = float32(math.Ldexp(r.Float64(), -130))
			}
			b.Scale = append(b.Scale, s)
		}
		if err := b.Check(); err != nil {
			t.Fatal(err)
		}
		q := make([]byte, tc.rows*tc.cols)
		for i := range q {
			c := byte(i % 256)
			if c&0x7F == 0x7F {
				c = 0x80 // -0
			}
			q[i] = c ^ byte(r.IntN(2))<<7
			if q[i]&0x7F == 0x7F {
				q[i] = 0x7E
			}
		}
		want := naiveFP8BlockDequant(b, q)
		for _, step := range []int{tc.rows, 1, 5, 33} {
			got := make([]byte, 2*len(q))
			for r0 := 0; r0 < tc.rows; r0 += step {
				r1 := min(r0+step, tc.rows)
				if err := b.DequantRows(got[2*r0*tc.cols:2*r1*tc.cols], q[r0*tc.cols:r1*tc.cols], r0, r1); err != nil {
					t.Fatal(err)
				}
			}
			for i, w := range want {
				if g := binary.LittleEndian.Uint16(got[2*i:]); g != w {
					t.Fatalf("%v step %d: element %d (code 0x%02X): got 0x%04X, want 0x%04X", tc, step, i, q[i], g, w)
				}
			}
		}
	}
	// -0.0 stays -0.0.
	b := FP8Block{Rows: 1, Cols: 1, BlockRows: 128, BlockCols: 128, Scale: []float32{0.5}}
	out := make([]byte, 2)
	if err := b.DequantRows(out, []byte{0x80}, 0, 1); err != nil || binary.LittleEndian.Uint16(out) != 0x8000 {
		t.Errorf("-0: got %x, %v", out, err)
	}
}

func TestFP8BlockRefusals(t *testing.T) {
	b := FP8Block{Rows: 2, Cols: 3, BlockRows: 128, BlockCols: 128, Scale: []float32{1}}
	for _, nan := range []byte{0x7F, 0xFF} {
		err := b.DequantRows(make([]byte, 12), []byte{1, 2, 3, 4, nan, 6}, 0, 2)
		if !errors.Is(err, ErrNonFinite) {
			t.Errorf("NaN code 0x%02X: %v, want ErrNonFinite", nan, err)
		}
	}
	for _, tc := range []struct {
		scale []float32
		want  error
	}{
		{[]float32{float32(math.NaN())}, ErrNonFinite},
		{[]float32{float32(math.Inf(1))}, ErrNonFinite},
		{[]float32{-1}, ErrNonPositive},
		{[]float32{1, 1}, ErrShape},
		{nil, ErrShape},
	} {
		b.Scale = tc.scale
		if err := b.Check(); !errors.Is(err, tc.want) {
			t.Errorf("scale %v: %v, want %v", tc.scale, err, tc.want)
		}
	}
	b.Scale = []float32{1}
	if err := b.DequantRows(make([]byte, 10), make([]byte, 6), 0, 2); !errors.Is(err, ErrShape) {
		t.Errorf("short output: %v", err)
	}
}

// TestMXFP4DequantTransposed: every byte under every finite E8M0 scale equals
// E2M1 · 2^(s-127) computed in float64 (exact), transposed; nibble 8 is -0.0.
func TestMXFP4DequantTransposed(t *testing.T) {
	mag := [8]float64{0, 0.5, 1, 1.5, 2, 3, 4, 6}
	for _, R := range []int{1, 31, 33, 70} {
		G := 3
		blocks := make([]byte, R*G*16)
		scales := make([]byte, R*G)
		for i := range blocks {
			blocks[i] = byte(i * 7)
		}
		for i := range scales {
			scales[i] = byte((i * 37) % 253)
		}
		dst := make([]byte, 2*R*G*32)
		if err := MXFP4DequantTransposed(dst, blocks, scales, R, G); err != nil {
			t.Fatal(err)
		}
		for r := range R {
			for c := range 32 * G {
				by := blocks[(r*G+c/32)*16+(c%32)/2]
				nib := by & 0xF
				if c%2 == 1 {
					nib = by >> 4
				}
				v := math.Ldexp(mag[nib&7], int(scales[r*G+c/32])-127)
				if nib&8 != 0 {
					v = -v
				}
				want := uint16(math.Float32bits(float32(v)) >> 16)
				if nib == 8 {
					want = 0x8000
				}
				if float64(BF16ToF32(want)) != v {
					t.Fatalf("value %v not a bfloat16", v)
				}
				if g := binary.LittleEndian.Uint16(dst[2*(c*R+r):]); g != want {
					t.Fatalf("R=%d r=%d c=%d: got 0x%04X, want 0x%04X", R, r, c, g, want)
				}
			}
		}
	}
	if err := MXFP4DequantTransposed(make([]byte, 64), make([]byte, 16), []byte{255}, 1, 1); !errors.Is(err, ErrNonFinite) {
		t.Errorf("scale 255: %v", err)
	}
	if err := MXFP4DequantTransposed(make([]byte, 64), []byte{0x06, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, []byte{253}, 1, 1); !errors.Is(err, ErrNonFinite) {
		t.Errorf("4·2^126: %v", err)
	}
	if err := MXFP4DequantTransposed(make([]byte, 64), []byte{0x33, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0}, []byte{254}, 1, 1); err != nil {
		t.Errorf("1.5·2^127 is finite: %v", err)
	}
	if err := MXFP4DequantTransposed(make([]byte, 62), make([]byte, 16), []byte{1}, 1, 1); !errors.Is(err, ErrShape) {
		t.Errorf("short output: %v", err)
	}
}

// BenchmarkFP8BlockDequant decodes a 2048×7168 block-FP8 weight (DeepSeek's expert
// shape) by bands of 128 rows; MB/s are of FP8 input. The naive loop is the
// reference of DequantRows' doc comment.
func BenchmarkFP8BlockDequant(b *testing.B) {
	const rows, cols = 2048, 7168
	blk := FP8Block{Rows: rows, Cols: cols, BlockRows: 128, BlockCols: 128}
	r := rand.New(rand.NewPCG(3, 4))
	for range blk.ScaleShape()[0] * blk.ScaleShape()[1] {
		blk.Scale = append(blk.Scale, float32(r.Float64()*1e-3))
	}
	q := make([]byte, rows*cols)
	for i := range q {
		q[i] = byte(r.IntN(256))
		if q[i]&0x7F == 0x7F {
			q[i] = 0
		}
	}
	dst := make([]byte, 2*rows*cols)
	b.Run("fast", func(b *testing.B) {
		b.SetBytes(int64(len(q)))
		for b.Loop() {
			for r0 := 0; r0 < rows; r0 += 128 {
				if err := blk.DequantRows(dst[2*r0*cols:2*(r0+128)*cols], q[r0*cols:(r0+128)*cols], r0, r0+128); err != nil {
					b.Fatal(err)
				}
			}
		}
	})
	b.Run("naive", func(b *testing.B) {
		b.SetBytes(int64(len(q)))
		for b.Loop() {
			naiveFP8BlockDequant(blk, q)
		}
	})
}

// BenchmarkFP8BlockToNVFP4 is the CPU work a block-FP8 source costs per byte when
// it is exported to NVFP4 (W4A16): decode a DeepSeek expert weight (2048×7168) to
// BF16 in bands of 128 rows, then pack it with the NVFP4 row export in pieces of 64
// rows, on one goroutine; MB/s are of FP8 input, so the figure is the per-core
// ceiling of a FP8 → NVFP4 conversion (without reading, writing and calibration).
func BenchmarkFP8BlockToNVFP4(b *testing.B) {
	const rows, cols = 2048, 7168
	blk := FP8Block{Rows: rows, Cols: cols, BlockRows: 128, BlockCols: 128}
	r := rand.New(rand.NewPCG(5, 6))
	for range blk.ScaleShape()[0] * blk.ScaleShape()[1] {
		blk.Scale = append(blk.Scale, float32(r.Float64()*1e-3))
	}
	q := make([]byte, rows*cols)
	for i := range q {
		if q[i] = byte(r.IntN(256)); q[i]&0x7F == 0x7F {
			q[i] = 0
		}
	}
	w := Tensor{DType: BF16, Shape: []int64{rows, cols}, Data: make([]byte, 2*rows*cols)}
	if err := blk.DequantRows(w.Data, q, 0, rows); err != nil {
		b.Fatal(err)
	}
	wq, iq := rowsPreset("nvfp4")
	iq.Enabled = false
	amax, err := CalibrateAmax(wq, w)
	if err != nil {
		b.Fatal(err)
	}
	m := &Module{Name: "m", Weight: w, WeightQuantizer: wq, InputQuantizer: iq, WeightAmax: &amax}
	_, re, ok := PrepareRowExport(m, BF16, DivIEEE)
	if !ok {
		b.Fatal("no row export")
	}
	dst := make([][]byte, len(re.Outs))
	for k, o := range re.Outs {
		n, _ := o.DType.ByteLen(Numel(o.Shape))
		dst[k] = make([]byte, n)
	}
	b.SetBytes(int64(len(q)))
	for b.Loop() {
		for r0 := 0; r0 < rows; r0 += 128 {
			if err := blk.DequantRows(w.Data[2*r0*cols:2*(r0+128)*cols], q[r0*cols:(r0+128)*cols], r0, r0+128); err != nil {
				b.Fatal(err)
			}
		}
		for u0 := 0; u0 < re.Units; u0 += 64 {
			if err := re.Fill(dst, u0, min(u0+64, re.Units)); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// TestFP8RowBF16Levels: the vector decode at every kernel level equals the
// portable expression on every code (and reports the NaN codes) under every kind of scale (zero, subnormal products, overflow to
// infinity, NaN, and random bit patterns), on rows with partial last blocks and
// lengths that leave a tail of fewer than 16 codes.
func TestFP8RowBF16Levels(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	scales := kernelDivisors(r, 64)
	for _, l := range kernelLevels() {
		setKernels(t, l)
		for _, tc := range []struct{ cols, block int }{{256, 128}, {448, 128}, {576, 128}, {7168, 128}, {48, 16}, {64, 32}, {16, 128}, {80, 48}} {
			for trial := range 8 {
				src := make([]byte, tc.cols)
				for i := range src {
					src[i] = byte(i*7 + trial*31 + r.IntN(3))
				}
				nb := ceilDivInt(tc.cols, tc.block)
				sc := make([]float32, nb)
				for j := range sc {
					sc[j] = scales[r.IntN(len(scales))]
				}
				dst := make([]byte, 2*tc.cols)
				n, nan := fp8RowBF16(dst, src, sc, tc.block)
				if l == kernelPortable && n != 0 {
					t.Fatalf("portable level took %d codes", n)
				}
				if l != kernelPortable && n != tc.cols&^15 {
					t.Fatalf("%v %v: took %d codes", l, tc, n)
				}
				wantNaN := false
				for k := range n {
					if src[k]&0x7F == 0x7F {
						wantNaN = true // reported; its output is meaningless
						continue
					}
					want := F32ToBF16(E4M3ToF32(src[k]) * sc[k/tc.block])
					if g := binary.LittleEndian.Uint16(dst[2*k:]); g != want {
						t.Fatalf("%v %v: code 0x%02X scale %v (0x%08X): got 0x%04X, want 0x%04X", l, tc, src[k], sc[k/tc.block], math.Float32bits(sc[k/tc.block]), g, want)
					}
				}
				if nan != wantNaN {
					t.Fatalf("%v %v: NaN reported %v, want %v", l, tc, nan, wantNaN)
				}
			}
		}
	}
}

// TestFP8BlockDequantLevels: DequantRows at every kernel level equals the
// reference loop on weights with partial edge blocks, odd widths (tails after the
// vector chunks) and zero scales, and names the first NaN code wherever it is
// (in a vector chunk or in a tail).
func TestFP8BlockDequantLevels(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 10))
	for _, l := range kernelLevels() {
		setKernels(t, l)
		for _, tc := range []struct{ rows, cols, bi, bj int }{{130, 200, 128, 128}, {33, 7169, 128, 128}, {5, 35, 4, 32}, {17, 100, 16, 16}, {3, 5, 2, 3}} {
			b := FP8Block{Rows: tc.rows, Cols: tc.cols, BlockRows: tc.bi, BlockCols: tc.bj}
			ss := b.ScaleShape()
			for k := range ss[0] * ss[1] {
				s := float32(math.Ldexp(1+r.Float64(), r.IntN(80)-60))
				if k%5 == 2 {
					s = 0
				}
				b.Scale = append(b.Scale, s)
			}
			q := make([]byte, tc.rows*tc.cols)
			for i := range q {
				if q[i] = byte(r.IntN(256)); q[i]&0x7F == 0x7F {
					q[i] ^= 1
				}
			}
			want := naiveFP8BlockDequant(b, q)
			got := make([]byte, 2*len(q))
			if err := b.DequantRows(got, q, 0, tc.rows); err != nil {
				t.Fatal(err)
			}
			for i, w := range want {
				if g := binary.LittleEndian.Uint16(got[2*i:]); g != w {
					t.Fatalf("%v %v: element %d (code 0x%02X): got 0x%04X, want 0x%04X", l, tc, i, q[i], g, w)
				}
			}
			for _, at := range []int{0, len(q) / 2, len(q) - 1, tc.cols - 1} {
				bad := append([]byte(nil), q...)
				bad[at] = 0xFF
				err := b.DequantRows(got, bad, 0, tc.rows)
				if want := fmt.Sprintf("element [%d][%d]", at/tc.cols, at%tc.cols); !errors.Is(err, ErrNonFinite) || !strings.Contains(err.Error(), want) {
					t.Fatalf("%v %v: NaN at %d: %v, want ErrNonFinite naming %s", l, tc, at, err, want)
				}
			}
		}
	}
}

// BenchmarkFP8BlockToNVFP4Fused is BenchmarkFP8BlockToNVFP4 without the BF16
// weight: the amax from the codes (absMaxBF16), then appendNVFP4Rows in pieces of
// 64 rows, on 128 rows (one band, cache-resident) and 2048 rows (a DeepSeek expert
// weight) of normal-looking codes; MB/s of FP8 input. "unfused" is the same
// weight decoded and exported as BenchmarkFP8BlockToNVFP4 does, with the amax
// pass (TensorAmax) the calibration adds.
func BenchmarkFP8BlockToNVFP4Fused(b *testing.B) {
	for _, rows := range []int{128, 2048} {
		b.Run(strconv.Itoa(rows), func(b *testing.B) { benchFP8BlockToNVFP4Fused(b, rows) })
	}
}

func benchFP8BlockToNVFP4Fused(b *testing.B, rows int) {
	const cols = 7168
	blk := FP8Block{Rows: rows, Cols: cols, BlockRows: 128, BlockCols: 128}
	r := rand.New(rand.NewPCG(5, 6))
	for range blk.ScaleShape()[0] * blk.ScaleShape()[1] {
		blk.Scale = append(blk.Scale, float32(r.Float64()*1e-3))
	}
	q := make([]byte, rows*cols)
	for i := range q {
		// Codes of a weight whose FP8 blocks use the E4M3 range, as DeepSeek's do.
		if q[i] = F32ToE4M3(float32(r.NormFloat64() * 100)); q[i]&0x7F == 0x7F {
			q[i] = 0x7E | q[i]&0x80
		}
	}
	packed, scales := make([]byte, 0, rows*cols/2), make([]byte, 0, rows*cols/16)
	b.Run("fused", func(b *testing.B) {
		b.SetBytes(int64(len(q)))
		for b.Loop() {
			a, err := blk.absMaxBF16(q, 0, rows)
			if err != nil {
				b.Fatal(err)
			}
			s2 := nvfp4GlobalScale(BF16ToF32(a), E4M3Max, DivIEEE)
			p, s := packed[:0], scales[:0]
			for r0 := 0; r0 < rows; r0 += 64 {
				if p, s, err = blk.appendNVFP4Rows(p, s, q[r0*cols:(r0+64)*cols], r0, r0+64, 16, s2); err != nil {
					b.Fatal(err)
				}
			}
		}
	})
	b.Run("unfused", func(b *testing.B) {
		w := Tensor{DType: BF16, Shape: []int64{int64(rows), cols}, Data: make([]byte, 2*rows*cols)}
		b.SetBytes(int64(len(q)))
		for b.Loop() {
			for r0 := 0; r0 < rows; r0 += 128 {
				if err := blk.DequantRows(w.Data[2*r0*cols:2*(r0+128)*cols], q[r0*cols:(r0+128)*cols], r0, r0+128); err != nil {
					b.Fatal(err)
				}
			}
			a, err := TensorAmax(w)
			if err != nil {
				b.Fatal(err)
			}
			n := NVFP4{Block: 16, Scale2: []float32{nvfp4GlobalScale(a, E4M3Max, DivIEEE)}}
			p, s := packed[:0], scales[:0]
			for r0 := 0; r0 < rows; r0 += 64 {
				if p, s, err = n.AppendQuantizeRows(p, s, w, r0, r0+64); err != nil {
					b.Fatal(err)
				}
			}
		}
	})
}
