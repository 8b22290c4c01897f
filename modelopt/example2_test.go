package modelopt_test

import (
	"errors"
	"fmt"
	"os"

	"github.com/quantstream/quantstream/arrowio"
	"github.com/quantstream/quantstream/modelopt"
)

// A preset combined with a KV-cache preset, as `quantstream convert --recipe
// W4A16_NVFP4_CFG --kv-cache FP8_KV_CFG` resolves them: the KV rule comes last.
func ExampleResolveRecipe() {
	r, err := modelopt.ResolveRecipe("W4A16_NVFP4_CFG", "FP8_KV_CFG")
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(r.Name, "| algorithm:", r.Method(), "|", len(r.Rules), "rules")
	for _, ru := range r.Rules {
		if ru.Cfg != nil { // the rules that configure quantizers; the others disable some
			a := ru.Cfg[0]
			fmt.Printf("%s num_bits %v block_sizes %v\n", ru.QuantizerName, *a.NumBits, a.BlockSizes != nil)
		}
	}

	_, err = modelopt.ResolveRecipe("NO_SUCH_CFG", "")
	fmt.Println(errors.Is(err, modelopt.ErrRecipe))
	// Output:
	// W4A16_NVFP4_CFG + FP8_KV_CFG | algorithm: max | 26 rules
	// *weight_quantizer num_bits {2 1} block_sizes true
	// *[kv]_bmm_quantizer num_bits {4 3} block_sizes false
	// true
}

// Rules appended to a recipe win over the earlier ones, as in ModelOpt's quant_cfg:
// here decoder layer 1 is left unquantized.
func ExampleDataFree_excludeLayer() {
	dir := "../testdata/tiny_llama"
	cfg, _ := os.ReadFile(dir + "/config.json")
	ck, err := arrowio.OpenCheckpoint(dir)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer ck.Close()
	shapes := map[string][]int64{}
	for _, t := range ck.Tensors() {
		shapes[t.Name] = t.Shape
	}

	r, _ := modelopt.ResolveRecipe("INT8_WEIGHT_ONLY_CFG", "")
	off := false
	r.Rules = append(r.Rules, modelopt.Rule{QuantizerName: "*layers.1.*", Enable: &off})
	q, err := modelopt.DataFree(r, cfg, shapes)
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, name := range []string{
		"model.layers.0.mlp.down_proj.weight_quantizer",
		"model.layers.1.mlp.down_proj.weight_quantizer",
		"model.layers.0.mlp.down_proj.input_quantizer",
	} {
		shape, calibrated := q.AmaxShapes[name]
		fmt.Println(name, "enabled:", q.Table[name].Enabled, "calibrated:", calibrated, shape)
	}
	fmt.Println(len(q.AmaxShapes), "weight quantizers calibrate")
	// Output:
	// model.layers.0.mlp.down_proj.weight_quantizer enabled: true calibrated: true [128 1]
	// model.layers.1.mlp.down_proj.weight_quantizer enabled: false calibrated: false []
	// model.layers.0.mlp.down_proj.input_quantizer enabled: false calibrated: false []
	// 14 weight quantizers calibrate
}
