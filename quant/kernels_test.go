package quant

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"testing"
)

// The assembly kernels against the portable loops, at every level this machine
// runs (kernelLevels). A level is forced through the kernels variable, so these
// tests do not run in parallel.

// kernelLevels is every level of this build and CPU, portable first.
func kernelLevels() []kernelLevel {
	var ls []kernelLevel
	for l := kernelPortable; l <= bestKernels; l++ {
		ls = append(ls, l)
	}
	return ls
}

// setKernels makes l the level until the end of t.
func setKernels(t testing.TB, l kernelLevel) {
	t.Helper()
	saved := kernels
	kernels = l
	t.Cleanup(func() { kernels = saved })
}

// allBF16 is every BF16 bit pattern, little-endian, in order.
var allBF16 = func() []byte {
	b := make([]byte, 2<<16)
	for h := range 1 << 16 {
		binary.LittleEndian.PutUint16(b[2*h:], uint16(h))
	}
	return b
}()

// kernelDivisors are divisors and multipliers for the element-wise kernels: grid
// values, signed zeros, infinities, NaNs of both signs, subnormals, extremes, and
// random bit patterns.
func kernelDivisors(r *rand.Rand, n int) []float32 {
	d := []float32{1, 0.5, 2, 3, 448, 1.0 / 448, 0.013, 6, 1.0 / 6, 0.0390625, 7.3e-5, 0, float32(math.Copysign(0, -1)),
		float32(math.Inf(1)), float32(math.Inf(-1)), float32(math.NaN()), math.Float32frombits(0xFFC00001),
		math.SmallestNonzeroFloat32, -math.SmallestNonzeroFloat32, 1e-38, 3e38, -2.5, -0.001}
	for len(d) < n {
		switch r.IntN(3) {
		case 0:
			d = append(d, math.Float32frombits(r.Uint32()))
		default:
			d = append(d, float32(math.Ldexp(1+r.Float64(), r.IntN(40)-30)))
		}
	}
	return d
}

// kernelBF16 is n BF16 values: mostly N(0, σ) with σ from 1e-4 to 10, some exact
// grid values and ties, and specials.
func kernelBF16(r *rand.Rand, n int) []byte {
	b := make([]byte, 2*n)
	sigma := math.Pow(10, r.Float64()*5-4)
	for i := range n {
		var h uint16
		switch k := r.IntN(20); {
		case k == 0:
			h = uint16(r.Uint32())
		case k == 1:
			h = []uint16{0, 0x8000, 0x7F80, 0xFF80, 0x7FC0, 0xFFC1, 0x0001, 0x8001, 0x7F7F, 0xFF7F}[r.IntN(10)]
		case k < 4:
			h = F32ToBF16(float32(r.IntN(97)-48) / 8)
		default:
			h = F32ToBF16(float32(r.NormFloat64() * sigma))
		}
		binary.LittleEndian.PutUint16(b[2*i:], h)
	}
	return b
}

func TestKernelLevels(t *testing.T) {
	t.Logf("kernel levels on this machine: %v (default %v)", kernelLevels(), kernels)
}

// TestFP8DivBF16Exhaustive: every BF16 input, divided by each divisor, quantized
// with and without the BF16 rounding of the quotient, whole and in odd pieces.
func TestFP8DivBF16Exhaustive(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 13))
	want := make([]byte, 1<<16)
	got := make([]byte, 1<<16)
	x := make([]float32, 1<<16)
	decodeBF16(x, allBF16)
	for _, d := range kernelDivisors(r, 48) {
		for _, qdt := range []DType{BF16, F32} {
			fp8DivChunk(want, x, d, qdt)
			for _, l := range kernelLevels()[1:] {
				setKernels(t, l)
				clear(got)
				fp8ChunkBF16(got, allBF16, d, qdt)
				kernelCompare(t, fmt.Sprintf("%v fp8 qdt %v d %g (%#x)", l, qdt, d, math.Float32bits(d)), got, want)
				// Odd pieces exercise the portable tails.
				for lo := 0; lo < 4096; {
					hi := min(lo+1+r.IntN(100), 1<<16)
					fp8ChunkBF16(got[lo:hi], allBF16[2*lo:2*hi], d, qdt)
					lo = hi
				}
				kernelCompare(t, fmt.Sprintf("%v fp8 pieces qdt %v d %g", l, qdt, d), got[:4096], want[:4096])
			}
		}
	}
}

// kernelCompare reports the first byte where got and want differ.
func kernelCompare(t *testing.T, what string, got, want []byte) {
	t.Helper()
	if bytes.Equal(got, want) {
		return
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("%s: byte %d: got %#02x, want %#02x", what, i, got[i], want[i])
		}
	}
	t.Fatalf("%s: lengths %d and %d", what, len(got), len(want))
}

