package convert_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"

	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/quantstream/quantstream"
	"github.com/quantstream/quantstream/arrowio"
	"github.com/quantstream/quantstream/convert"
	"github.com/quantstream/quantstream/modelopt"
	"github.com/quantstream/quantstream/quant"
	"github.com/quantstream/quantstream/stages"
)

// Convert a checkpoint with a weight-only recipe, data-free: the recipe's calibration
// depends on the weights alone, so it runs layer by layer during the stream.
func ExampleRun() {
	dir, err := os.MkdirTemp("", "example-run-")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer os.RemoveAll(dir)
	out := filepath.Join(dir, "tiny_llama_nvfp4")

	sum, err := convert.Run(context.Background(), convert.Options{
		Inputs: []string{"../testdata/tiny_llama"},
		Out:    out,
		Recipe: "W4A16_NVFP4_CFG",
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(sum.Mode)
	fmt.Println(sum.QuantAlgo, sum.ModulesPerFmt, "unquantized:", sum.Unquantized)
	fmt.Println(sum.Layers, "layers,", sum.Tensors, "tensors,", sum.Shards, "shard,", sum.BytesIn, "bytes in,", sum.BytesOut, "out")

	entries, _ := os.ReadDir(out)
	for _, e := range entries {
		fmt.Println(e.Name())
	}
	w, _ := arrowio.ReadAllTensors(out)
	q := w["model.layers.0.self_attn.q_proj.weight"]
	s := w["model.layers.0.self_attn.q_proj.weight_scale"]
	fmt.Println("q_proj:", q.DType, q.Shape, "scales", s.DType, s.Shape)

	// A recipe with static activation scales needs calibration data; nothing is written.
	_, err = convert.Run(context.Background(), convert.Options{
		Inputs: []string{"../testdata/tiny_llama"},
		Out:    filepath.Join(dir, "fp8"),
		Recipe: "FP8_DEFAULT_CFG",
	})
	_, statErr := os.Stat(filepath.Join(dir, "fp8"))
	fmt.Println(errors.Is(err, modelopt.ErrNeedsCalibration), os.IsNotExist(statErr))
	// Output:
	// data-free W4A16_NVFP4_CFG
	// W4A16_NVFP4 map[w4a16_nvfp4:21] unquantized: [lm_head model.embed_tokens]
	// 4 layers, 72 tensors, 1 shard, 1369856 bytes in, 575060 out
	// config.json
	// generation_config.json
	// hf_quant_config.json
	// model.safetensors
	// quantstream_provenance.json
	// tokenizer.json
	// q_proj: U8 [128 64] scales F8_E4M3 [128 8]
	// true true
}

// Plan a conversion from headers and configs alone: every layer's output, the
// shards, the smallest memory budget it can run in, and every problem at once.
func ExampleMakePlan() {
	p, err := convert.MakePlan(context.Background(), convert.Options{
		Inputs:    []string{"../testdata/tiny_llama"},
		Recipe:    "INT8_WEIGHT_ONLY_CFG",
		MaxMemory: 256 << 10,
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(p.Mode, p.Summary.QuantAlgo)
	for _, lp := range p.Layers {
		last := lp.Steps[len(lp.Steps)-1]
		fmt.Printf("layer %2d %-16q %2d tensors in, %2d out, %7d bytes in, %6d out\n",
			lp.Index, lp.Prefix, len(lp.Steps[0]), len(last), lp.Bytes[0], lp.Bytes[len(lp.Bytes)-1])
	}
	for _, s := range p.Shards.Shards {
		fmt.Println(s.Name, len(s.Tensors), "tensors")
	}
	fmt.Println("needs MaxMemory >=", p.MinMemory)
	for _, problem := range p.Problems {
		fmt.Println("problem:", problem)
	}
	// Output:
	// data-free INT8_WEIGHT_ONLY_CFG W8A16
	// layer  0 "model.layers.0."  1 tensors in,  1 out,     256 bytes in,    256 out
	// layer  0 "model.layers.0."  1 tensors in,  2 out,   90112 bytes in,  45568 out
	// layer  0 "model.layers.0."  1 tensors in,  2 out,   90112 bytes in,  46464 out
	// layer  0 "model.layers.0."  1 tensors in,  2 out,   90112 bytes in,  46464 out
	// layer  0 "model.layers.0."  3 tensors in,  5 out,   49408 bytes in,  25600 out
	// layer  0 "model.layers.0."  2 tensors in,  4 out,   49152 bytes in,  25344 out
	// layer  1 "model.layers.1."  1 tensors in,  1 out,     256 bytes in,    256 out
	// layer  1 "model.layers.1."  1 tensors in,  2 out,   90112 bytes in,  45568 out
	// layer  1 "model.layers.1."  1 tensors in,  2 out,   90112 bytes in,  46464 out
	// layer  1 "model.layers.1."  1 tensors in,  2 out,   90112 bytes in,  46464 out
	// layer  1 "model.layers.1."  3 tensors in,  5 out,   49408 bytes in,  25600 out
	// layer  1 "model.layers.1."  2 tensors in,  4 out,   49152 bytes in,  25344 out
	// layer  2 "model.layers.2."  1 tensors in,  1 out,     256 bytes in,    256 out
	// layer  2 "model.layers.2."  1 tensors in,  2 out,   90112 bytes in,  45568 out
	// layer  2 "model.layers.2."  1 tensors in,  2 out,   90112 bytes in,  46464 out
	// layer  2 "model.layers.2."  1 tensors in,  2 out,   90112 bytes in,  46464 out
	// layer  2 "model.layers.2."  3 tensors in,  5 out,   49408 bytes in,  25600 out
	// layer  2 "model.layers.2."  2 tensors in,  4 out,   49152 bytes in,  25344 out
	// layer -1 ""                3 tensors in,  3 out,  262400 bytes in, 262400 out
	// model.safetensors 51 tensors
	// needs MaxMemory >= 137302
}

// Prepare a conversion, put a stage of your own into it just before the export,
// plan it and run it. The stage sees each layer with its calibrated amax buffers,
// before quantization; the job keeps every guard of convert.Run.
func ExamplePrepare() {
	dir, err := os.MkdirTemp("", "example-prepare-")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer os.RemoveAll(dir)

	j, err := convert.Prepare(context.Background(), convert.Options{
		Inputs: []string{"../testdata/tiny_llama"},
		Out:    filepath.Join(dir, "out"),
		Recipe: "INT8_WEIGHT_ONLY_CFG",
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer j.Close()
	amaxes := &amaxCounter{}
	if err := j.InsertBefore("export", amaxes); err != nil {
		fmt.Println(err)
		return
	}
	var names []string
	for _, s := range j.Stages() {
		names = append(names, s.Name())
	}
	fmt.Println(strings.Join(names, " → "))
	p, err := j.Plan()
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(p.Mode, len(p.Layers), "layers,", len(p.Problems), "problems")
	sum, err := j.Run(context.Background())
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(sum.Tensors, "tensors written;", amaxes.n.Load(), "weight amax buffers seen before the export")
	// Output:
	// calibrate → amax-counter → export
	// data-free INT8_WEIGHT_ONLY_CFG 4 layers, 0 problems
	// 51 tensors written; 21 weight amax buffers seen before the export
}

// amaxCounter counts the weight amax buffers of the layers it passes through.
type amaxCounter struct{ n atomic.Int32 }

func (*amaxCounter) Name() string { return "amax-counter" }

func (*amaxCounter) Plan(in quantstream.LayerInfo) ([]quantstream.TensorInfo, error) {
	return in.Tensors, nil
}

func (c *amaxCounter) Process(_ context.Context, l *quantstream.Layer) (*quantstream.Layer, error) {
	for _, t := range l.Info().Tensors {
		if strings.HasSuffix(t.Name, ".weight_quantizer._amax") {
			c.n.Add(1)
		}
	}
	return l, nil
}

// Build the data-free calibration stage by hand, for a pipeline of your own (to
// add stages to a conversion, Prepare one and insert them into the Job).
func ExampleNewCalibrateStage() {
	ck, err := arrowio.OpenCheckpoint("../testdata/tiny_llama")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer ck.Close()
	cfg, _ := os.ReadFile(ck.SideFiles()["config.json"])
	var inputs []quantstream.TensorInfo
	shapes := map[string][]int64{}
	for _, t := range ck.Tensors() {
		inputs = append(inputs, t.Info())
		shapes[t.Name] = t.Shape
	}
	r, _ := modelopt.ResolveRecipe("INT8_WEIGHT_ONLY_CFG", "")
	q, err := modelopt.DataFree(r, cfg, shapes)
	if err != nil {
		fmt.Println(err)
		return
	}
	mem := memory.NewGoAllocator()
	calibrate, added, err := convert.NewCalibrateStage(q, inputs, mem)
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println(len(added), "amax buffers, e.g.", added[0].Name, added[0].DType, added[0].Shape)

	// The export is planned from the inputs plus what the calibration adds.
	plan, err := stages.NewPlan(append(inputs, added...), cfg, q.Table, stages.Options{})
	if err != nil {
		fmt.Println(err)
		return
	}
	export := stages.NewStage(plan, mem)

	l, err := ck.ReadLayer(context.Background(), mem, ck.Layers()[0])
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, st := range []quantstream.Stage{calibrate, export} {
		if l, err = st.Process(context.Background(), l); err != nil { // each takes ownership
			fmt.Println(err)
			return
		}
	}
	defer l.Release()
	w, _ := l.Lookup("model.layers.0.mlp.down_proj.weight")
	s, _ := l.Lookup("model.layers.0.mlp.down_proj.weight_scale")
	amax, _ := quant.TensorAmax(s.Tensor)
	fmt.Println(l.Len(), "tensors out;", "down_proj", w.DType, w.Shape, "scale", s.DType, s.Shape, fmt.Sprintf("max %.6g", amax))
	// Output:
	// 21 amax buffers, e.g. model.layers.0.mlp.down_proj.weight_quantizer._amax BF16 [128 1]
	// 16 tensors out; down_proj I8 [128 352] scale F32 [128] max 0.000245102
}
