package arrowio

import (
	"bytes"
	"errors"
	"io"
	"path/filepath"
	"slices"
	"testing"

	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/quantstream/quantstream"
)

// writeLayered writes a checkpoint with every dtype spread over two decoder layers
// and the non-decoder group.
func writeLayered(t *testing.T) (string, map[string][]byte) {
	t.Helper()
	infos, data := randomTensors(11)
	prefixes := []string{"model.layers.0.", "model.layers.1.", ""}
	renamed := map[string][]byte{}
	for i := range infos {
		n := prefixes[i%3] + infos[i].Name
		renamed[n] = data[infos[i].Name]
		infos[i].Name = n
	}
	dir := filepath.Join(t.TempDir(), "ck")
	w, err := Create(dir, infos, WriteOptions{PlanOptions: PlanOptions{MaxShardSize: 64}})
	if err != nil {
		t.Fatal(err)
	}
	for n, b := range renamed {
		if err := w.WriteTensor(n, b); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
	return dir, renamed
}

// TestEveryDTypeRoundTrip: every dtype goes writer → checkpoint → layer record
// unchanged.
func TestEveryDTypeRoundTrip(t *testing.T) {
	dir, data := writeLayered(t)
	c, err := OpenCheckpoint(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	seen := 0
	for _, li := range c.Layers() {
		l, err := c.ReadLayer(t.Context(), mem, li)
		if err != nil {
			t.Fatal(err)
		}
		for _, tn := range l.Tensors() {
			if !bytes.Equal(tn.Data, data[tn.Name]) {
				t.Errorf("%s: data differs", tn.Name)
			}
			if err := tn.Check(); err != nil {
				t.Errorf("%s: %v", tn.Name, err)
			}
			seen++
		}
		l.Release()
	}
	if seen != len(allDTypes) {
		t.Fatalf("read %d tensors, want %d", seen, len(allDTypes))
	}
}

func TestDumpRoundTrip(t *testing.T) {
	dir, _ := writeLayered(t)
	c, err := OpenCheckpoint(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)

	var buf bytes.Buffer
	dw := NewDumpWriter(&buf, mem)
	var want []*quantstream.Layer
	for _, li := range c.Layers() {
		l, err := c.ReadLayer(t.Context(), mem, li)
		if err != nil {
			t.Fatal(err)
		}
		if err := dw.Write(t.Context(), l); err != nil {
			t.Fatal(err)
		}
		want = append(want, l)
	}
	if err := dw.Close(); err != nil {
		t.Fatal(err)
	}

	dr, err := NewDumpReader(bytes.NewReader(buf.Bytes()), mem)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; ; i++ {
		l, err := dr.Next()
		if err == io.EOF {
			if i != len(want) {
				t.Fatalf("read %d layers, wrote %d", i, len(want))
			}
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		w := want[i]
		if l.Index() != w.Index() || l.Prefix() != w.Prefix() || l.Len() != w.Len() {
			t.Fatalf("layer %d: index %d prefix %q len %d", i, l.Index(), l.Prefix(), l.Len())
		}
		for k := range l.Len() {
			a, b := l.Tensor(k), w.Tensor(k)
			if a.Name != b.Name || a.DType != b.DType || !slices.Equal(a.Shape, b.Shape) || !bytes.Equal(a.Data, b.Data) {
				t.Fatalf("layer %d row %d differs", i, k)
			}
		}
		l.Release()
	}
	dr.Release()
	for _, l := range want {
		l.Release()
	}

	if _, err := NewDumpReader(bytes.NewReader([]byte("not arrow")), mem); !errors.Is(err, ErrBadDump) {
		t.Fatalf("err = %v, want ErrBadDump", err)
	}
}