// sameAtLevels runs f at the portable level and at every vector level and fails
// on the first output byte that differs. f returns its outputs (and an error,
// which must match too).
func sameAtLevels(t *testing.T, what string, f func() ([][]byte, error)) {
	t.Helper()
	setKernels(t, kernelPortable)
	want, werr := f()
	for _, l := range kernelLevels()[1:] {
		kernels = l
		got, err := f()
		if (err == nil) != (werr == nil) {
			t.Fatalf("%s: %v: error %v, portable %v", what, l, err, werr)
		}
		if len(got) != len(want) {
			t.Fatalf("%s: %v: %d outputs, portable %d", what, l, len(got), len(want))
		}
		for k := range want {
			kernelCompare(t, fmt.Sprintf("%s: %v: output %d", what, l, k), got[k], want[k])
		}
	}
	kernels = kernelPortable
}

// bf16Tensor is a BF16 tensor of shape over data (2 bytes per element).
func bf16Tensor(data []byte, shape ...int64) Tensor {
	return Tensor{DType: BF16, Shape: shape, Data: data}
}

// amaxBlocks is one block of n BF16 values for each magnitude in mags: its largest
// magnitude is that one (at a random place, with a random sign), the others are
// random below it. Over every magnitude it reaches every block scale a kernel can
// derive from an amax.
func amaxBlocks(r *rand.Rand, mags []uint16, n int) []byte {
	b := make([]byte, 2*n*len(mags))
	for k, m := range mags {
		top := r.IntN(n)
		for i := range n {
			h := m
			if i != top {
				h = uint16(r.Uint32() % (uint32(m) + 1))
				if r.IntN(4) == 0 {
					h = m >> uint(r.IntN(4)) // near-ties with the amax
				}
			}
			h |= uint16(r.IntN(2)) << 15
			binary.LittleEndian.PutUint16(b[2*(k*n+i):], h)
		}
	}
	return b
}

// allMagnitudes is every BF16 bit pattern with the sign bit clear: zero,
// subnormals, normals, +Inf and the NaNs.
var allMagnitudes = func() []uint16 {
	m := make([]uint16, 0x8000)
	for i := range m {
		m[i] = uint16(i)
	}
	return m
}()

// TestInt8RowBF16Exhaustive: every BF16 input over each divisor, whole and in odd
// pieces, through appendInt8Rows.
func TestInt8RowBF16Exhaustive(t *testing.T) {
	r := rand.New(rand.NewPCG(2, 13))
	for _, s := range kernelDivisors(r, 40) {
		sameAtLevels(t, fmt.Sprintf("int8 s %g", s), func() ([][]byte, error) {
			whole, err := appendInt8Rows(nil, allBF16, BF16, 1<<16, []float32{s})
			if err != nil {
				return nil, err
			}
			// 13 rows of 61: every row has a tail the vector kernels leave.
			pieces, err := appendInt8Rows(nil, allBF16[:2*13*61], BF16, 61, []float32{s, -s, s, 1, 0, s, s, 2, s, s, s, 3, s})
			return [][]byte{whole, pieces}, err
		})
	}
}

// TestInt4PairsBF16: row pairs of every BF16 value against random scales (and
// specials), for blocks the vector kernels take (16, 32, 128) and others.
func TestInt4PairsBF16(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 13))
	divs := kernelDivisors(r, 64)
	for _, b := range []int{16, 32, 128, 48, 8, 1} {
		cols := 4096 / b * b
		rows := 2 * (1 << 16) / cols
		w := make([]byte, 2*rows*cols)
		copy(w, allBF16)
		copy(w[len(allBF16):], kernelBF16(r, (len(w)-len(allBF16))/2))
		// Pair each BF16 value with a shuffled partner row.
		r.Shuffle(len(w)/4, func(i, j int) {
			if (i/cols)%2 == 1 && (j/cols)%2 == 1 {
				copy(w[4*i:4*i+2], w[4*j:4*j+2])
			}
		})
		sc := cols / b
		s := make([]float32, rows*sc)
		for i := range s {
			s[i] = divs[r.IntN(len(divs))]
			if r.IntN(3) > 0 {
				s[i] = float32(r.Float64()*0.01 + 1e-4)
			}
		}
		sameAtLevels(t, fmt.Sprintf("int4 block %d", b), func() ([][]byte, error) {
			q, err := appendInt4RowPairs(nil, w, BF16, cols, s, sc)
			return [][]byte{q}, err
		})
	}
}

