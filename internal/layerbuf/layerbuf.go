// Package layerbuf builds layer records around one data buffer that is allocated
// once at its final size and filled in place, and runs the filling on all cores.
//
// Building a layer with quantstream.LayerBuilder copies every tensor into a
// large_binary builder that grows by doubling (and zeroes what it grows): for layers
// of hundreds of MB that is three passes over memory and twice the layer's size in
// slack. Stages know their output headers before computing anything (they are the
// plan), so they can allocate the data buffer exactly and have kernels write their
// results straight into it.
package layerbuf

import (
	"context"
	"fmt"
	"runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/quantstream/quantstream"
)

// uninitAllocator is the optional capability of an allocator to skip zeroing a
// buffer the caller will overwrite (convert.PoolAllocator has it).
type uninitAllocator interface {
	AllocateUninitialized(size int) []byte
}

// Alloc returns n bytes from mem that the caller must overwrite entirely before
// anyone reads them, wrapped in a buffer that frees them to mem on Release.
func Alloc(mem memory.Allocator, n int) *memory.Buffer {
	var b []byte
	if u, ok := mem.(uninitAllocator); ok {
		b = u.AllocateUninitialized(n)
	} else {
		b = mem.Allocate(n)
	}
	return memory.NewBufferWithAllocator(b, mem)
}

// Sizes returns each tensor's data length, with the offsets of a buffer holding
// them back to back (offs[i]:offs[i+1] is tensor i; offs[len] the total).
func Sizes(infos []quantstream.TensorInfo) ([]int64, error) {
	offs := make([]int64, len(infos)+1)
	for i, t := range infos {
		n, err := t.DataBytes()
		if err != nil {
			return nil, err
		}
		offs[i+1] = offs[i] + n
	}
	return offs, nil
}

// Build returns a layer with one row per info, in order, whose data buffer (from
// mem, not zeroed) fill writes: data[offs[i]:offs[i+1]] is row i's and fill must
// write every byte. The caller owns the layer; on error nothing stays allocated.
func Build(mem memory.Allocator, index int, prefix string, infos []quantstream.TensorInfo,
	fill func(data []byte, offs []int64) error) (*quantstream.Layer, error) {
	offs, err := Sizes(infos)
	if err != nil {
		return nil, err
	}
	total := offs[len(infos)]
	if int64(int(total)) != total {
		return nil, fmt.Errorf("layer %d: %d bytes do not fit in memory", index, total)
	}
	data := Alloc(mem, int(total))
	defer data.Release()
	if err := fill(data.Bytes(), offs); err != nil {
		return nil, err
	}
	return Assemble(mem, index, prefix, infos, offs, data)
}

// Assemble returns a layer with one row per info whose data are data's bytes
// offs[i]:offs[i+1] (data may be longer than offs[len(infos)]). It retains data;
// the caller keeps its reference.
func Assemble(mem memory.Allocator, index int, prefix string, infos []quantstream.TensorInfo, offs []int64, data *memory.Buffer) (*quantstream.Layer, error) {
	n := len(infos)
	if len(offs) != n+1 || offs[n] > int64(data.Len()) {
		return nil, fmt.Errorf("layer %d: %d offsets for %d tensors in %d bytes", index, len(offs), n, data.Len())
	}
	offsets := memory.NewResizableBuffer(mem)
	defer offsets.Release()
	offsets.Resize(len(offs) * arrow.Int64SizeBytes)
	copy(arrow.Int64Traits.CastFromBytes(offsets.Bytes()), offs)

	ad := array.NewData(arrow.BinaryTypes.LargeBinary, n, []*memory.Buffer{nil, offsets, data}, nil, 0, 0)
	dataCol := array.NewLargeBinaryData(ad)
	ad.Release()
	defer dataCol.Release()
	nb := array.NewStringBuilder(mem)
	defer nb.Release()
	db := array.NewStringBuilder(mem)
	defer db.Release()
	sb := array.NewListBuilder(mem, arrow.PrimitiveTypes.Int64)
	defer sb.Release()
	vb := sb.ValueBuilder().(*array.Int64Builder)
	for _, t := range infos {
		nb.Append(t.Name)
		db.Append(t.DType.String())
		sb.Append(true)
		vb.AppendValues(t.Shape, nil)
	}
	names, dtypes, shapes := nb.NewArray(), db.NewArray(), sb.NewArray()
	defer names.Release()
	defer dtypes.Release()
	defer shapes.Release()
	rec := array.NewRecordBatch(quantstream.LayerSchema(index, prefix), []arrow.Array{names, dtypes, shapes, dataCol}, int64(n))
	defer rec.Release()
	return quantstream.LayerFromRecord(rec)
}

// Room returns l's data buffer and its tensors' offsets in it (offs[i]:offs[i+1] is
// row i; the bytes after offs[len-1] belong to no tensor of l). ok is false when
// the layer's data column is sliced.
func Room(l *quantstream.Layer) (data *memory.Buffer, offs []int64, ok bool) {
	col, isBin := l.Record().Column(quantstream.ColData).(*array.LargeBinary)
	if !isBin || col.Data().Offset() != 0 || len(col.Data().Buffers()) < 3 {
		return nil, nil, false
	}
	offs = col.ValueOffsets()
	buf := col.Data().Buffers()[2]
	if len(offs) == 0 || buf == nil {
		return nil, nil, false
	}
	return buf, offs, true
}

// Task is one piece of work of Run; tasks write disjoint memory.
type Task func() error

// Run runs tasks on up to GOMAXPROCS goroutines and returns the error of the
// lowest-numbered failing task (so the error does not depend on scheduling), or
// ctx's cause if it is done before every task started. It returns after every
// goroutine it started has exited.
func Run(ctx context.Context, tasks []Task) error {
	workers := min(runtime.GOMAXPROCS(0), len(tasks))
	if workers <= 1 {
		for _, t := range tasks {
			if err := context.Cause(ctx); err != nil {
				return err
			}
			if err := run(t); err != nil {
				return err
			}
		}
		return nil
	}
	errs := make([]error, len(tasks))
	var next atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= len(tasks) || ctx.Err() != nil {
					return
				}
				errs[i] = run(tasks[i])
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return context.Cause(ctx)
}

// run runs t, turning a panic into an error: a task runs on a goroutine of its own,
// where the pipeline's recovery at the stage boundary cannot see it.
func run(t Task) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("layerbuf: panic in a task: %v\n%s", r, debug.Stack())
		}
	}()
	return t()
}

// ChunkBytes is about how much input one Task should process: large enough that
// scheduling costs nothing, small enough that the cores share a layer evenly.
// A variable so that tests can show the output does not depend on it.
var ChunkBytes = 4 << 20

// Copy returns tasks that copy src into dst (equal lengths) in ChunkBytes pieces.
func Copy(dst, src []byte) []Task {
	var out []Task
	for lo := 0; lo < len(src); lo += ChunkBytes {
		hi := min(lo+ChunkBytes, len(src))
		out = append(out, func() error { copy(dst[lo:hi], src[lo:hi]); return nil })
	}
	return out
}

// Rows splits rows [0, rows) into ranges of about ChunkBytes of input (rowBytes
// each) and returns one task per range running fn(r0, r1).
func Rows(rows int, rowBytes int64, fn func(r0, r1 int) error) []Task {
	per := max(1, int(int64(ChunkBytes)/max(rowBytes, 1)))
	var out []Task
	for r0 := 0; r0 < rows; r0 += per {
		r1 := min(r0+per, rows)
		out = append(out, func() error { return fn(r0, r1) })
	}
	return out
}
