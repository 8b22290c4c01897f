package layerbuf

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/quantstream/quantstream"
	"github.com/quantstream/quantstream/quant"
)

func TestRunLowestErrorAndPanics(t *testing.T) {
	errA, errB := errors.New("a"), errors.New("b")
	tasks := make([]Task, 50)
	for i := range tasks {
		tasks[i] = func() error { return nil }
	}
	tasks[30] = func() error { return errB }
	tasks[7] = func() error { return errA }
	if err := Run(t.Context(), tasks); err != errA {
		t.Fatalf("got %v, want the lowest task's error", err)
	}
	tasks[3] = func() error { panic("boom") }
	if err := Run(t.Context(), tasks); err == nil || !strings.Contains(err.Error(), "boom") {
		t.Fatalf("panic gave %v", err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := Run(ctx, tasks[:2]); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled run gave %v", err)
	}
}

func TestRowsAndCopyCoverEverything(t *testing.T) {
	defer func(n int) { ChunkBytes = n }(ChunkBytes)
	ChunkBytes = 10
	seen := make([]int, 37)
	if err := Run(t.Context(), Rows(len(seen), 3, func(r0, r1 int) error {
		for r := r0; r < r1; r++ {
			seen[r]++
		}
		return nil
	})); err != nil {
		t.Fatal(err)
	}
	for r, n := range seen {
		if n != 1 {
			t.Fatalf("row %d done %d times", r, n)
		}
	}
	src := bytes.Repeat([]byte("0123456789abcdef"), 7)
	dst := make([]byte, len(src))
	if err := Run(t.Context(), Copy(dst, src)); err != nil || !bytes.Equal(dst, src) {
		t.Fatalf("copy: %v", err)
	}
}

func TestBuildAssembleRoom(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	infos := []quantstream.TensorInfo{
		{Name: "a", DType: quant.BF16, Shape: []int64{2, 3}},
		{Name: "b", DType: quant.F32, Shape: []int64{}},
	}
	l, err := Build(mem, 4, "model.layers.4.", infos, func(data []byte, offs []int64) error {
		if len(data) != 16 || offs[1] != 12 || offs[2] != 16 {
			t.Fatalf("data %d offs %v", len(data), offs)
		}
		for i := range data {
			data[i] = byte(i)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	defer l.Release()
	b, ok := l.Lookup("b")
	if !ok || !bytes.Equal(b.Data, []byte{12, 13, 14, 15}) || l.Index() != 4 {
		t.Fatalf("b = %+v", b)
	}
	data, offs, ok := Room(l)
	if !ok || len(offs) != 3 || offs[2] != 16 || data.Len() != 16 {
		t.Fatalf("room %v %v", ok, offs)
	}
	// A second layer over the first's data: the first two bytes of a as one tensor.
	l2, err := Assemble(mem, 4, "model.layers.4.", infos[1:], []int64{0, 4}, data)
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Release()
	if x, _ := l2.Lookup("b"); !bytes.Equal(x.Data, []byte{0, 1, 2, 3}) {
		t.Fatalf("assembled %v", x.Data)
	}
	if _, err := Build(mem, 0, "", infos, func([]byte, []int64) error { return errors.New("fill") }); err == nil {
		t.Fatal("fill error lost")
	}
}