// TestNVFP4PackBF16Exhaustive: every BF16 value divided by each divisor, as the
// pack kernel sees it (groups of 16, each with its divisor), against
// nvfp4PackDivScalar; odd group counts leave work to the portable loop.
func TestNVFP4PackBF16Exhaustive(t *testing.T) {
	r := rand.New(rand.NewPCG(4, 13))
	x := make([]float32, 1<<16)
	decodeBF16(x, allBF16)
	groups := len(x) / 16
	want := make([]byte, len(x)/2)
	got := make([]byte, len(x)/2)
	divs := kernelDivisors(r, 48)
	mixed := make([]float32, groups)
	for g := range mixed {
		mixed[g] = divs[r.IntN(len(divs))]
	}
	for i, d := range append(divs, -1) {
		g := make([]float32, groups)
		if i == len(divs) {
			copy(g, mixed)
		} else {
			for k := range g {
				g[k] = d
			}
		}
		for k := range groups {
			nvfp4PackDivScalar(want[8*k:8*k+8], x[16*k:16*k+16], g[k])
		}
		for _, l := range kernelLevels()[1:] {
			setKernels(t, l)
			clear(got)
			nvfp4PackRowBF16(got, allBF16, g, 16, nil)
			kernelCompare(t, fmt.Sprintf("%v nvfp4 pack d %g", l, d), got, want)
			clear(got)
			nvfp4PackRowBF16(got[:8*7], allBF16[:32*7], g[:7], 16, nil)
			kernelCompare(t, fmt.Sprintf("%v nvfp4 pack 7 groups d %g", l, d), got[:8*7], want[:8*7])
		}
	}
}

// nvfp4Globals are NVFP4 global scales (wsf2): usual ones, and 0, negative, NaN,
// subnormal and huge ones whose block scales all clamp or turn NaN.
var nvfp4Globals = []float32{0.0005, 1.0 / 2688, 0.01, 1, 3e-6, 0, -0.002, float32(math.NaN()), 1e-40, 1e30}

// TestNVFP4QuantizeRowsBF16: every amax magnitude as a block's amax (all-zero,
// subnormal, saturating and NaN blocks among them), random weights and odd widths,
// through AppendQuantizeRows, AppendRows and nvfp4Quantize.
func TestNVFP4QuantizeRowsBF16(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 13))
	// Rows of 21 blocks: one group of 16 (8 twice, for AVX2) through the reduction
	// tree and a remainder block by block.
	mags := append([]uint16(nil), allMagnitudes...)
	for len(mags)%21 != 0 {
		mags = append(mags, uint16(r.IntN(0x7F80)))
	}
	for _, block := range []int{16, 32, 64, 8} {
		w := bf16Tensor(amaxBlocks(r, mags, block), int64(len(mags)/21), int64(21*block))
		for i, s2 := range nvfp4Globals {
			if block != 16 && i > 3 {
				break
			}
			n := NVFP4{Block: block, Scale2: []float32{s2}}
			sameAtLevels(t, fmt.Sprintf("nvfp4 amax block %d s2 %g", block, s2), func() ([][]byte, error) {
				p, sc, err := n.AppendQuantizeRows(nil, nil, w, 0, int(w.Shape[0]))
				return [][]byte{p, sc}, err
			})
		}
	}
	for _, shape := range [][]int64{{64, 4096}, {3, 48}, {5, 16}, {7, 272}, {2, 20}, {4, 3, 96}} {
		w := bf16Tensor(kernelBF16(r, int(Numel(shape))), shape...)
		for _, block := range []int{16, 32, 48} {
			n := NVFP4{Block: block, Scale2: []float32{0.0003, 0.0007}[:1+len(shape)%2]}
			if len(n.Scale2) == 2 && shape[0]%2 != 0 {
				n.Scale2 = n.Scale2[:1]
			}
			rows := int(Numel(shape[:len(shape)-1]))
			if (int(shape[len(shape)-1])+block-1)/block*block%2 != 0 {
				continue
			}
			sameAtLevels(t, fmt.Sprintf("nvfp4 %v block %d", shape, block), func() ([][]byte, error) {
				p, sc, err := n.AppendQuantizeRows(nil, nil, w, 0, rows)
				if err != nil {
					return nil, err
				}
				p1, sc1, err := n.AppendQuantizeRows(nil, nil, w, rows/2, rows)
				if err != nil {
					return nil, err
				}
				sv, _ := Float32s(Tensor{DType: F8E4M3, Shape: []int64{int64(len(sc))}, Data: sc})
				pr, err := n.AppendRows(nil, w, sv, 0, rows)
				return [][]byte{p, sc, p1, sc1, pr}, err
			})
		}
	}
	w := bf16Tensor(kernelBF16(r, 32*512), 32, 512)
	sameAtLevels(t, "nvfp4Quantize", func() ([][]byte, error) {
		q, err := nvfp4Quantize(w, 16, nil, nil, DivIEEE)
		return [][]byte{q.Packed.Data, q.Scales.Data, q.Scale2.Data}, err
	})
}

