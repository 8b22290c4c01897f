package quantstream

import (
	"fmt"
	"sync/atomic"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"
)

// DefaultAppendRoom is the append room (BuildOptions.AppendRoom) arrowio leaves
// after every layer it reads from a checkpoint: enough for the weight amax buffers
// that a data-free calibration appends to a decoder layer, which can then be
// appended in place instead of copying the layer.
const DefaultAppendRoom = 64 << 10

// BuildOptions shape the data buffer of a layer a LayerBuilder builds.
type BuildOptions struct {
	// AppendRoom reserves this many bytes, zeroed, after the last tensor: room in
	// which Layer.Extend appends small tensors to the built layer without copying
	// it. The room belongs to no tensor and is freed with the layer. 0: none.
	AppendRoom int
}

// LayerBuilder builds a layer around one data buffer that is allocated once, at its
// final size, and filled in place: the caller writes every byte of each row's
// Data(i) (rows are disjoint, so from as many goroutines as it likes), then Finish
// wraps the buffer as the record's data column as it is, without a copy. The
// headers must be known beforehand; in a conversion they are the plan. This is how
// every layer of a conversion is built: a reader preads tensors straight into their
// rows, a kernel writes its output rows straight into theirs.
//
// Memory comes from the allocator given. If it has the method
// AllocateUninitialized(size int) []byte, the data buffer is taken from it, not
// zeroed (pipeline.PoolAllocator has it): that is why every byte must be written.
//
// A LayerBuilder is not safe for concurrent use, except that different rows'
// Data may be written concurrently. Release it when done, also after Finish.
type LayerBuilder struct {
	mem  memory.Allocator
	info LayerInfo
	offs []int64
	data *memory.Buffer
	// room is how many bytes after offs[n] the built layer may take for appends.
	room int64
}

// uninitAllocator is the optional capability of an allocator to skip zeroing a
// buffer the caller overwrites.
type uninitAllocator interface {
	AllocateUninitialized(size int) []byte
}

// NewLayerBuilder allocates the data buffer of a layer with info's index, prefix
// and rows, in order. It fails, allocating nothing, for a header without a byte
// length (TensorInfo.DataBytes), a duplicate name (ErrBadLayer), or a layer too
// large for memory.
func NewLayerBuilder(mem memory.Allocator, info LayerInfo, opt BuildOptions) (*LayerBuilder, error) {
	offs, err := rowOffsets(info)
	if err != nil {
		return nil, err
	}
	total := offs[len(info.Tensors)]
	room := int64(max(opt.AppendRoom, 0))
	if total > int64(int(^uint(0)>>1))-room {
		return nil, fmt.Errorf("%s: %d bytes do not fit in memory", LayerName(info.Index), total)
	}
	n := int(total + room)
	var b []byte
	if u, ok := mem.(uninitAllocator); ok {
		b = u.AllocateUninitialized(n)
	} else {
		b = mem.Allocate(n)
	}
	clear(b[total:])
	return &LayerBuilder{mem: mem, info: info, offs: offs, data: memory.NewBufferWithAllocator(b, mem), room: room}, nil
}

// rowOffsets returns where each of info's rows starts in a buffer holding them back
// to back (offs[i]:offs[i+1] is row i; offs[len] the total), checking the headers.
func rowOffsets(info LayerInfo) ([]int64, error) {
	offs := make([]int64, len(info.Tensors)+1)
	seen := make(map[string]bool, len(info.Tensors))
	for i, t := range info.Tensors {
		if seen[t.Name] {
			return nil, fmt.Errorf("%w: duplicate tensor %q", ErrBadLayer, t.Name)
		}
		seen[t.Name] = true
		n, err := t.DataBytes()
		if err != nil {
			return nil, err
		}
		if offs[i] > 1<<62-n {
			return nil, fmt.Errorf("%s: size overflows at tensor %q", LayerName(info.Index), t.Name)
		}
		offs[i+1] = offs[i] + n
	}
	return offs, nil
}

// Len is the number of rows.
func (b *LayerBuilder) Len() int { return len(b.info.Tensors) }

