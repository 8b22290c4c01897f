package arrowio

import (
	"os"
	"path/filepath"
	"testing"
)

func TestOpenGoldenUnit(t *testing.T) {
	path := filepath.Join("..", "testdata", "golden", "unit.safetensors")
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("golden data missing: %v", err)
	}
	f, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if len(f.Header.Tensors) == 0 {
		t.Fatal("no tensors")
	}
	tt, err := f.ReadTensor(f.Header.Tensors[0].Name)
	if err != nil {
		t.Fatal(err)
	}
	if err := tt.Check(); err != nil {
		t.Fatal(err)
	}
}