// TestMXFP4CodeTable: the kernels' multiplier 2^(127-code) is mxExp2(-e) for the
// exponent of every finite BF16 amax, in both division modes.
func TestMXFP4CodeTable(t *testing.T) {
	for _, mode := range []DivMode{DivIEEE, DivCUDA} {
		tab := mxfp4Codes(mode)
		for m := range tab {
			e := MXFP4BlockExponent(BF16ToF32(uint16(m)), mode)
			if e < -127 || e > 126 || float32(tab[m])-127 != e {
				t.Fatalf("%v: amax %#04x: exponent %v, code %d", mode, m, e, tab[m])
			}
			if f := math.Float32frombits(uint32(254-int(tab[m])) << 23); f != mxExp2(-e) {
				t.Fatalf("%v: amax %#04x: multiplier %v, want %v", mode, m, f, mxExp2(-e))
			}
		}
	}
}

// TestMXFP4BlocksBF16: every amax magnitude (Inf and NaN included) as a block
// amax, and random weights, in both division modes and several block sizes.
func TestMXFP4BlocksBF16(t *testing.T) {
	r := rand.New(rand.NewPCG(6, 13))
	for _, block := range []int{32, 64, 16, 2} {
		mags := allMagnitudes
		if block < 32 {
			mags = mags[:0x8000:0x8000]
		}
		w := bf16Tensor(amaxBlocks(r, mags, block), int64(len(mags)), int64(block))
		nb := len(mags)
		for _, mode := range []DivMode{DivIEEE, DivCUDA} {
			sameAtLevels(t, fmt.Sprintf("mxfp4 amax block %d %v", block, mode), func() ([][]byte, error) {
				p, sc, err := AppendMXFP4Blocks(nil, nil, w, block, 0, nb, mode)
				if err != nil {
					return nil, err
				}
				p1, sc1, err := AppendMXFP4Blocks(make([]byte, 3), make([]byte, 1), w, block, nb/3, nb/2, mode)
				return [][]byte{p, sc, p1, sc1}, err
			})
		}
	}
	w := bf16Tensor(kernelBF16(r, 64*4096), 64, 4096)
	sameAtLevels(t, "mxfp4Quantize", func() ([][]byte, error) {
		p, sc, err := mxfp4Quantize(w, 32, DivIEEE)
		return [][]byte{p.Data, sc.Data}, err
	})
}

// TestMXFP8RowsBF16: every amax magnitude as a block amax, random weights, given
// scales of every code, widths that are not a multiple of 32.
func TestMXFP8RowsBF16(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 13))
	w := bf16Tensor(amaxBlocks(r, allMagnitudes, 32), 0x8000/8, 256)
	rows := int(w.Shape[0])
	for _, mode := range []DivMode{DivIEEE, DivCUDA} {
		sameAtLevels(t, fmt.Sprintf("mxfp8 amax %v", mode), func() ([][]byte, error) {
			q, sc, err := appendMXFP8QuantizeRows(nil, nil, w, 0, rows, mode)
			if err != nil {
				return nil, err
			}
			q1, sc1, err := appendMXFP8QuantizeRows(make([]byte, 5), nil, w, 7, rows-3, mode)
			return [][]byte{q, sc, q1, sc1}, err
		})
	}
	given := make([]byte, rows*8)
	for i := range given {
		given[i] = uint8(i)
	}
	r.Shuffle(len(given), func(i, j int) { given[i], given[j] = given[j], given[i] })
	sameAtLevels(t, "mxfp8 given scales", func() ([][]byte, error) {
		q, err := appendMXFP8Rows(nil, w, given, 0, rows)
		if err != nil {
			return nil, err
		}
		q1, err := appendMXFP8Rows(nil, w, given, 100, 101)
		return [][]byte{q, q1}, err
	})
	for _, shape := range [][]int64{{16, 4096}, {3, 48}, {5, 32}, {2, 3, 64}} {
		w := bf16Tensor(kernelBF16(r, int(Numel(shape))), shape...)
		sameAtLevels(t, fmt.Sprintf("mxfp8Quantize %v", shape), func() ([][]byte, error) {
			q, sc, err := mxfp8Quantize(w, nil, DivIEEE)
			return [][]byte{q.Data, sc.Data}, err
		})
	}
}

