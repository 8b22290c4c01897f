package quantstream_test

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/quantstream/quantstream"
	"github.com/quantstream/quantstream/quant"
)

// Build a layer from its headers, writing each tensor straight into its row of
// the layer's one data buffer, with room for a later stage to append to it.
func ExampleLayerBuilder() {
	mem := memory.NewGoAllocator()
	info := quantstream.LayerInfo{Index: 0, Prefix: "model.layers.0.", Tensors: []quantstream.TensorInfo{
		{Name: "model.layers.0.mlp.up_proj.weight", DType: quant.F32, Shape: []int64{2, 2}},
	}}
	b, err := quantstream.NewLayerBuilder(mem, info, quantstream.BuildOptions{AppendRoom: 64})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer b.Release()
	for i, v := range []float32{1, -2, 3, -4} {
		binary.LittleEndian.PutUint32(b.Data(0)[4*i:], math.Float32bits(v))
	}
	l, err := b.Finish()
	if err != nil {
		fmt.Println(err)
		return
	}
	defer l.Release()

	// A later stage appends the weight's amax in the room: no copy of the weight.
	more := []quantstream.TensorInfo{{Name: "model.layers.0.mlp.up_proj.weight_quantizer._amax", DType: quant.F32, Shape: []int64{}}}
	e, inPlace, err := l.Extend(mem, more)
	if err != nil || !inPlace {
		fmt.Println(inPlace, err)
		return
	}
	defer e.Release()
	binary.LittleEndian.PutUint32(e.Data(1), math.Float32bits(4))
	l2, err := e.Finish()
	if err != nil {
		fmt.Println(err)
		return
	}
	defer l2.Release()
	for _, t := range l2.Tensors() {
		fmt.Println(t.Name, t.DType, t.Shape, len(t.Data), "bytes")
	}
	// Output:
	// model.layers.0.mlp.up_proj.weight F32 [2 2] 16 bytes
	// model.layers.0.mlp.up_proj.weight_quantizer._amax F32 [] 4 bytes
}
