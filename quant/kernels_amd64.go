//go:build amd64 && !purego

package quant

import (
	"sync"

	"golang.org/x/sys/cpu"
)

// bestKernels is AVX-512 when the CPU and the OS support F, BW, DQ and VL (x/sys/cpu
// checks that the OS saves the ZMM and mask registers), else AVX2, else portable.
// GODEBUG=cpu.avx512f=off (or cpu.avx2=off) lowers it: x/sys/cpu reads GODEBUG.
var bestKernels = func() kernelLevel {
	x := cpu.X86
	switch {
	case x.HasAVX512 && x.HasAVX512F && x.HasAVX512BW && x.HasAVX512DQ && x.HasAVX512VL && x.HasAVX2:
		return kernelAVX512
	case x.HasAVX2:
		return kernelAVX2
	}
	return kernelPortable
}()

//go:noescape
func fp8DivBF16AVX512(dst, src []byte, d float32, roundBF16 bool)

//go:noescape
func fp8DivBF16AVX2(dst, src []byte, d float32, roundBF16 bool)

// fp8DivBF16 is fp8DivChunk on BF16 input for qdt F32 (roundBF16 false) or BF16
// (true): dst[i] = E4M3(round(bf16(src[2i:]) / d)) for the first n elements, n
// returned.
func fp8DivBF16(dst, src []byte, d float32, roundBF16 bool) int {
	var n int
	switch kernels {
	case kernelAVX512:
		if n = len(dst) &^ 15; n > 0 {
			fp8DivBF16AVX512(dst[:n], src[:2*n], d, roundBF16)
		}
	case kernelAVX2:
		if n = len(dst) &^ 31; n > 0 {
			fp8DivBF16AVX2(dst[:n], src[:2*n], d, roundBF16)
		}
	}
	return n
}

//go:noescape
func int8RowBF16AVX512(dst, src []byte, s float32)

//go:noescape
func int8RowBF16AVX2(dst, src []byte, s float32)

// int8RowBF16 is int8RowBF16Go for the first n elements, n returned.
func int8RowBF16(dst, src []byte, s float32) int {
	var n int
	switch kernels {
	case kernelAVX512:
		if n = len(dst) &^ 15; n > 0 {
			int8RowBF16AVX512(dst[:n], src[:2*n], s)
		}
	case kernelAVX2:
		if n = len(dst) &^ 31; n > 0 {
			int8RowBF16AVX2(dst[:n], src[:2*n], s)
		}
	}
	return n
}

//go:noescape
func int4PairsBF16AVX512(dst, x0, x1 []byte, s0, s1 []float32, b int)

//go:noescape
func int4PairsBF16AVX2(dst, x0, x1 []byte, s0, s1 []float32, b int)

// int4PairsBF16 packs one row pair (int4PairBF16Go) and reports whether it did: the
// block b must be a multiple of the vector width.
func int4PairsBF16(dst, x0, x1 []byte, s0, s1 []float32, b int) bool {
	n := len(s0) * b
	switch {
	case kernels == kernelAVX512 && b%16 == 0:
		int4PairsBF16AVX512(dst[:n], x0[:2*n], x1[:2*n], s0, s1[:len(s0)], b)
	case kernels >= kernelAVX2 && b%32 == 0:
		int4PairsBF16AVX2(dst[:n], x0[:2*n], x1[:2*n], s0, s1[:len(s0)], b)
	default:
		return false
	}
	return true
}

//go:noescape
func nvfp4ScalesBF16AVX512(codes []byte, divs []float32, x []byte, block, nb int, d, s2 float32, tab *[256]float32)

//go:noescape
func nvfp4ScalesBF16AVX2(codes []byte, divs []float32, x []byte, block, nb int, d, s2 float32, tab *[256]float32)

//go:noescape
func nvfp4PackBF16AVX512(dst, x []byte, gdivs []float32)

//go:noescape
func nvfp4PackBF16AVX2(dst, x []byte, gdivs []float32)

