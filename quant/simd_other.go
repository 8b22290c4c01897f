//go:build !(goexperiment.simd && amd64)

package quant

// fqSIMD is false without the simd experiment: the portable kernels run.
var fqSIMD = false

// nvfp4PackRowVec is never called here; it exists so both builds share the tests.
func nvfp4PackRowVec(o []byte, row, divs []float32, block int) {
	for b, d := range divs {
		nvfp4PackDivScalar(o[b*block/2:(b+1)*block/2], row[b*block:(b+1)*block], d)
	}
}
