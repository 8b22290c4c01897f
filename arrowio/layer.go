package arrowio

import (
	"cmp"
	"context"
	"fmt"
	"io"
	"slices"

	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/quantstream/quantstream"
	"github.com/quantstream/quantstream/quant"
)

// ReadLayer reads the tensors li names into a new Layer with li's index and prefix,
// one row per tensor in li's order. li is one of c.Layers() or any other group of
// c's tensors (a layer cut into runs of tensors, say); each must be in c with the
// dtype and shape li gives. The tensor bytes are read with pread straight into one
// data buffer allocated from mem (a quantstream.LayerBuilder), which becomes the
// large_binary column as it is: no copy after the read. The buffer has
// quantstream.DefaultAppendRoom bytes of append room after the last tensor, so that
// a stage can add small tensors to the layer in place (Layer.Extend). The caller
// owns the returned Layer and must Release it; on error nothing stays allocated.
//
// ReadLayer is safe to call concurrently (on the same or different layers).
func (c *Checkpoint) ReadLayer(ctx context.Context, mem memory.Allocator, li quantstream.LayerInfo) (*quantstream.Layer, error) {
	return c.readLayer(ctx, mem, li, quantstream.DefaultAppendRoom)
}

func (c *Checkpoint) readLayer(ctx context.Context, mem memory.Allocator, li quantstream.LayerInfo, room int64) (*quantstream.Layer, error) {
	refs := make([]TensorRef, len(li.Tensors))
	for i, t := range li.Tensors {
		ref, ok := c.tensors[t.Name]
		if !ok {
			return nil, fmt.Errorf("%w: %s: tensor %q is not in the checkpoint", ErrNotFound, quantstream.LayerName(li.Index), t.Name)
		}
		if ref.DType != t.DType || !slices.Equal(ref.Shape, t.Shape) {
			return nil, fmt.Errorf("arrowio: %s: tensor %q is %v %v in %s, not %v %v", quantstream.LayerName(li.Index), t.Name, ref.DType, ref.Shape, ref.File.Path, t.DType, t.Shape)
		}
		refs[i] = ref
	}
	b, err := quantstream.NewLayerBuilder(mem, li, quantstream.BuildOptions{AppendRoom: int(room)})
	if err != nil {
		return nil, fmt.Errorf("arrowio: %w", err)
	}
	defer b.Release()
	// Read in file order, so that a layer spread over a shard is read front to back.
	order := make([]int, len(refs))
	for i := range order {
		order[i] = i
	}
	// Derived tensors read their sources themselves (Checkpoint.Derive): they go
	// last, in the order given.
	slices.SortStableFunc(order, func(a, b int) int {
		ta, tb := refs[a], refs[b]
		if da, db := ta.derived != nil, tb.derived != nil; da || db {
			return cmp.Compare(btoi(da), btoi(db))
		}
		return cmp.Or(cmp.Compare(ta.File.Path, tb.File.Path), cmp.Compare(ta.Begin, tb.Begin))
	})
	for _, i := range order {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if err := refs[i].read(ctx, b.Data(i)); err != nil {
			return nil, err
		}
	}
	return b.Finish()
}

// Source returns a quantstream.Source that reads layers, in order, from c into
// buffers from mem (see ReadLayer); nil layers means c.Layers(). Each layer it
// yields belongs to its caller (a pipeline). The Source reads c, so c must stay
// open while it is used; it is for one pass.
func (c *Checkpoint) Source(mem memory.Allocator, layers []quantstream.LayerInfo) *Source {
	if layers == nil {
		layers = c.layers
	}
	return &Source{ck: c, mem: mem, layers: layers}
}

// Source streams a checkpoint's layers; see Checkpoint.Source.
type Source struct {
	ck     *Checkpoint
	mem    memory.Allocator
	layers []quantstream.LayerInfo
	next   int
	room   func(quantstream.LayerInfo) int64
}

// WithAppendRoom makes the Source leave room(li) bytes of append room after layer
// li's tensors (at least quantstream.DefaultAppendRoom) instead of the default: for
// a first stage that appends more than that to some layers (the per-block amax of a
// data-free calibration), which can then append in place (Layer.Extend) rather
// than copy the layer. It returns s; call it before the first Next.
func (s *Source) WithAppendRoom(room func(quantstream.LayerInfo) int64) *Source {
	s.room = room
	return s
}

var _ quantstream.Source = (*Source)(nil)

// Layers returns the layers Next yields, in order. The caller must not modify them.
func (s *Source) Layers() []quantstream.LayerInfo { return s.layers }

// Next reads the next layer; after the last one it returns io.EOF.
func (s *Source) Next(ctx context.Context) (*quantstream.Layer, error) {
	if s.next >= len(s.layers) {
		return nil, io.EOF
	}
	li := s.layers[s.next]
	s.next++
	room := int64(quantstream.DefaultAppendRoom)
	if s.room != nil {
		room = max(room, s.room(li))
	}
	return s.ck.readLayer(ctx, s.mem, li, room)
}

// checkShape reports whether data's length matches dtype and shape.
func checkShape(dt quant.DType, shape []int64, n int64) bool {
	want, ok := byteLen(dt, shape)
	return ok && want == n
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}
