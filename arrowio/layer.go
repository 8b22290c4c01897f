package arrowio

import (
	"cmp"
	"context"
	"fmt"
	"slices"

	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/quantstream/quantstream"
	"github.com/quantstream/quantstream/internal/layerbuf"
	"github.com/quantstream/quantstream/quant"
)

// AppendRoom is how many bytes a layer read by ReadLayer has in its data buffer
// after its last tensor (zeroed): room for a stage to append small tensors in
// place (see internal/layerbuf.Room).
const AppendRoom = 64 << 10

// ReadLayer reads the tensors of li into a new Layer, one row per tensor in li's
// order. The tensor bytes are read with pread straight into one data buffer
// allocated from mem, which becomes the large_binary column as it is: no copy after
// the read. The caller owns the returned Layer and must Release it; on error
// nothing stays allocated.
//
// ReadLayer is safe to call concurrently (on the same or different layers).
func ReadLayer(ctx context.Context, mem memory.Allocator, li LayerInfo) (*quantstream.Layer, error) {
	var total int64
	for _, t := range li.Tensors {
		total += t.Size()
	}
	hdrs := make([]TensorHeader, len(li.Tensors))
	for i, t := range li.Tensors {
		hdrs[i] = t.TensorHeader
	}
	return buildLayer(mem, li.Index, li.Prefix, hdrs, total, func(data []byte, offs []int64) error {
		// Read in file order, so that a layer spread over a shard is read front to back.
		order := make([]int, len(li.Tensors))
		for i := range order {
			order[i] = i
		}
		slices.SortFunc(order, func(a, b int) int {
			ta, tb := li.Tensors[a], li.Tensors[b]
			return cmp.Or(cmp.Compare(ta.File.Path, tb.File.Path), cmp.Compare(ta.Begin, tb.Begin))
		})
		for _, i := range order {
			if err := ctx.Err(); err != nil {
				return err
			}
			t := li.Tensors[i]
			if err := t.File.ReadInto(t.TensorHeader, data[offs[i]:offs[i+1]]); err != nil {
				return err
			}
		}
		return nil
	})
}

// ReadLayer reads one of c.Layers(); see the function ReadLayer.
func (c *Checkpoint) ReadLayer(ctx context.Context, mem memory.Allocator, li LayerInfo) (*quantstream.Layer, error) {
	return ReadLayer(ctx, mem, li)
}

// buildLayer assembles a layer record around a data buffer of total bytes that fill
// writes into; offs[i]:offs[i+1] is row i's slice of it.
func buildLayer(mem memory.Allocator, index int, prefix string, hdrs []TensorHeader, total int64,
	fill func(data []byte, offs []int64) error) (*quantstream.Layer, error) {
	n := len(hdrs)
	if total < 0 || int64(int(total)) != total {
		return nil, fmt.Errorf("arrowio: layer %d: %d bytes do not fit in memory", index, total)
	}
	offs := make([]int64, n+1) // Assemble copies them into the record's offsets buffer
	// Not zeroed: fill writes every tensor byte. The room after the tensors lets a
	// stage append small tensors (calibrated amax buffers) without copying the layer.
	data := layerbuf.Alloc(mem, int(total)+AppendRoom)
	defer data.Release()
	var pos int64
	for i, h := range hdrs {
		offs[i] = pos
		pos += h.Size()
	}
	offs[n] = pos
	clear(data.Bytes()[total:])
	if err := fill(data.Bytes()[:total], offs); err != nil {
		return nil, err
	}

	infos := make([]quantstream.TensorInfo, n)
	for i, h := range hdrs {
		infos[i] = quantstream.TensorInfo{Name: h.Name, DType: h.DType, Shape: h.Shape}
	}
	return layerbuf.Assemble(mem, index, prefix, infos, offs, data)
}

// checkShape reports whether data's length matches dtype and shape.
func checkShape(dt quant.DType, shape []int64, n int64) bool {
	want, ok := byteLen(dt, shape)
	return ok && want == n
}
