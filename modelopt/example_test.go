package modelopt_test

import (
	"errors"
	"fmt"
	"os"

	"github.com/quantstream/quantstream/arrowio"
	"github.com/quantstream/quantstream/modelopt"
)

// A checkpoint saved by save_pretrained with ModelOpt checkpointing enabled carries its
// quantizer attributes in modelopt_state.pth.
func ExampleReadSavedDir() {
	st, err := modelopt.ReadSavedDir("../testdata/golden/e2e/w4a8_awq/saved")
	if err != nil {
		fmt.Println(err)
		return
	}
	q, _ := st.Quantizers.Get("model.layers.0.self_attn.q_proj.weight_quantizer")
	in := "model.layers.0.self_attn.q_proj.input_quantizer"
	fmt.Println(st.CalibMode, q.Class, q.Sequential[0].Class, q.Sequential[0].NumBits, q.Sequential[1].NumBits)
	fmt.Println(st.Extra[in].HasBuffer("_pre_quant_scale"), st.Extra[in].AmaxForSmoothing.Shape)
	// Output:
	// awq_lite_calibrate SequentialQuantizer StaticBlockScaleQuantizer {0 4} {4 3}
	// true [1 1 256]
}

// A weight-only recipe is applied to a plain BF16 checkpoint and calibrated on the
// weights; a recipe with static activation quantizers is refused.
func ExampleDataFree() {
	dir := "../testdata/golden/e2e/base_llama"
	cfg, _ := os.ReadFile(dir + "/config.json")
	weights, err := arrowio.ReadAllTensors(dir)
	if err != nil {
		fmt.Println(err)
		return
	}
	shapes := map[string][]int64{}
	for n, t := range weights {
		shapes[n] = t.Shape
	}

	r, _ := modelopt.ResolveRecipe("INT4_BLOCKWISE_WEIGHT_ONLY_CFG", "")
	q, err := modelopt.DataFree(r, cfg, shapes)
	if err != nil {
		fmt.Println(err)
		return
	}
	amax, _ := q.WeightAmax(weights)
	a := amax["model.layers.0.self_attn.q_proj.weight_quantizer._amax"]
	fmt.Println(len(amax), a.DType, a.Shape, q.Table["model.layers.0.self_attn.q_proj.weight_quantizer"].AmaxShape)

	r, _ = modelopt.ResolveRecipe("FP8_DEFAULT_CFG", "")
	_, err = modelopt.DataFree(r, cfg, shapes)
	fmt.Println(errors.Is(err, modelopt.ErrNeedsCalibration))
	// Output:
	// 14 F32 [512 1] [256 -1]
	// true
}
