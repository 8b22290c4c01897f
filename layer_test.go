package quantstream

import (
	"errors"
	"testing"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/quantstream/quantstream/quant"
)

func TestLayerRoundTrip(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	in := []Tensor{
		{Name: "model.layers.3.mlp.up_proj.weight", Tensor: quant.Tensor{DType: quant.BF16, Shape: []int64{2, 3}, Data: make([]byte, 12)}},
		{Name: "model.layers.3.mlp.up_proj.weight_scale", Tensor: quant.Tensor{DType: quant.F32, Shape: []int64{}, Data: []byte{0, 0, 128, 63}}},
	}
	l, err := NewLayer(mem, 3, "model.layers.3.", in)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Release()
	if l.Index() != 3 || l.Prefix() != "model.layers.3." || l.Len() != 2 {
		t.Fatalf("index %d prefix %q len %d", l.Index(), l.Prefix(), l.Len())
	}
	if got := l.DataBytes(); got != 16 {
		t.Errorf("DataBytes = %d, want 16", got)
	}
	s, ok := l.Lookup("model.layers.3.mlp.up_proj.weight_scale")
	if !ok || s.DType != quant.F32 || len(s.Shape) != 0 || string(s.Data) != string(in[1].Data) {
		t.Errorf("scalar tensor came back as %+v", s)
	}
	w := l.Tensor(0)
	if w.Name != in[0].Name || len(w.Shape) != 2 || w.Shape[1] != 3 {
		t.Errorf("weight came back as %+v", w)
	}
}

func TestNewLayerRejects(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	dup := quant.Tensor{DType: quant.U8, Shape: []int64{1}, Data: []byte{1}}
	if _, err := NewLayer(mem, 0, "", []Tensor{{Name: "a", Tensor: dup}, {Name: "a", Tensor: dup}}); !errors.Is(err, ErrBadLayer) {
		t.Errorf("duplicate names: %v", err)
	}
	short := quant.Tensor{DType: quant.F32, Shape: []int64{2}, Data: []byte{1, 2, 3}}
	if _, err := NewLayer(mem, 0, "", []Tensor{{Name: "s", Tensor: short}}); err == nil {
		t.Error("short data accepted")
	}
}

func TestLayerFromRecordNeedsMetadata(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	schema := LayerSchema(0, "")
	bare := arrow.NewSchema(schema.Fields(), nil)
	b := array.NewRecordBuilder(mem, bare)
	defer b.Release()
	rec := b.NewRecordBatch()
	defer rec.Release()
	if _, err := LayerFromRecord(rec); !errors.Is(err, ErrBadLayer) {
		t.Errorf("record without metadata: %v", err)
	}
}