// TestFP8FormatsBF16: the FP8 formats' dividers (per tensor with a 0-dim and a
// (1,) scale, per channel, 2-D blocks with partial blocks, experts) on random
// weights.
func TestFP8FormatsBF16(t *testing.T) {
	r := rand.New(rand.NewPCG(8, 13))
	for _, shape := range [][]int64{{64, 4096}, {7, 333}, {130, 257}, {4, 8, 48}} {
		w := bf16Tensor(kernelBF16(r, int(Numel(shape))), shape...)
		rows := int(Numel(shape[:len(shape)-1]))
		scale := func(dt DType, sh ...int64) Tensor {
			v := make([]float32, Numel(sh))
			for i := range v {
				v[i] = float32(r.Float64()*0.01 + 1e-5)
			}
			v[0] = 0.0013
			t, _ := FromFloat32(dt, sh, v)
			return t
		}
		var cases []struct {
			name string
			d    func() (*fp8Divider, error)
		}
		add := func(name string, d func() (*fp8Divider, error)) {
			cases = append(cases, struct {
				name string
				d    func() (*fp8Divider, error)
			}{name, d})
		}
		s0 := scale(F32)
		add("per tensor 0-dim", func() (*fp8Divider, error) { return newFP8PerTensor(w, s0, DivIEEE) })
		add("per tensor 0-dim cuda", func() (*fp8Divider, error) { return newFP8PerTensor(w, s0, DivCUDA) })
		s1 := scale(F32, 1)
		add("per tensor (1,)", func() (*fp8Divider, error) { return newFP8PerTensor(w, s1, DivIEEE) })
		sb := scale(BF16)
		add("per tensor bf16 scale", func() (*fp8Divider, error) { return newFP8PerTensor(w, sb, DivIEEE) })
		if len(shape) == 2 {
			sc := scale(F32, shape[0])
			add("per channel", func() (*fp8Divider, error) { return newFP8PerChannel(w, sc) })
			for _, b := range []int{128, 16, 5} {
				grid := fp8BlockScaleShape(shape, []int{b, b})
				sg := scale(F32, grid...)
				add(fmt.Sprintf("blocks %d", b), func() (*fp8Divider, error) { return newFP8Block(w, sg, fp8Blocks{-1: b, -2: b}) })
			}
		} else {
			se := scale(F32, shape[0])
			add("per expert", func() (*fp8Divider, error) { return newFP8PerChannel(w, se) })
		}
		for _, c := range cases {
			sameAtLevels(t, fmt.Sprintf("fp8 %v %s", shape, c.name), func() ([][]byte, error) {
				d, err := c.d()
				if err != nil {
					return nil, err
				}
				return [][]byte{d.AppendRows(nil, 0, rows), d.AppendRows(make([]byte, 9), rows/3, rows)}, nil
			})
		}
	}
}

// TestCalibrationBF16: the amax reductions at every level: whole-buffer maxima of
// every length around the vector widths, and RowCalibration over every layout.
func TestCalibrationBF16(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 13))
	data := make([]byte, 4096)
	for i := range data {
		data[i] = byte(r.Uint32())
	}
	for n := 0; n <= 700; n++ {
		sameAtLevels(t, fmt.Sprintf("max %d bytes", n), func() ([][]byte, error) {
			a, b := calibMax16(data[:n]), calibMax32(data[:n])
			return [][]byte{binary.LittleEndian.AppendUint32(binary.LittleEndian.AppendUint32(nil, a), b)}, nil
		})
	}
	// A large maximum at every position of a buffer longer than one unrolled step.
	for pos := 0; pos < 600; pos += 2 {
		buf := make([]byte, 600)
		buf[pos], buf[pos+1] = 0x34, 0xF2 // sign set: 0x7234 once cleared
		sameAtLevels(t, fmt.Sprintf("max at %d", pos), func() ([][]byte, error) {
			return [][]byte{binary.LittleEndian.AppendUint32(nil, calibMax16(buf))}, nil
		})
	}
	// Static blocks of 16 and 32 (NVFP4 static, MX-sized), which the reduction
	// tree takes, beside calibQuantizers' layouts.
	blocks := func(d map[int]int) *Quantizer {
		return &Quantizer{NumBits: BitsE2M1, BlockSizes: &BlockSizes{Dims: d, Type: "static"}}
	}
	quantizers := append(calibQuantizers[:len(calibQuantizers):len(calibQuantizers)], []struct {
		name string
		q    *Quantizer
	}{
		{"static blocks 16", blocks(map[int]int{-1: 16})},
		{"static blocks 32", blocks(map[int]int{-1: 32})},
		{"2-D blocks 16x4", &Quantizer{NumBits: BitsE4M3, BlockSizes: &BlockSizes{Dims: map[int]int{-1: 16, -2: 4}}}},
	}...)
	for _, dt := range []DType{BF16, F16, F32} {
		for _, shape := range append(calibShapes, []int64{9, 16 * 21}, []int64{3, 32 * 17}) {
			w := calibRandom(r, dt, shape)
			for _, qc := range quantizers {
				c, err := NewRowCalibration(qc.q, w)
				if err != nil {
					continue
				}
				sameAtLevels(t, fmt.Sprintf("%v %v %s", dt, shape, qc.name), func() ([][]byte, error) {
					cells := make([]uint32, c.Cells())
					c.Reduce(cells, 0, c.Rows())
					a, err := c.Amax(cells)
					return [][]byte{a.Data}, err
				})
			}
		}
	}
	w := bf16Tensor(kernelBF16(r, 300*77), 300, 77)
	sameAtLevels(t, "TensorAmax", func() ([][]byte, error) {
		a, err := TensorAmax(w)
		return [][]byte{binary.LittleEndian.AppendUint32(nil, math.Float32bits(a))}, err
	})
}

