package quant

import (
	"math"
	"sync"
)

// Vector kernels for BF16 weights.
//
// The formats' portable loops (fp8DivChunk, nvfp4PackDivScalar, intRound, ...) are
// the definition. On amd64 the hot loops over BF16 weights also exist in assembly
// (kernels_amd64.s), at two levels: AVX2, and AVX-512 (F, BW, DQ, VL). Each assembly
// kernel does the same IEEE float32 operations as the portable loop, in the same
// order and with the same operand order (so that NaN payloads and signs propagate
// alike), never fused into an FMA; the roundings to BF16, E4M3 and E2M1 are integer
// bit manipulations equal to the portable encoders. The tests in kernels_test.go
// run every level this machine has against the portable code: exhaustively over
// the 65536 BF16 inputs where a kernel is element-wise, on random and adversarial
// blocks where it is not.
//
// Each wrapper (fp8DivBF16, int8RowBF16, ...) handles the longest prefix its
// kernel takes and reports how much that was; the caller finishes the rest with the
// portable loop. With the purego build tag, on other architectures, or on a CPU
// without AVX2, the wrappers handle nothing and only the portable code runs.

// kernelLevel is an implementation level of the BF16 kernels.
type kernelLevel uint8

const (
	kernelPortable kernelLevel = iota // Go only
	kernelAVX2                        // AVX2
	kernelAVX512                      // AVX-512 F, BW, DQ and VL
)

func (l kernelLevel) String() string {
	switch l {
	case kernelAVX2:
		return "avx2"
	case kernelAVX512:
		return "avx512"
	}
	return "portable"
}

// kernels is the level the wrappers use: bestKernels, the best this build and CPU
// support, lowered only by tests (which must then not run in parallel).
var kernels = bestKernels

// decodeBF16 widens the little-endian BF16 values of src (2·len(dst) bytes) exactly.
func decodeBF16(dst []float32, src []byte) {
	src = src[:2*len(dst)]
	for i := range dst {
		dst[i] = math.Float32frombits(uint32(src[2*i])<<16 | uint32(src[2*i+1])<<24)
	}
}

// nvfp4ScratchLen is the length of the codes and divs scratch nvfp4ScalesBF16
// needs for nb blocks: nb rounded up to 16.
func nvfp4ScratchLen(nb int) int { return (nb + 15) &^ 15 }

// mxfp4Codes is, per DivMode, the E8M0 scale code of MXFP4 blocks for every finite
// BF16 amax magnitude m < 0x7F80: E8M0FromExponent(MXFP4BlockExponent(m)). The
// exponent e = code−127 lies in [−127, 126] there, so the kernels derive the
// multiplier 2^−e = 2^(127−code) from the code (TestMXFP4CodeTable checks every
// entry against mxExp2).
var mxfp4Codes = func() func(DivMode) *[0x7f80]uint8 {
	build := func(mode DivMode) func() *[0x7f80]uint8 {
		return sync.OnceValue(func() *[0x7f80]uint8 {
			t := new([0x7f80]uint8)
			for m := range t {
				t[m] = E8M0FromExponent(MXFP4BlockExponent(BF16ToF32(uint16(m)), mode))
			}
			return t
		})
	}
	ieee, cuda := build(DivIEEE), build(DivCUDA)
	return func(mode DivMode) *[0x7f80]uint8 {
		if mode == DivCUDA {
			return cuda()
		}
		return ieee()
	}
}()
