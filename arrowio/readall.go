package arrowio

import (
	"fmt"
	"path/filepath"

	"github.com/quantstream/quantstream/quant"
)

// ReadAllTensors loads every tensor of every *.safetensors file in dir into memory.
// It is meant for comparing small checkpoints in tests and the parity runner.
func ReadAllTensors(dir string) (map[string]quant.Tensor, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.safetensors"))
	if err != nil {
		return nil, err
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("arrowio: no safetensors files in %s", dir)
	}
	out := map[string]quant.Tensor{}
	for _, p := range files {
		f, err := Open(p)
		if err != nil {
			return nil, err
		}
		for _, h := range f.Header.Tensors {
			if _, dup := out[h.Name]; dup {
				f.Close()
				return nil, fmt.Errorf("arrowio: tensor %q appears in two files of %s", h.Name, dir)
			}
			t, err := f.ReadTensor(h.Name)
			if err != nil {
				f.Close()
				return nil, err
			}
			out[h.Name] = t
		}
		f.Close()
	}
	return out, nil
}