// TestRowExportLevels: PrepareRowExport, the path the export stage takes, gives
// the same bytes at every level for every format, in uneven pieces.
func TestRowExportLevels(t *testing.T) {
	r := rand.New(rand.NewPCG(10, 13))
	for _, format := range append(rowFormats(t), "bmm/nvfp4", "bmm/mxfp4") {
		shape := []int{64, 1024}
		name := format
		if f, ok := strings.CutPrefix(format, "bmm/"); ok {
			name, shape = f, []int{3, 128, 96}
		}
		m := rowsModule(t, r, name, BF16, shape...)
		sameAtLevels(t, "row export "+format, func() ([][]byte, error) {
			_, re, ok := PrepareRowExport(m, BF16, DivIEEE)
			if !ok {
				return nil, fmt.Errorf("no row export")
			}
			dst := make([][]byte, len(re.Outs))
			for k, o := range re.Outs {
				n, _ := o.DType.ByteLen(Numel(o.Shape))
				dst[k] = make([]byte, n)
			}
			for u0 := 0; u0 < re.Units; {
				u1 := min(re.Units, u0+1+r.IntN(9))
				if r.IntN(3) == 0 {
					u1 = min(re.Units, u0+1+r.IntN(200)) // whole vectors of columns
				}
				if err := re.Fill(dst, u0, u1); err != nil {
					return nil, err
				}
				u0 = u1
			}
			return dst, nil
		})
	}
}

// TestNVFP4ColumnsBF16: the column kernel of batched-matmul NVFP4 experts against
// AppendQuantizeRows of the explicitly transposed matrix, with every amax
// magnitude as a block amax, over column ranges with ragged edges.
func TestNVFP4ColumnsBF16(t *testing.T) {
	r := rand.New(rand.NewPCG(12, 13))
	for _, tc := range []struct{ A, block int }{{256, 16}, {64, 32}, {96, 6}} {
		nbr := tc.A / tc.block // blocks per transposed row
		mags := append([]uint16(nil), allMagnitudes...)
		for len(mags)%(nbr*16) != 0 {
			mags = append(mags, uint16(r.IntN(0x7F80)))
		}
		B := len(mags) / nbr
		tr := bf16Tensor(amaxBlocks(r, mags, tc.block), int64(B), int64(tc.A)) // [B, A]
		x := make([]byte, len(tr.Data))
		for b := range B {
			for a := range tc.A {
				copy(x[2*(a*B+b):], tr.Data[2*(b*tc.A+a):2*(b*tc.A+a)+2])
			}
		}
		for _, s2 := range nvfp4Globals[:5] {
			setKernels(t, kernelPortable)
			n := NVFP4{Block: tc.block, Scale2: []float32{s2}}
			p, sc, err := n.AppendQuantizeRows(nil, nil, tr, 0, B)
			if err != nil {
				t.Fatal(err)
			}
			half := tc.A / 2
			wantP, wantS := make([]byte, half*B), make([]byte, nbr*B)
			for b := range B {
				for j := range half {
					wantP[j*B+b] = p[b*half+j]
				}
				for k := range nbr {
					wantS[k*B+b] = sc[b*nbr+k]
				}
			}
			for _, l := range kernelLevels()[1:] {
				setKernels(t, l)
				for _, cr := range [][2]int{{0, B}, {5, B - 3}, {16, 48}, {7, 20}} {
					gotP, gotS := make([]byte, len(wantP)), make([]byte, len(wantS))
					lo, hi := nvfp4ColsBF16(gotP, gotS, x, tc.A, B, cr[0], cr[1], tc.block, s2)
					// The vector kernels take the columns whole vectors cover: 16 per
					// AVX-512 vector, 8 per AVX2 one.
					vec := map[kernelLevel]int{kernelAVX512: 16, kernelAVX2: 8}[l]
					wlo, whi := (cr[0]+vec-1)&^(vec-1), cr[1]&^(vec-1)
					if wlo >= whi {
						wlo, whi = cr[0], cr[0]
					}
					if vec > 0 && (lo != wlo || hi != whi) {
						t.Fatalf("A %d block %d: columns [%d,%d) taken as [%d,%d)", tc.A, tc.block, cr[0], cr[1], lo, hi)
					}
					for j := 0; j < half; j++ {
						kernelCompare(t, fmt.Sprintf("%v cols A %d block %d s2 %g packed row %d", l, tc.A, tc.block, s2, j),
							gotP[j*B+lo:j*B+hi], wantP[j*B+lo:j*B+hi])
					}
					for k := range nbr {
						kernelCompare(t, fmt.Sprintf("%v cols A %d block %d s2 %g scales row %d", l, tc.A, tc.block, s2, k),
							gotS[k*B+lo:k*B+hi], wantS[k*B+lo:k*B+hi])
					}
				}
			}
		}
	}
}

