package stages_test

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/quantstream/quantstream"
	"github.com/quantstream/quantstream/arrowio"
	"github.com/quantstream/quantstream/modelopt"
	"github.com/quantstream/quantstream/stages"
)

// Plan ModelOpt's export of a calibrated checkpoint (base weights overlaid with the
// calibration state and its quantizers.json) from headers alone, then export one
// layer with the plan's Stage.
func ExampleNewPlan_calibrated() {
	base := filepath.Join("..", "testdata", "golden", "e2e", "base_llama")
	calib := filepath.Join("..", "testdata", "golden", "e2e", "fp8", "input")
	ck, err := arrowio.OpenCheckpoint(base, calib)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer ck.Close()
	qs, err := modelopt.LoadQuantizersJSON(filepath.Join(calib, "quantizers.json"))
	if err != nil {
		fmt.Println(err)
		return
	}
	cfg, _ := os.ReadFile(filepath.Join(base, "config.json"))
	var inputs []quantstream.TensorInfo
	for _, t := range ck.Tensors() {
		inputs = append(inputs, t.Info())
	}

	plan, err := stages.NewPlan(inputs, cfg, qs, stages.Options{})
	if err != nil {
		fmt.Println(err) // every problem of the inputs, one per line
		return
	}
	fmt.Println("family:", plan.Arch.Name, "format:", plan.ModelFormat, "modules:", len(plan.Modules["fp8"]))
	lp := plan.Layer(0)
	for _, t := range lp.Outputs {
		if strings.HasPrefix(t.Name, "model.layers.0.self_attn.q_proj.") {
			fmt.Println(t.Name, t.DType, t.Shape)
		}
	}

	mem := memory.NewGoAllocator()
	l, err := ck.ReadLayer(context.Background(), mem, ck.Layers()[0])
	if err != nil {
		fmt.Println(err)
		return
	}
	out, err := stages.NewStage(plan, mem).Process(context.Background(), l) // takes ownership of l
	if err != nil {
		fmt.Println(err)
		return
	}
	defer out.Release()
	fmt.Println(len(lp.Inputs), "tensors in,", out.Len(), "out, as planned:", out.Len() == len(lp.Outputs))

	// Bit for bit what ModelOpt's export_hf_checkpoint wrote.
	want, _ := arrowio.ReadAllTensors(filepath.Join("..", "testdata", "golden", "e2e", "fp8", "expected"))
	same := 0
	for _, t := range out.Tensors() {
		if w, ok := want[t.Name]; ok && w.DType == t.DType && bytes.Equal(w.Data, t.Data) {
			same++
		}
	}
	fmt.Println(same, "tensors identical to ModelOpt's")
	// Output:
	// family: llama format: fp8 modules: 14
	// model.layers.0.self_attn.q_proj.input_scale F32 []
	// model.layers.0.self_attn.q_proj.weight F8_E4M3 [256 256]
	// model.layers.0.self_attn.q_proj.weight_scale F32 []
	// 23 tensors in, 23 out, as planned: true
	// 23 tensors identical to ModelOpt's
}
