package quant

import (
	"bytes"
	"errors"
	"math"
	"math/rand/v2"
	"strconv"
	"strings"
	"testing"
)

// fp8Case is a block-FP8 weight with codes and scales of every kind the fused
// kernels must agree on: random codes, normal-looking weights (many different
// block maxima), all-zero and signed-zero blocks; zero scales, scales whose
// products are BF16 subnormals or round to infinity.
func fp8Case(r *rand.Rand, rows, cols, bi, bj int) (FP8Block, []byte) {
	b := FP8Block{Rows: rows, Cols: cols, BlockRows: bi, BlockCols: bj}
	ss := b.ScaleShape()
	for k := range ss[0] * ss[1] {
		s := float32(math.Ldexp(1+r.Float64(), r.IntN(40)-30))
		switch k % 9 {
		case 2:
			s = 0
		case 4:
			s = float32(math.Ldexp(r.Float64(), -140)) // products below the BF16 normals
		case 6:
			s = float32(math.Ldexp(1+r.Float64(), 120)) // large codes round to infinity
		}
		b.Scale = append(b.Scale, s)
	}
	q := make([]byte, rows*cols)
	sigma := 2 + r.Float64()*60
	for i := range q {
		switch r.IntN(10) {
		case 0:
			q[i] = byte(r.IntN(256))
		case 1:
			q[i] = []byte{0, 0x80}[r.IntN(2)]
		default:
			q[i] = F32ToE4M3(float32(r.NormFloat64() * sigma))
		}
		if q[i]&0x7F == 0x7F {
			q[i] = 0x7E | q[i]&0x80
		}
	}
	// Some all-zero and all-negative-zero NVFP4 blocks.
	for k := 0; k+16 <= len(q); k += 16 * 37 {
		fill := byte(0)
		if k%2 == 0 {
			fill = 0x80
		}
		for i := range 16 {
			q[k+i] = fill
		}
	}
	return b, q
}

