package quantstream

import (
	"errors"
	"fmt"
	"strconv"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/quantstream/quantstream/quant"
)

// Schema metadata keys of a layer record. Part of the Arrow IPC dump format.
const (
	MetaLayerIndex  = "quantstream.layer_index"
	MetaLayerPrefix = "quantstream.layer_prefix"
)

// Column positions of a layer record. Part of the Arrow IPC dump format.
const (
	ColName = iota
	ColDType
	ColShape
	ColData
)

// ErrBadLayer is returned for a record that is not a well-formed layer.
var ErrBadLayer = errors.New("quantstream: malformed layer record")

// NonDecoder is the index of the layer that carries every tensor outside the
// decoder blocks (embeddings, final norm, lm_head).
const NonDecoder = -1

// LayerName names a layer by its index in messages: "layer 12", or, for
// NonDecoder, "non-decoder tensors (embeddings, final norm, lm_head)".
func LayerName(index int) string {
	if index == NonDecoder {
		return "non-decoder tensors (embeddings, final norm, lm_head)"
	}
	return "layer " + strconv.Itoa(index)
}

// Tensor is a named tensor. In a Layer, Data points into the record's buffers and is
// valid until the Layer is released.
type Tensor struct {
	Name string
	quant.Tensor
}

// Layer is one unit of the stream: the tensors of one decoder block (or of the
// non-decoder group), as an Arrow record batch with one row per tensor:
// name utf8, dtype utf8, shape list<int64>, data large_binary.
//
// A Layer is reference counted like the record it wraps. Whoever holds a *Layer owns
// one reference and must Release it exactly once, or hand it on. A stage that returns a
// new Layer releases its input.
type Layer struct {
	rec    arrow.RecordBatch
	index  int
	prefix string
	names  map[string]int
	dtypes []quant.DType // row i's dtype, parsed once from the record
	roomState
}

// LayerSchema returns the schema of a layer record with its metadata.
func LayerSchema(index int, prefix string) *arrow.Schema {
	md := arrow.NewMetadata(
		[]string{MetaLayerIndex, MetaLayerPrefix},
		[]string{strconv.Itoa(index), prefix},
	)
	return arrow.NewSchema([]arrow.Field{
		{Name: "name", Type: arrow.BinaryTypes.String},
		{Name: "dtype", Type: arrow.BinaryTypes.String},
		{Name: "shape", Type: arrow.ListOf(arrow.PrimitiveTypes.Int64)},
		{Name: "data", Type: arrow.BinaryTypes.LargeBinary},
	}, &md)
}

// NewLayer builds a layer from tensors, copying their data into one buffer from mem
// (see LayerBuilder). The caller keeps ownership of the tensors' slices. Names must
// be unique, and each tensor's data must match its dtype and shape.
func NewLayer(mem memory.Allocator, index int, prefix string, tensors []Tensor) (*Layer, error) {
	info := LayerInfo{Index: index, Prefix: prefix, Tensors: make([]TensorInfo, len(tensors))}
	for i, t := range tensors {
		if err := t.Check(); err != nil {
			return nil, fmt.Errorf("tensor %q: %w", t.Name, err)
		}
		info.Tensors[i] = TensorInfo{Name: t.Name, DType: t.DType, Shape: t.Shape}
	}
	b, err := NewLayerBuilder(mem, info, BuildOptions{})
	if err != nil {
		return nil, err
	}
	defer b.Release()
	for i, t := range tensors {
		copy(b.Data(i), t.Data)
	}
	return b.Finish()
}

