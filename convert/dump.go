package convert

import (
	"context"
	"fmt"
	"os"
	"path/filepath"

	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/quantstream/quantstream/arrowio"
	"github.com/quantstream/quantstream/pipeline"
)

// DumpArrow writes the layer stream of the overlaid inputs to an Arrow IPC stream
// file at path, atomically (a temporary file renamed into place). An existing file
// is replaced only with overwrite. It returns the number of layers written.
func DumpArrow(ctx context.Context, inputs []string, path string, overwrite bool) (int, error) {
	if len(inputs) == 0 {
		return 0, ErrNoInput
	}
	if _, err := os.Lstat(path); err == nil && !overwrite {
		return 0, fmt.Errorf("%w: %s", arrowio.ErrExists, path)
	}
	ck, err := arrowio.OpenCheckpoint(inputs...)
	if err != nil {
		return 0, err
	}
	defer ck.Close()
	mem := memory.NewGoAllocator()
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return 0, err
	}
	ok := false
	defer func() {
		if !ok {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	d := arrowio.NewDumpWriter(tmp, mem)
	src := ck.Source(mem, nil)
	p := &pipeline.Pipeline{Source: src, Sink: d, Workers: 1}
	if err := p.Run(ctx); err != nil {
		return 0, err
	}
	if err := d.Close(); err != nil {
		return 0, err
	}
	// CreateTemp makes the file private (0600); a dump is an ordinary output file.
	if err := tmp.Chmod(0o644); err != nil {
		return 0, err
	}
	if err := tmp.Sync(); err != nil {
		return 0, err
	}
	if err := tmp.Close(); err != nil {
		return 0, err
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return 0, err
	}
	ok = true
	return len(src.Layers()), nil
}