// TestFP8BlockNVFP4Rows: the fused export equals DequantRows followed by
// NVFP4.AppendQuantizeRows, at every kernel level (the reference runs the BF16
// vector kernels of that level), for partial edge blocks, odd row ranges, NVFP4
// blocks of 16 and 32 and global scales of every kind; and the fused amax equals
// the amax of the decoded weight.
func TestFP8BlockNVFP4Rows(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 12))
	for _, l := range kernelLevels() {
		setKernels(t, l)
		for _, tc := range []struct{ rows, cols, bi, bj, nv int }{
			{130, 448, 128, 128, 16}, {200, 576, 128, 128, 16}, {33, 256, 128, 128, 32}, {9, 96, 4, 32, 16}, {5, 12, 2, 6, 2}, {1, 16, 128, 128, 16},
		} {
			b, q := fp8Case(r, tc.rows, tc.cols, tc.bi, tc.bj)
			if err := b.Check(); err != nil {
				t.Fatal(err)
			}
			w := Tensor{DType: BF16, Shape: []int64{int64(tc.rows), int64(tc.cols)}, Data: make([]byte, 2*len(q))}
			if err := b.DequantRows(w.Data, q, 0, tc.rows); err != nil {
				t.Fatal(err)
			}
			amax, err := TensorAmax(w)
			if err != nil {
				t.Fatal(err)
			}
			got, err := b.absMaxBF16(q, 0, tc.rows)
			if err != nil || BF16ToF32(got) != amax {
				t.Fatalf("%v %v: amax 0x%04X, %v; the decoded weight's is %v", l, tc, got, err, amax)
			}
			for _, s2 := range []float32{nvfp4GlobalScale(min(amax, 1e30), E4M3Max, DivIEEE), 1, 3.7e-5, 0, 1e-30, 2e30, math.Float32frombits(r.Uint32() &^ (1 << 31))} {
				n := NVFP4{Block: tc.nv, Scale2: []float32{s2}}
				for _, step := range []int{tc.rows, 1, 7, 129} {
					var gp, gs, wp, ws []byte
					for r0 := 0; r0 < tc.rows; r0 += step {
						r1 := min(r0+step, tc.rows)
						var err error
						if gp, gs, err = b.appendNVFP4Rows(gp, gs, q[r0*tc.cols:r1*tc.cols], r0, r1, tc.nv, s2); err != nil {
							t.Fatal(err)
						}
						if wp, ws, err = n.AppendQuantizeRows(wp, ws, w, r0, r1); err != nil {
							t.Fatal(err)
						}
					}
					if !bytes.Equal(gs, ws) {
						t.Fatalf("%v %v s2 %v step %d: block scales differ at %d", l, tc, s2, step, firstDiff(gs, ws))
					}
					if !bytes.Equal(gp, wp) {
						i := firstDiff(gp, wp)
						t.Fatalf("%v %v s2 %v step %d: packed byte %d (row %d) is 0x%02X, want 0x%02X", l, tc, s2, step, i, i/(tc.cols/2), gp[i], wp[i])
					}
				}
			}
		}
	}
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// TestFP8BlockNVFP4Refusals: NaN codes anywhere are refused naming the element,
// by the export and by the amax; layouts whose NVFP4 blocks cross FP8 blocks or
// rows are refused.
func TestFP8BlockNVFP4Refusals(t *testing.T) {
	r := rand.New(rand.NewPCG(13, 14))
	b, q := fp8Case(r, 40, 256, 16, 128)
	for _, at := range []int{0, 255, 256*17 + 130, len(q) - 1} {
		bad := append([]byte(nil), q...)
		bad[at] = 0x7F | byte(at&1)<<7
		want := "element [" + itoa(at/256) + "][" + itoa(at%256) + "]"
		if _, _, err := b.appendNVFP4Rows(nil, nil, bad, 0, 40, 16, 1); !errors.Is(err, ErrNonFinite) || !strings.Contains(err.Error(), want) {
			t.Errorf("export, NaN at %d: %v, want ErrNonFinite naming %s", at, err, want)
		}
		if _, err := b.absMaxBF16(bad, 0, 40); !errors.Is(err, ErrNonFinite) || !strings.Contains(err.Error(), want) {
			t.Errorf("amax, NaN at %d: %v, want ErrNonFinite naming %s", at, err, want)
		}
	}
	for _, tc := range []struct{ cols, bj, nv int }{{200, 128, 16}, {256, 120, 16}, {256, 128, 3}, {256, 128, 0}} {
		b, q := fp8Case(r, 3, tc.cols, 128, tc.bj)
		if _, _, err := b.appendNVFP4Rows(nil, nil, q, 0, 3, tc.nv, 1); !errors.Is(err, ErrShape) {
			t.Errorf("%v: %v, want ErrShape", tc, err)
		}
	}
	if _, _, err := b.appendNVFP4Rows(nil, nil, q[:10], 0, 40, 16, 1); !errors.Is(err, ErrShape) {
		t.Errorf("short codes: %v", err)
	}
}

func itoa(i int) string { return strconv.Itoa(i) }

// TestNVFP4FromFP8Tables: the thresholds table() finds from its guesses are, for
// every largest code m, those of a scan of every code: the smallest v ≤ m whose
// nibble magnitude exceeds k, and whose quotient is not zero. Block scales and
// global scales span subnormal products, zero and values that overflow.
func TestNVFP4FromFP8Tables(t *testing.T) {
	r := rand.New(rand.NewPCG(15, 16))
	scales := []float32{0, 1, 1e-3, 3.1e-5, math.SmallestNonzeroFloat32, 1e-38, 2e38}
	for range 200 {
		scales = append(scales, float32(math.Ldexp(1+r.Float64(), r.IntN(260)-140)))
	}
	for i, s := range scales {
		s2 := float32(math.Ldexp(1+r.Float64(), r.IntN(80)-60))
		if i%7 == 0 {
			s2 = float32(math.Ldexp(1+r.Float64(), r.IntN(260)-140))
		}
		tb := &nvfp4FromFP8{d: float32(E2M1Max * s2), s2: s2}
		tb.reset(s)
		for m := range 127 {
			tb.table(uint8(m))
			if !tb.vec[m] {
				continue
			}
			div := tb.div[m]
			want := func(f func(v int) bool) int {
				for v := 0; v <= m; v++ {
					if f(v) {
						return v
					}
				}
				return 128
			}
			for k := range 8 {
				w := want(func(v int) bool {
					q := tb.abs[v] / div
					if k == 7 {
						return q > 0
					}
					return int(F32ToE2M1Even(q)&7) > k
				})
				if got := int(int8(uint8(tb.thr[m]>>(8*k)))) + 1; got != w && !(w == 128 && got == -127) {
					t.Fatalf("scale %v s2 %v m %d: threshold %d is %d, want %d", s, s2, m, k, got, w)
				}
			}
		}
	}
}