// LayerFromRecord views rec as a Layer, checking its schema. The Layer retains rec;
// the caller keeps its own reference.
func LayerFromRecord(rec arrow.RecordBatch) (*Layer, error) {
	s := rec.Schema()
	if s.NumFields() != 4 ||
		s.Field(ColName).Type.ID() != arrow.STRING ||
		s.Field(ColDType).Type.ID() != arrow.STRING ||
		s.Field(ColShape).Type.ID() != arrow.LIST ||
		s.Field(ColData).Type.ID() != arrow.LARGE_BINARY {
		return nil, fmt.Errorf("%w: schema %v", ErrBadLayer, s)
	}
	md := s.Metadata()
	k := md.FindKey(MetaLayerIndex)
	if k < 0 {
		return nil, fmt.Errorf("%w: no %s metadata", ErrBadLayer, MetaLayerIndex)
	}
	idx, err := strconv.Atoi(md.Values()[k])
	if err != nil {
		return nil, fmt.Errorf("%w: %s %q: %v", ErrBadLayer, MetaLayerIndex, md.Values()[k], err)
	}
	prefix := ""
	if i := md.FindKey(MetaLayerPrefix); i >= 0 {
		prefix = md.Values()[i]
	}
	rows := int(rec.NumRows())
	l := &Layer{rec: rec, index: idx, prefix: prefix, names: make(map[string]int, rows), dtypes: make([]quant.DType, rows)}
	names := rec.Column(ColName).(*array.String)
	dtypes := rec.Column(ColDType).(*array.String)
	for i := range rows {
		n := names.Value(i)
		if _, dup := l.names[n]; dup {
			return nil, fmt.Errorf("%w: duplicate tensor %q", ErrBadLayer, n)
		}
		dt, err := quant.ParseDType(dtypes.Value(i))
		if err != nil {
			return nil, fmt.Errorf("%w: tensor %q: %v", ErrBadLayer, n, err)
		}
		l.names[n], l.dtypes[i] = i, dt
	}
	rec.Retain()
	return l, nil
}

// Record returns the underlying record without retaining it.
func (l *Layer) Record() arrow.RecordBatch { return l.rec }

// Index is the decoder block number, or NonDecoder.
func (l *Layer) Index() int { return l.index }

// Prefix is the common name prefix, e.g. "model.layers.12.".
func (l *Layer) Prefix() string { return l.prefix }

// Len is the number of tensors.
func (l *Layer) Len() int { return int(l.rec.NumRows()) }

// Tensor returns row i. Its Data aliases the record and is valid until Release.
func (l *Layer) Tensor(i int) Tensor {
	info := l.info(i)
	data := l.rec.Column(ColData).(*array.LargeBinary)
	return Tensor{Name: info.Name, Tensor: quant.Tensor{DType: info.DType, Shape: info.Shape, Data: data.Value(i)}}
}

// info is row i's header; its Shape is a fresh slice.
func (l *Layer) info(i int) TensorInfo {
	names := l.rec.Column(ColName).(*array.String)
	shapes := l.rec.Column(ColShape).(*array.List)
	start, end := shapes.ValueOffsets(i)
	vals := shapes.ListValues().(*array.Int64).Int64Values()[start:end]
	shape := make([]int64, len(vals))
	copy(shape, vals)
	return TensorInfo{Name: names.Value(i), DType: l.dtypes[i], Shape: shape}
}

// Info returns the layer's headers: index, prefix and every row's name, dtype and
// shape, in row order (what a Source listed for it and a Stage plans from). The
// result shares nothing with the layer and stays valid after Release.
func (l *Layer) Info() LayerInfo {
	li := LayerInfo{Index: l.index, Prefix: l.prefix, Tensors: make([]TensorInfo, l.Len())}
	for i := range li.Tensors {
		li.Tensors[i] = l.info(i)
	}
	return li
}

// Lookup finds a tensor by full name.
func (l *Layer) Lookup(name string) (Tensor, bool) {
	i, ok := l.names[name]
	if !ok {
		return Tensor{}, false
	}
	return l.Tensor(i), true
}

// Tensors returns every tensor in row order (views, valid until Release).
func (l *Layer) Tensors() []Tensor {
	out := make([]Tensor, l.Len())
	for i := range out {
		out[i] = l.Tensor(i)
	}
	return out
}

// DataBytes is the total size of the tensors' data.
func (l *Layer) DataBytes() int64 {
	data := l.rec.Column(ColData).(*array.LargeBinary)
	if data.Len() == 0 {
		return 0
	}
	offs := data.ValueOffsets()
	return offs[len(offs)-1] - offs[0]
}

// Retain adds a reference.
func (l *Layer) Retain() { l.rec.Retain() }

// Release drops a reference; the tensors' data must not be used after the last one.
func (l *Layer) Release() { l.rec.Release() }