// fuzzBF16 is data as BF16 values (an odd trailing byte dropped).
func fuzzBF16(data []byte) []byte { return data[:len(data)&^1] }

// FuzzFP8Kernel: the FP8 kernel against fp8DivChunk for any BF16 values, any
// divisor and both quotient dtypes.
func FuzzFP8Kernel(f *testing.F) {
	f.Add([]byte{0x80, 0x3f, 0x40, 0x3f, 0xc0, 0x7f, 0x01, 0x80}, math.Float32bits(0.5), true)
	f.Add(allBF16[:2*100], math.Float32bits(3e-3), false)
	f.Add(allBF16[2*0x7f00:2*0x7fa0], uint32(0xffc00001), true)
	f.Fuzz(func(t *testing.T, data []byte, dbits uint32, roundBF16 bool) {
		x := fuzzBF16(data)
		d := math.Float32frombits(dbits)
		qdt := F32
		if roundBF16 {
			qdt = BF16
		}
		sameAtLevels(t, "fp8", func() ([][]byte, error) {
			o := make([]byte, len(x)/2)
			if kernels == kernelPortable {
				v := make([]float32, len(o))
				decodeBF16(v, x)
				fp8DivChunk(o, v, d, qdt)
			} else {
				fp8ChunkBF16(o, x, d, qdt)
			}
			return [][]byte{o}, nil
		})
	})
}

// FuzzIntKernels: INT8 rows and INT4 row pairs for any BF16 values and scales.
func FuzzIntKernels(f *testing.F) {
	f.Add(allBF16[:2*256], math.Float32bits(0.01), math.Float32bits(-0.5), uint8(3))
	f.Add(allBF16[2*0x4000:2*0x4400], math.Float32bits(1), uint32(0x7fc00000), uint8(0))
	f.Fuzz(func(t *testing.T, data []byte, s0, s1 uint32, sel uint8) {
		x := fuzzBF16(data)
		b := []int{16, 32, 64, 128, 8, 48}[int(sel)%6]
		sa, sb := math.Float32frombits(s0), math.Float32frombits(s1)
		sameAtLevels(t, "int", func() ([][]byte, error) {
			var out [][]byte
			if cols := 1 + int(sel)%97; len(x) >= 2*cols {
				rows := len(x) / (2 * cols)
				s := make([]float32, rows)
				for i := range s {
					s[i] = []float32{sa, sb}[i%2]
				}
				q, err := appendInt8Rows(nil, x[:2*rows*cols], BF16, cols, s)
				if err != nil {
					return nil, err
				}
				out = append(out, q)
			}
			if cols := b * (1 + int(sel)/6%4); len(x) >= 4*cols {
				rows := len(x) / (4 * cols) * 2
				s := make([]float32, rows*cols/b)
				for i := range s {
					s[i] = []float32{sa, sb, sa * 3}[i%3]
				}
				q, err := appendInt4RowPairs(nil, x[:2*rows*cols], BF16, cols, s, cols/b)
				if err != nil {
					return nil, err
				}
				out = append(out, q)
			}
			return out, nil
		})
	})
}