// nvfp4ScalesBF16 computes the E4M3 codes and the divisors E4M3ToF32(code)·s2 of
// the len(x)/(2·block) blocks of x (nvfp4BlockScale, d = f32(6·s2)) into codes and
// divs, scratch of at least nvfp4ScratchLen(nb) elements (the lanes past nb are
// garbage).
// It reports false, doing nothing, when block is not a multiple of 16.
func nvfp4ScalesBF16(codes []byte, divs []float32, x []byte, block int, d, s2 float32) bool {
	if block%16 != 0 || block == 0 {
		return false
	}
	nb := len(x) / (2 * block)
	p := nvfp4ScratchLen(nb)
	switch kernels {
	case kernelAVX512:
		nvfp4ScalesBF16AVX512(codes[:p], divs[:p], x[:2*nb*block], block, nb, d, s2, &e4m3Table)
	case kernelAVX2:
		nvfp4ScalesBF16AVX2(codes[:p], divs[:p], x[:2*nb*block], block, nb, d, s2, &e4m3Table)
	default:
		return false
	}
	return true
}

// nvfp4PackBF16 is nvfp4PackDivScalar over groups of 16 elements, group g of x
// divided by gdivs[g], for the first n groups, n returned.
func nvfp4PackBF16(dst, x []byte, gdivs []float32) int {
	var n int
	switch kernels {
	case kernelAVX512:
		if n = len(gdivs); n > 0 {
			nvfp4PackBF16AVX512(dst[:8*n], x[:32*n], gdivs)
		}
	case kernelAVX2:
		if n = len(gdivs) &^ 1; n > 0 {
			nvfp4PackBF16AVX2(dst[:8*n], x[:32*n], gdivs[:n])
		}
	}
	return n
}

//go:noescape
func mxfp4BF16AVX512(dst, scales, x []byte, block int, tab *[0x7f80]uint8)

//go:noescape
func mxfp4BF16AVX2(dst, scales, x []byte, block int, tab *[0x7f80]uint8)

// mxfp4BlocksBF16 quantizes the len(scales) blocks of x as AppendMXFP4Blocks and reports
// whether it did: block must be a multiple of 32.
func mxfp4BlocksBF16(dst, scales, x []byte, block int, mode DivMode) bool {
	if block%32 != 0 || block == 0 {
		return false
	}
	nb := len(scales)
	switch kernels {
	case kernelAVX512:
		mxfp4BF16AVX512(dst[:nb*block/2], scales, x[:2*nb*block], block, mxfp4Codes(mode))
	case kernelAVX2:
		mxfp4BF16AVX2(dst[:nb*block/2], scales, x[:2*nb*block], block, mxfp4Codes(mode))
	default:
		return false
	}
	return true
}

//go:noescape
func mxfp8BF16AVX512(dst, scales, x []byte, tab *[0x8000]uint8, mul *[256]float32, compute bool)

//go:noescape
func mxfp8BF16AVX2(dst, scales, x []byte, tab *[0x8000]uint8, mul *[256]float32, compute bool)

// mxfp8BF16 encodes the len(scales) blocks of 32 of x as mxfp8Block32, computing
// the scales first when compute is set (MXFP8BlockExponent; mode matters only
// then), and reports whether it did.
func mxfp8BF16(dst, scales, x []byte, mode DivMode, compute bool) bool {
	n := len(scales) * mxfp8Block
	var tab *[0x8000]uint8 // read only when computing the scales
	if compute {
		tab = mxfp8Codes(mode)
	}
	switch kernels {
	case kernelAVX512:
		mxfp8BF16AVX512(dst[:n], scales, x[:2*n], tab, &mxfp8Mul, compute)
	case kernelAVX2:
		mxfp8BF16AVX2(dst[:n], scales, x[:2*n], tab, &mxfp8Mul, compute)
	default:
		return false
	}
	return true
}

//go:noescape
func maxMag16AVX2(data []byte) uint32

//go:noescape
func maxMag32AVX2(data []byte) uint32

//go:noescape
func maxSegs16AVX2(dst []uint32, row []byte, seg int)

//go:noescape
func maxElems16AVX2(dst []uint32, row []byte)

// maxMag16 is calibMax16Go of the first n bytes of data, n returned (a multiple of 32).
func maxMag16(data []byte) (m uint32, n int) {
	if kernels >= kernelAVX2 {
		if n = len(data) &^ 31; n > 0 {
			m = maxMag16AVX2(data[:n])
		}
	}
	return m, n
}

