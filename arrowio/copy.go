package arrowio

import (
	"context"
	"fmt"
	"io"
	"os"
	"slices"
	"sync"
)

// Stored reports whether the named tensor's bytes are a range of one of c's files
// as they are (not a derived view's, Checkpoint.Derive): what CopyTensor copies.
func (c *Checkpoint) Stored(name string) bool {
	t, ok := c.tensors[name]
	return ok && t.derived == nil && t.File != nil
}

// CopyTensor writes the stored tensor name of c to its planned place in w, as it is
// in the input file, without holding it in memory: in the kernel where it can
// (copy_file_range: no copy through user space, a reflink on file systems that
// share extents), else through a buffer of copyChunk bytes. It is for the tensors
// no stage changes, which a conversion hands on from the input file to the output
// shard at any size under any memory budget. The planned dtype and shape must be
// the tensor's. Like WriteTensor it is safe for concurrent use.
func (c *Checkpoint) CopyTensor(ctx context.Context, w *Writer, name string) error {
	t, ok := c.tensors[name]
	if !ok || t.derived != nil || t.File == nil {
		return fmt.Errorf("%w: tensor %q is not stored in a file of the checkpoint", ErrNotFound, name)
	}
	if _, p, ok := w.plan.Lookup(name); ok && (p.DType != t.DType || !slices.Equal(p.Shape, t.Shape)) {
		return fmt.Errorf("%w: tensor %q is %v %v, planned %v %v", ErrWrite, name, t.DType, t.Shape, p.DType, p.Shape)
	}
	f, h, err := w.claim(name, t.Size())
	if err != nil {
		return err
	}
	dst := int64(len(w.plan.Shards[w.shardOf(name)].Header)) + h.Begin
	src := t.File.Header.DataOff + t.Begin
	if err = copyRange(ctx, f, dst, t.File.r, src, t.Size()); err != nil {
		err = fmt.Errorf("arrowio: tensor %q from %s to %s: %w", name, t.File.Path, f.Name(), err)
	}
	return w.finish(name, err)
}

// copyChunk is how many bytes copyRange moves per call: large enough that a
// multi-GB tensor takes few syscalls, small enough that a cancellation is seen
// quickly and, through user space, that the buffer is a rounding error of any budget.
const copyChunk = 8 << 20

var chunkBufs = sync.Pool{New: func() any { b := make([]byte, copyChunk); return &b }}

// copyRange copies n bytes at src's offset from to dst's offset at, in chunks,
// watching ctx between them and starting each chunk's writeback (startWriteback)
// as soon as it is copied.
func copyRange(ctx context.Context, dst *os.File, at int64, src io.ReaderAt, from, n int64) error {
	if sf, ok := src.(*os.File); ok {
		done, err := copyFileRange(ctx, dst, at, sf, from, n)
		if err != nil {
			return err
		}
		at, from, n = at+done, from+done, n-done
	}
	if n == 0 {
		return nil
	}
	buf := chunkBufs.Get().(*[]byte)
	defer chunkBufs.Put(buf)
	for n > 0 {
		if err := ctx.Err(); err != nil {
			return err
		}
		b := (*buf)[:min(n, int64(len(*buf)))]
		if k, err := src.ReadAt(b, from); k < len(b) {
			// ReadAt may report io.EOF with a full read at the end of the file.
			if err == nil || err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return err
		}
		if _, err := dst.WriteAt(b, at); err != nil {
			return err
		}
		startWriteback(dst, at, int64(len(b)))
		k := int64(len(b))
		at, from, n = at+k, from+k, n-k
	}
	return nil
}
