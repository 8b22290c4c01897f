package arrowio_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/quantstream/quantstream"
	"github.com/quantstream/quantstream/arrowio"
	"github.com/quantstream/quantstream/quant"
)

func ExampleOpenCheckpoint() {
	// A base checkpoint with a calibration directory overlaid on it.
	c, err := arrowio.OpenCheckpoint(
		filepath.Join("..", "testdata", "golden", "e2e", "base_llama"),
		filepath.Join("..", "testdata", "golden", "e2e", "fp8", "input"),
	)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer c.Close()
	for _, li := range c.Layers() {
		fmt.Printf("layer %d %q: %d tensors\n", li.Index, li.Prefix, len(li.Tensors))
	}
	l, err := c.ReadLayer(context.Background(), memory.NewGoAllocator(), c.Layers()[0])
	if err != nil {
		fmt.Println(err)
		return
	}
	defer l.Release()
	t, _ := l.Lookup("model.layers.0.mlp.down_proj.weight")
	fmt.Println(t.DType, t.Shape, len(t.Data))
	// Output:
	// layer 0 "model.layers.0.": 23 tensors
	// layer 1 "model.layers.1.": 23 tensors
	// layer -1 "": 3 tensors
	// BF16 [256 512] 262144
}

func ExampleCreate() {
	dir, _ := os.MkdirTemp("", "example-")
	defer os.RemoveAll(dir)
	out := filepath.Join(dir, "out")
	tensors := []quantstream.TensorInfo{
		{Name: "model.layers.0.mlp.down_proj.weight", DType: quant.F8E4M3, Shape: []int64{2, 4}},
		{Name: "model.layers.0.mlp.down_proj.weight_scale", DType: quant.F32, Shape: []int64{}},
		{Name: "lm_head.weight", DType: quant.BF16, Shape: []int64{4, 4}},
	}
	w, err := arrowio.Create(out, tensors, arrowio.WriteOptions{PlanOptions: arrowio.PlanOptions{MaxShardSize: 16}})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer w.Abort() // a no-op after Commit
	for _, s := range w.Plan().Shards {
		fmt.Println(s.Name, s.Size())
	}
	// Data may arrive in any order, from any goroutine.
	w.WriteTensor("lm_head.weight", make([]byte, 32))
	w.WriteTensor("model.layers.0.mlp.down_proj.weight_scale", []byte{0, 0, 0x80, 0x3f})
	w.WriteTensor("model.layers.0.mlp.down_proj.weight", make([]byte, 8))
	w.WriteSideFile("config.json", []byte("{}\n"))
	if err := w.Commit(); err != nil {
		fmt.Println(err)
		return
	}
	entries, _ := os.ReadDir(out)
	for _, e := range entries {
		fmt.Println(e.Name())
	}
	// Output:
	// model-00001-of-00002.safetensors 144
	// model-00002-of-00002.safetensors 244
	// config.json
	// model-00001-of-00002.safetensors
	// model-00002-of-00002.safetensors
	// model.safetensors.index.json
}

func ExampleParseSize() {
	for _, s := range []string{"5GB", "256MiB", "1000"} {
		n, _ := arrowio.ParseSize(s)
		fmt.Println(s, n)
	}
	// Output:
	// 5GB 5000000000
	// 256MiB 268435456
	// 1000 1000
}
