package quant_test

import (
	"fmt"

	"github.com/quantstream/quantstream/quant"
)

// Every weight format is a codec keyed by ModelOpt's format string.
func ExampleFormats() {
	fmt.Println(quant.Formats())
	// Output:
	// [fp8 fp8_pb_real fp8_pb_wo fp8_pc_pt int4_awq int8_sq int8_wo mxfp4 mxfp8 nvfp4 nvfp4_awq nvfp4_svdquant w4a16_nvfp4 w4a8_awq w4a8_mxfp4_fp8 w4a8_nvfp4_fp8]
}

// A codec round trip: quantize a BF16 weight to FP8 with a per-tensor scale
// (amax / 448, as ModelOpt computes it), then dequantize it.
func ExampleLookupFormat() {
	f, err := quant.LookupFormat("fp8")
	if err != nil {
		fmt.Println(err)
		return
	}
	w, _ := quant.FromFloat32(quant.BF16, []int64{2, 4}, []float32{0.5, -1, 2, 3.5, -0.25, 0.125, 1.75, -3.5})
	amax, _ := quant.TensorAmax(w)
	scale, _ := quant.FromFloat32(quant.F32, nil, []float32{amax / 448})

	q, err := f.Quantize(w, &scale, nil, 0, quant.DivIEEE)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("%v %v % x\n", q.DType, q.Shape, q.Data)
	back, err := f.Dequantize(q, &scale, nil, 0, quant.BF16)
	if err != nil {
		fmt.Println(err)
		return
	}
	v, _ := quant.Float32s(back)
	fmt.Println(back.DType, v)

	_, err = quant.LookupFormat("fp3")
	fmt.Println(err)
	// Output:
	// F8_E4M3 [2 4] 68 f0 78 7e e0 58 76 fe
	// BF16 [0.5 -1 2 3.5 -0.25 0.125 1.75 -3.5]
	// quant: unknown format "fp3"
}

// INT8 weight-only export: one scale per output channel (row amax / 127, in the
// weight's dtype, as ModelOpt keeps it) and the rounded, clamped codes.
func ExampleToQuantizedWeight_int8() {
	w, _ := quant.FromFloat32(quant.BF16, []int64{2, 4}, []float32{0.5, -1, 2, 3.5, -0.25, 0.125, 1.75, -3.5})
	s, _ := quant.FromFloat32(quant.BF16, []int64{2}, []float32{3.5 / 127, 3.5 / 127})
	q, err := quant.ToQuantizedWeight(w, &s, nil, "int8_wo", 0, quant.DivIEEE)
	if err != nil {
		fmt.Println(err)
		return
	}
	codes := make([]int8, len(q.Data))
	for i, b := range q.Data {
		codes[i] = int8(b)
	}
	fmt.Println(q.DType, q.Shape, codes)
	// Output:
	// I8 [2 4] [18 -36 72 127 -9 5 63 -127]
}
