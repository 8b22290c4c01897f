//go:build !amd64 || purego

package quant

// bestKernels is portable: there are no assembly kernels in this build, and every
// wrapper handles nothing.
const bestKernels = kernelPortable

func fp8DivBF16(dst, src []byte, d float32, roundBF16 bool) int           { return 0 }
func int8RowBF16(dst, src []byte, s float32) int                          { return 0 }
func int4PairsBF16(dst, x0, x1 []byte, s0, s1 []float32, b int) bool      { return false }
func nvfp4PackBF16(dst, x []byte, gdivs []float32) int                    { return 0 }
func mxfp4BlocksBF16(dst, scales, x []byte, block int, mode DivMode) bool { return false }
func mxfp8BF16(dst, scales, x []byte, mode DivMode, compute bool) bool    { return false }
func maxMag16(data []byte) (m uint32, n int)                              { return 0, 0 }
func maxMag32(data []byte) (m uint32, n int)                              { return 0, 0 }
func maxSegs16(dst []uint32, row []byte, seg int) int                     { return 0 }
func maxElems16(dst []uint32, row []byte) int                             { return 0 }
func nvfp4ScalesBF16(codes []byte, divs []float32, x []byte, block int, d, s2 float32) bool {
	return false
}

func nvfp4ColsBF16(packed, scales, x []byte, A, B, c0, c1, block int, s2 float32) (lo, hi int) {
	return c0, c0
}
