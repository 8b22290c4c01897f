//go:build amd64 && !purego

package quant

//go:noescape
func fp8RowBF16AVX2(dst, src []byte, scales []float32, block int) bool

// fp8RowBF16 decodes the longest prefix of one row of block-FP8 codes that the
// vector kernel takes (a multiple of 16 codes, with block a multiple of 16) and
// returns its length n and whether it holds an E4M3 NaN code: dst[2k:2k+2] =
// F32ToBF16(E4M3ToF32(src[k]) · scales[k/block]) for k < n, exactly the portable
// loop's bytes, a NaN scale or product included; at a NaN code (reported, and
// refused by the caller) the output is meaningless.
func fp8RowBF16(dst, src []byte, scales []float32, block int) (n int, nan bool) {
	if kernels == kernelPortable || block%16 != 0 {
		return 0, false
	}
	if n = len(src) &^ 15; n > 0 {
		nan = fp8RowBF16AVX2(dst[:2*n], src[:n], scales[:(n+block-1)/block], block)
	}
	return n, nan
}

//go:noescape
func maxCodes16AVX2(dst, src []byte)

// maxCodes16 sets dst[k] = maxMagnitudeCode(src[16k : 16k+16]) for as many leading
// k as the vector kernel takes (pairs of blocks) and returns how many.
func maxCodes16(dst, src []byte) int {
	if kernels == kernelPortable {
		return 0
	}
	n := min(len(dst), len(src)/16) &^ 1
	if n > 0 {
		maxCodes16AVX2(dst[:n], src[:16*n])
	}
	return n
}

//go:noescape
func nvfp4Codes16AVX2(dst, src []byte, thr []uint64)

// nvfp4Codes16 packs the NVFP4 nibbles of len(thr) blocks of 16 codes by their
// thresholds (nvfp4FromFP8.table) and reports whether it did (not on the portable
// level, nor for an odd number of blocks).
func nvfp4Codes16(dst, src []byte, thr []uint64) bool {
	if kernels == kernelPortable || len(thr) == 0 || len(thr)%2 != 0 {
		return false
	}
	nvfp4Codes16AVX2(dst[:8*len(thr)], src[:16*len(thr)], thr)
	return true
}

//go:noescape
func maxCodesRowAVX2(acc, src []byte)

// maxCodesRow sets acc[k] = max(acc[k], src[k] & 0x7F) for every k < len(acc)
// (len(src) ≥ len(acc)).
func maxCodesRow(acc, src []byte) {
	n := 0
	if kernels != kernelPortable {
		n = len(acc) &^ 31
		if n > 0 {
			maxCodesRowAVX2(acc[:n], src[:n])
		}
	}
	for k := n; k < len(acc); k++ {
		acc[k] = max(acc[k], src[k]&0x7F)
	}
}