// maxMag32 is calibMax32Go of the first n bytes of data, n returned.
func maxMag32(data []byte) (m uint32, n int) {
	if kernels >= kernelAVX2 {
		if n = len(data) &^ 31; n > 0 {
			m = maxMag32AVX2(data[:n])
		}
	}
	return m, n
}

// maxSegs16 raises dst[j] to the largest magnitude of the j-th run of seg 16-bit
// words of row, for the first n runs, n returned (0 unless seg is a multiple of 16).
func maxSegs16(dst []uint32, row []byte, seg int) int {
	if kernels < kernelAVX2 || seg%16 != 0 || seg == 0 {
		return 0
	}
	n := min(len(dst), len(row)/(2*seg))
	if n > 0 {
		maxSegs16AVX2(dst[:n], row[:2*n*seg], seg)
	}
	return n
}

// maxElems16 raises dst[j] to row's word j with the sign bit cleared for the first
// n words, n returned.
func maxElems16(dst []uint32, row []byte) int {
	if kernels < kernelAVX2 {
		return 0
	}
	n := len(dst) &^ 7
	if n > 0 {
		maxElems16AVX2(dst[:n], row[:2*n])
	}
	return n
}

//go:noescape
func nvfp4ColsBF16AVX512(dstP, dstS, x []byte, A, B, c0, c1, block int, d, s2 float32, tab *[256]float32)

//go:noescape
func nvfp4ColsBF16AVX2(dstP, dstS, x []byte, A, B, c0, c1, block int, d, s2 float32, tab *[256]float32, divs []float32)

// nvfp4ColsBF16 quantizes the columns of the stored [A, B] BF16 expert x as the
// transposed rows of batched-matmul NVFP4 (AppendQuantizeRows of x transposed,
// global scale s2), writing packed [A/2, B] and scales [A/block, B]: the vector
// kernel takes the columns [lo, hi) of [c0, c1) that whole vectors cover (16
// columns with AVX-512, 8 with AVX2) and reports them (lo = hi when it takes none).
func nvfp4ColsBF16(packed, scales, x []byte, A, B, c0, c1, block int, s2 float32) (lo, hi int) {
	if block < 2 || block%2 != 0 || A%block != 0 {
		return c0, c0
	}
	d := float32(E2M1Max * s2)
	switch kernels {
	case kernelAVX512:
		lo, hi = (c0+15)&^15, c1&^15
		if lo >= hi {
			return c0, c0
		}
		nvfp4ColsBF16AVX512(packed[:A/2*B], scales[:A/block*B], x[:2*A*B], A, B, lo, hi, block, d, s2, &e4m3Table)
	case kernelAVX2:
		lo, hi = (c0+7)&^7, c1&^7
		if lo >= hi {
			return c0, c0
		}
		nvfp4ColsBF16AVX2(packed[:A/2*B], scales[:A/block*B], x[:2*A*B], A, B, lo, hi, block, d, s2, &e4m3Table, make([]float32, hi-lo))
	default:
		return c0, c0
	}
	return lo, hi
}

// mxfp8Codes is, per DivMode, the E8M0 scale code of MXFP8 blocks for every BF16
// amax magnitude: E8M0FromExponent(MXFP8BlockExponent(m)).
var mxfp8Codes = func() func(DivMode) *[0x8000]uint8 {
	build := func(mode DivMode) func() *[0x8000]uint8 {
		return sync.OnceValue(func() *[0x8000]uint8 {
			t := new([0x8000]uint8)
			for m := range t {
				t[m] = E8M0FromExponent(MXFP8BlockExponent(BF16ToF32(uint16(m)), mode))
			}
			return t
		})
	}
	ieee, cuda := build(DivIEEE), build(DivCUDA)
	return func(mode DivMode) *[0x8000]uint8 {
		if mode == DivCUDA {
			return cuda()
		}
		return ieee()
	}
}()

// mxfp8Mul is mxfp8Block32's multiplier for each E8M0 code u: 2^(127−u).
var mxfp8Mul = func() (t [256]float32) {
	for u := range t {
		t[u] = mxExp2(E8M0Bias - float32(u))
	}
	return
}()
