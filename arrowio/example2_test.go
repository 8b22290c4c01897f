package arrowio_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"path/filepath"
	"sort"

	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/quantstream/quantstream/arrowio"
)

// Dump a checkpoint's layers to an Arrow IPC stream (what `quantstream dump-arrow`
// writes for pyarrow or DuckDB) and read them back.
func ExampleNewDumpWriter() {
	ck, err := arrowio.OpenCheckpoint(filepath.Join("..", "testdata", "tiny_llama"))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer ck.Close()
	mem := memory.NewGoAllocator()

	var buf bytes.Buffer
	d := arrowio.NewDumpWriter(&buf, mem)
	for _, li := range ck.Layers() {
		l, err := ck.ReadLayer(context.Background(), mem, li)
		if err != nil {
			fmt.Println(err)
			return
		}
		err = d.Write(context.Background(), l) // the caller keeps ownership of l
		l.Release()
		if err != nil {
			fmt.Println(err)
			return
		}
	}
	if err := d.Close(); err != nil {
		fmt.Println(err)
		return
	}

	r, err := arrowio.NewDumpReader(&buf, mem)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer r.Release()
	for {
		l, err := r.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			fmt.Println(err)
			return
		}
		fmt.Printf("layer %2d %-16q %2d tensors, %6d bytes\n", l.Index(), l.Prefix(), l.Len(), l.DataBytes())
		l.Release()
	}
	// Output:
	// layer  0 "model.layers.0."  9 tensors, 369152 bytes
	// layer  1 "model.layers.1."  9 tensors, 369152 bytes
	// layer  2 "model.layers.2."  9 tensors, 369152 bytes
	// layer -1 ""                3 tensors, 262400 bytes
}

// Side files are every non-tensor file of the overlaid directories; a later
// directory's copy wins.
func ExampleCheckpoint_SideFiles() {
	ck, err := arrowio.OpenCheckpoint(filepath.Join("..", "testdata", "tiny_llama"))
	if err != nil {
		fmt.Println(err)
		return
	}
	defer ck.Close()
	side := ck.SideFiles()
	names := make([]string, 0, len(side))
	for name := range side {
		names = append(names, name)
	}
	sort.Strings(names)
	fmt.Println(names, len(ck.Tensors()), "tensors")
	// Output:
	// [config.json generation_config.json tokenizer.json] 30 tensors
}
