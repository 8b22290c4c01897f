package convert

import (
	"context"
	"os"
	"path/filepath"

	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/quantstream/quantstream/arrowio"
	"github.com/quantstream/quantstream/pipeline"
)

// DumpArrow writes the layer stream of the overlaid inputs to an Arrow IPC stream
// file at path, atomically (a temporary file renamed into place). It returns the
// number of layers written.
func DumpArrow(ctx context.Context, inputs []string, path string) (int, error) {
	if len(inputs) == 0 {
		return 0, ErrNoInput
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
	src := newCheckpointSource(ck, mem)
	p := &pipeline.Pipeline{Source: src, Sink: dumpSink{d}, Workers: 1}
	if err := p.Run(ctx); err != nil {
		return 0, err
	}
	if err := d.Close(); err != nil {
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
	return len(src.layers), nil
}
