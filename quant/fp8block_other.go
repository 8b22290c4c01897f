//go:build !amd64 || purego

package quant

// fp8RowBF16 handles nothing in this build: the portable loop decodes every code.
func fp8RowBF16(dst, src []byte, scales []float32, block int) (n int, nan bool) { return 0, false }

// maxCodes16 handles nothing in this build.
func maxCodes16(dst, src []byte) int { return 0 }

// nvfp4Codes16 handles nothing in this build.
func nvfp4Codes16(dst, src []byte, thr []uint64) bool { return false }

// maxCodesRow sets acc[k] = max(acc[k], src[k] & 0x7F) for every k < len(acc).
func maxCodesRow(acc, src []byte) {
	for k := range acc {
		acc[k] = max(acc[k], src[k]&0x7F)
	}
}