// Data returns row i's bytes, to be written entirely before Finish. Its contents
// before that are undefined.
func (b *LayerBuilder) Data(i int) []byte {
	return b.data.Bytes()[b.offs[i]:b.offs[i+1]:b.offs[i+1]]
}

// Finish returns the layer, which the caller owns. The builder's buffer now belongs
// to the layer; the builder may not be used afterwards except for Release.
func (b *LayerBuilder) Finish() (*Layer, error) {
	if b.data == nil {
		return nil, fmt.Errorf("%w: %s: builder finished or released", ErrBadLayer, LayerName(b.info.Index))
	}
	l, err := assemble(b.mem, b.info, b.offs, b.data)
	if err != nil {
		return nil, err
	}
	l.room = b.room
	b.Release()
	return l, nil
}

// Release frees the data buffer unless Finish handed it to a layer.
func (b *LayerBuilder) Release() {
	if b.data != nil {
		b.data.Release()
		b.data = nil
	}
}

// assemble returns a layer with one row per info whose data are data's bytes
// offs[i]:offs[i+1] (data may be longer than offs[n]). It retains data; the caller
// keeps its reference.
func assemble(mem memory.Allocator, info LayerInfo, offs []int64, data *memory.Buffer) (*Layer, error) {
	n := len(info.Tensors)
	if len(offs) != n+1 || offs[n] > int64(data.Len()) {
		return nil, fmt.Errorf("%w: %s: %d offsets for %d tensors in %d bytes", ErrBadLayer, LayerName(info.Index), len(offs), n, data.Len())
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
	for _, t := range info.Tensors {
		nb.Append(t.Name)
		db.Append(t.DType.String())
		sb.Append(true)
		vb.AppendValues(t.Shape, nil)
	}
	names, dtypes, shapes := nb.NewArray(), db.NewArray(), sb.NewArray()
	defer names.Release()
	defer dtypes.Release()
	defer shapes.Release()
	rec := array.NewRecordBatch(LayerSchema(info.Index, info.Prefix), []arrow.Array{names, dtypes, shapes, dataCol}, int64(n))
	defer rec.Release()
	return LayerFromRecord(rec)
}

// Extend returns a builder for a new layer holding l's tensors followed by more,
// with l's index and prefix, in which l's rows already hold l's bytes: only the
// rows of more (Data(l.Len()+j)) are left to write. It works in place, copying
// nothing, when l was built with room after its last tensor (BuildOptions.AppendRoom)
// that more fits in and that no earlier Extend of l has taken: the new layer shares
// l's data buffer. Otherwise ok is false and nothing is allocated; build the layer
// anew with NewLayerBuilder, copying l's tensors.
//
// l stays valid and unchanged (the new rows lie in bytes no tensor of l uses), and
// the builder holds its own reference to the buffer, so l may be released before
// or after Finish. The new layer's own room is what more leaves of l's.
func (l *Layer) Extend(mem memory.Allocator, more []TensorInfo) (b *LayerBuilder, ok bool, err error) {
	info := l.Info()
	info.Tensors = append(info.Tensors, more...)
	offs, err := rowOffsets(info)
	if err != nil {
		return nil, false, err
	}
	col, isBin := l.rec.Column(ColData).(*array.LargeBinary)
	if !isBin || col.Data().Offset() != 0 || len(col.Data().Buffers()) < 3 {
		return nil, false, nil
	}
	have, data := col.ValueOffsets(), col.Data().Buffers()[2]
	if data == nil || len(have) != l.Len()+1 {
		return nil, false, nil
	}
	for i, o := range have {
		if offs[i] != o {
			return nil, false, nil
		}
	}
	need := offs[len(offs)-1] - have[len(have)-1]
	if need > l.room || int64(data.Len()) < have[len(have)-1]+l.room || !l.roomTaken.CompareAndSwap(false, true) {
		return nil, false, nil
	}
	data.Retain()
	return &LayerBuilder{mem: mem, info: info, offs: offs, data: data, room: l.room - need}, true, nil
}

// roomState is the part of a Layer that tracks its append room.
type roomState struct {
	room      int64       // bytes after the last tensor that Extend may use
	roomTaken atomic.Bool // an Extend has used them
}
