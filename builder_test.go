package quantstream

import (
	"bytes"
	"errors"
	"testing"

	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/quantstream/quantstream/quant"
)

// poisonAllocator hands out uninitialised memory as 0xAA bytes, so a byte the
// builder should have zeroed (or a row nobody wrote) shows.
type poisonAllocator struct{ *memory.CheckedAllocator }

func (p poisonAllocator) AllocateUninitialized(n int) []byte {
	b := p.Allocate(n)
	for i := range b {
		b[i] = 0xAA
	}
	return b
}

func TestLayerBuilderFillsInPlace(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	info := LayerInfo{Index: 4, Prefix: "model.layers.4.", Tensors: []TensorInfo{
		{Name: "a", DType: quant.BF16, Shape: []int64{2, 3}},
		{Name: "b", DType: quant.F32, Shape: []int64{}},
	}}
	b, err := NewLayerBuilder(poisonAllocator{mem}, info, BuildOptions{AppendRoom: 8})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Release()
	if b.Len() != 2 || len(b.Data(0)) != 12 || len(b.Data(1)) != 4 {
		t.Fatalf("rows %d of %d and %d bytes", b.Len(), len(b.Data(0)), len(b.Data(1)))
	}
	for i := range b.Len() {
		for j := range b.Data(i) {
			b.Data(i)[j] = byte(10*i + j)
		}
	}
	first := &b.Data(0)[0]
	l, err := b.Finish()
	if err != nil {
		t.Fatal(err)
	}
	defer l.Release()
	if l.Index() != 4 || l.Prefix() != "model.layers.4." || l.Len() != 2 || l.DataBytes() != 16 {
		t.Fatalf("index %d prefix %q len %d bytes %d", l.Index(), l.Prefix(), l.Len(), l.DataBytes())
	}
	if got := l.Tensor(0); &got.Data[0] != first {
		t.Error("Finish copied the data buffer")
	}
	if got, _ := l.Lookup("b"); !bytes.Equal(got.Data, []byte{10, 11, 12, 13}) || got.DType != quant.F32 {
		t.Errorf("b = %+v", got)
	}
	if _, err := b.Finish(); err == nil {
		t.Error("a second Finish succeeded")
	}
}

func TestLayerBuilderRejects(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	for _, tc := range []struct {
		name    string
		tensors []TensorInfo
		is      error
	}{
		{"duplicate", []TensorInfo{{Name: "a", DType: quant.U8, Shape: []int64{1}}, {Name: "a", DType: quant.U8, Shape: []int64{1}}}, ErrBadLayer},
		{"no dtype", []TensorInfo{{Name: "a", Shape: []int64{1}}}, quant.ErrUnknownDType},
		{"negative", []TensorInfo{{Name: "a", DType: quant.U8, Shape: []int64{-1}}}, nil},
		{"half a byte", []TensorInfo{{Name: "a", DType: quant.F4, Shape: []int64{3}}}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewLayerBuilder(mem, LayerInfo{Tensors: tc.tensors}, BuildOptions{})
			if err == nil || (tc.is != nil && !errors.Is(err, tc.is)) {
				t.Fatalf("err = %v, want one wrapping %v", err, tc.is)
			}
		})
	}
}

// TestExtendAppendsInPlace: a layer built with append room takes small tensors in
// place once; the original stays intact; without room, or once the room is taken,
// Extend declines and allocates nothing.
func TestExtendAppendsInPlace(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	w := Tensor{Name: "w", Tensor: quant.Tensor{DType: quant.U8, Shape: []int64{3}, Data: []byte{1, 2, 3}}}
	b, err := NewLayerBuilder(poisonAllocator{mem}, LayerInfo{Index: 0, Prefix: "p.", Tensors: []TensorInfo{{Name: "w", DType: quant.U8, Shape: []int64{3}}}}, BuildOptions{AppendRoom: 8})
	if err != nil {
		t.Fatal(err)
	}
	copy(b.Data(0), w.Data)
	l, err := b.Finish()
	b.Release()
	if err != nil {
		t.Fatal(err)
	}
	amax := []TensorInfo{{Name: "w_amax", DType: quant.F32, Shape: []int64{}}}

	e, ok, err := l.Extend(mem, amax)
	if err != nil || !ok {
		t.Fatalf("Extend: %v %v, want in place", ok, err)
	}
	if e.Len() != 2 || !bytes.Equal(e.Data(0), w.Data) || !bytes.Equal(e.Data(1), []byte{0, 0, 0, 0}) {
		t.Fatalf("extended rows: %v %v (the room must be zeroed)", e.Data(0), e.Data(1))
	}
	copy(e.Data(1), []byte{0, 0, 128, 63})
	if _, again, _ := l.Extend(mem, amax); again {
		t.Fatal("a second Extend of the same layer took the same room")
	}
	l2, err := e.Finish()
	e.Release()
	if err != nil {
		t.Fatal(err)
	}
	if got := l.Tensor(0); l.Len() != 1 || !bytes.Equal(got.Data, w.Data) {
		t.Errorf("the original layer changed: %d rows, %v", l.Len(), got.Data)
	}
	l.Release() // the extended layer keeps the buffer alive
	if got, _ := l2.Lookup("w_amax"); !bytes.Equal(got.Data, []byte{0, 0, 128, 63}) || l2.Prefix() != "p." {
		t.Errorf("w_amax = %v", got.Data)
	}
	// The new layer's room is what is left: 8 - 4 bytes.
	if _, ok, _ := l2.Extend(mem, []TensorInfo{{Name: "x", DType: quant.F64, Shape: []int64{}}}); ok {
		t.Error("8 bytes appended into 4 bytes of room")
	}
	e2, ok, err := l2.Extend(mem, []TensorInfo{{Name: "x", DType: quant.F32, Shape: []int64{}}})
	if err != nil || !ok {
		t.Fatalf("second-generation Extend: %v %v", ok, err)
	}
	e2.Release()
	l2.Release()

	plain, err := NewLayer(mem, 0, "", []Tensor{w})
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Release()
	if _, ok, err := plain.Extend(mem, amax); ok || err != nil {
		t.Errorf("a layer without room: %v %v, want not in place", ok, err)
	}
	if _, _, err := plain.Extend(mem, []TensorInfo{{Name: "w", DType: quant.U8, Shape: []int64{1}}}); !errors.Is(err, ErrBadLayer) {
		t.Errorf("a duplicate name: %v", err)
	}
}
