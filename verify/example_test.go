package verify_test

import (
	"context"
	"fmt"

	"github.com/quantstream/quantstream"
	"github.com/quantstream/quantstream/quant"
	"github.com/quantstream/quantstream/verify"
)

// Verify a ModelOpt export, and ask whether vLLM's loader takes it.
func ExampleVerify() {
	r, err := verify.Verify(context.Background(), "../testdata/golden/e2e/nvfp4/expected", verify.Options{Engines: []string{"vllm"}})
	if err != nil {
		panic(err)
	}
	fmt.Println("sound:", r.OK, "errors:", r.Errors)
	fmt.Println(r.Summary.QuantAlgo, r.Summary.Modules)
	fmt.Println("vllm loads:", r.Engines[0].Loads)
	// Output:
	// sound: true errors: 0
	// NVFP4 map[nvfp4:14]
	// vllm loads: yes
}

// Describe a checkpoint from its headers.
func ExampleInspect() {
	inv, err := verify.Inspect("../testdata/golden/e2e/df_mxfp4/expected")
	if err != nil {
		panic(err)
	}
	fmt.Println(inv.QuantConfig.QuantAlgo, inv.Formats[0].Format, inv.Formats[0].Modules)
	for _, p := range inv.Unquantized {
		fmt.Println("unquantized:", p.Pattern)
	}
	// Output:
	// mxfp4 mxfp4 14
	// unquantized: lm_head
}

// Judge a planned checkpoint, known from headers only, by an engine's loader.
func ExampleJudgeHeaders() {
	hq := []byte(`{"producer": {"name": "modelopt"}, "quantization": {"quant_algo": "mxfp4", "kv_cache_quant_algo": null, "exclude_modules": ["lm_head"]}}`)
	hdrs := []quantstream.TensorInfo{
		{Name: "model.layers.0.mlp.down_proj.weight", DType: quant.U8, Shape: []int64{64, 64}},
		{Name: "model.layers.0.mlp.down_proj.weight_scale", DType: quant.U8, Shape: []int64{64, 4}},
	}
	v, err := verify.JudgeHeaders("vllm", hdrs, hq, []byte(`{"model_type": "llama"}`))
	if err != nil {
		panic(err)
	}
	fmt.Println(v.Loads)
	// Output:
	// no
}