// FuzzNVFP4Kernels: NVFP4 rows (scales computed and given) and the column kernel
// of batched-matmul experts for any BF16 values and global scale.
func FuzzNVFP4Kernels(f *testing.F) {
	f.Add(allBF16[:2*1024], math.Float32bits(0.0005), uint8(0))
	f.Add(allBF16[2*0x7000:2*0x7800], math.Float32bits(1e-30), uint8(7))
	f.Add(allBF16[2*0x3000:2*0x3400], uint32(0x7fc00000), uint8(4))
	f.Fuzz(func(t *testing.T, data []byte, s2bits uint32, sel uint8) {
		x := fuzzBF16(data)
		s2 := math.Float32frombits(s2bits)
		block := []int{16, 32, 48, 8}[int(sel)%4]
		cols := block * (1 + int(sel)/4%24)
		rows := len(x) / (2 * cols)
		if rows == 0 {
			return
		}
		w := bf16Tensor(x[:2*rows*cols], int64(rows), int64(cols))
		n := NVFP4{Block: block, Scale2: []float32{s2}}
		sameAtLevels(t, "nvfp4 rows", func() ([][]byte, error) {
			p, sc, err := n.AppendQuantizeRows(nil, nil, w, 0, rows)
			if err != nil {
				return nil, err
			}
			sv, _ := Float32s(Tensor{DType: F8E4M3, Shape: []int64{int64(len(sc))}, Data: sc})
			pr, err := n.AppendRows(nil, w, sv, 0, rows)
			return [][]byte{p, sc, pr}, err
		})
		// The same bytes as a stored expert [A = cols, B = rows]: columns are rows.
		if block%2 != 0 {
			return
		}
		A, B := cols, rows
		tr := make([]byte, len(w.Data))
		for b := range B {
			for a := range A {
				copy(tr[2*(b*A+a):], w.Data[2*(a*B+b):2*(a*B+b)+2])
			}
		}
		setKernels(t, kernelPortable)
		p, sc, err := n.AppendQuantizeRows(nil, nil, bf16Tensor(tr, int64(B), int64(A)), 0, B)
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range kernelLevels()[1:] {
			setKernels(t, l)
			gp, gs := make([]byte, A/2*B), make([]byte, A/block*B)
			lo, hi := nvfp4ColsBF16(gp, gs, w.Data, A, B, 0, B, block, s2)
			for b := lo; b < hi; b++ {
				for j := range A / 2 {
					if gp[j*B+b] != p[b*(A/2)+j] {
						t.Fatalf("%v: column %d packed %d: %#02x, want %#02x", l, b, j, gp[j*B+b], p[b*(A/2)+j])
					}
				}
				for k := range A / block {
					if gs[k*B+b] != sc[b*(A/block)+k] {
						t.Fatalf("%v: column %d scale %d: %#02x, want %#02x", l, b, k, gs[k*B+b], sc[b*(A/block)+k])
					}
				}
			}
		}
	})
}

// FuzzMXKernels: MXFP4 blocks and MXFP8 rows (scales computed and given) for any
// BF16 values, in both division modes.
func FuzzMXKernels(f *testing.F) {
	f.Add(allBF16[:2*1024], uint8(0), false)
	f.Add(allBF16[2*0x7f00:2*0x8000], uint8(5), true)
	f.Fuzz(func(t *testing.T, data []byte, sel uint8, cuda bool) {
		x := fuzzBF16(data)
		mode := DivIEEE
		if cuda {
			mode = DivCUDA
		}
		block := []int{32, 64, 16, 96}[int(sel)%4]
		if nb := len(x) / (2 * block); nb > 0 {
			w := bf16Tensor(x[:2*nb*block], int64(nb), int64(block))
			sameAtLevels(t, "mxfp4", func() ([][]byte, error) {
				p, sc, err := AppendMXFP4Blocks(nil, nil, w, block, 0, nb, mode)
				return [][]byte{p, sc}, err
			})
		}
		cols := 32 * (1 + int(sel)/4%8)
		if rows := len(x) / (2 * cols); rows > 0 {
			w := bf16Tensor(x[:2*rows*cols], int64(rows), int64(cols))
			given := make([]byte, rows*cols/32)
			for i := range given {
				given[i] = x[i%len(x)] ^ sel
			}
			sameAtLevels(t, "mxfp8", func() ([][]byte, error) {
				q, sc, err := appendMXFP8QuantizeRows(nil, nil, w, 0, rows, mode)
				if err != nil {
					return nil, err
				}
				qg, err := appendMXFP8Rows(nil, w, given, 0, rows)
				return [][]byte{q, sc, qg}, err
			})
		}
	})
}
