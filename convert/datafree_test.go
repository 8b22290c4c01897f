package convert

import (
	"bytes"
	"os"
	"testing"

	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/quantstream/quantstream"
	"github.com/quantstream/quantstream/arrowio"
	"github.com/quantstream/quantstream/modelopt"
)

// TestCalibrateAppendsInPlace: on a layer read by arrowio (which leaves append
// room) the calibration stage adds the amax buffers without copying the layer's
// tensors; on a layer without room it copies them; both give the same layer.
func TestCalibrateAppendsInPlace(t *testing.T) {
	ck, err := arrowio.OpenCheckpoint("../testdata/tiny_llama")
	if err != nil {
		t.Fatal(err)
	}
	defer ck.Close()
	cfg, err := os.ReadFile(ck.SideFiles()["config.json"])
	if err != nil {
		t.Fatal(err)
	}
	var inputs []quantstream.TensorInfo
	shapes := map[string][]int64{}
	for _, r := range ck.Tensors() {
		inputs = append(inputs, r.Info())
		shapes[r.Name] = r.Shape
	}
	r, err := modelopt.ResolveRecipe("INT8_WEIGHT_ONLY_CFG", "")
	if err != nil {
		t.Fatal(err)
	}
	q, err := modelopt.DataFree(r, cfg, shapes)
	if err != nil {
		t.Fatal(err)
	}
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	cs, _, err := NewCalibrateStage(q, inputs, mem)
	if err != nil {
		t.Fatal(err)
	}
	li := ck.Layers()[0]

	read, err := ck.ReadLayer(t.Context(), mem, li)
	if err != nil {
		t.Fatal(err)
	}
	first := &read.Tensor(0).Data[0]
	inPlace, err := cs.Process(t.Context(), read)
	if err != nil {
		t.Fatal(err)
	}
	defer inPlace.Release()
	if inPlace.Len() <= len(li.Tensors) {
		t.Fatalf("%d tensors out of %d: no amax added", inPlace.Len(), len(li.Tensors))
	}
	if &inPlace.Tensor(0).Data[0] != first {
		t.Error("the calibration copied a layer that had append room")
	}

	read, err = ck.ReadLayer(t.Context(), mem, li)
	if err != nil {
		t.Fatal(err)
	}
	plain, err := quantstream.NewLayer(mem, read.Index(), read.Prefix(), read.Tensors()) // no room
	read.Release()
	if err != nil {
		t.Fatal(err)
	}
	copied, err := cs.Process(t.Context(), plain)
	if err != nil {
		t.Fatal(err)
	}
	defer copied.Release()
	if copied.Len() != inPlace.Len() {
		t.Fatalf("%d tensors copied, %d in place", copied.Len(), inPlace.Len())
	}
	for i := range copied.Len() {
		a, b := copied.Tensor(i), inPlace.Tensor(i)
		if a.Name != b.Name || a.DType != b.DType || !bytes.Equal(a.Data, b.Data) {
			t.Errorf("row %d: %s copied, %s in place", i, a.Name, b.Name)
		}
	}
}
