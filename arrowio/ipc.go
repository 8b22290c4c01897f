package arrowio

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"

	"github.com/apache/arrow-go/v18/arrow"
	"github.com/apache/arrow-go/v18/arrow/array"
	"github.com/apache/arrow-go/v18/arrow/ipc"
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/quantstream/quantstream"
)

// MetaDumpFormat is the schema metadata key that marks a layer dump stream.
// Part of the Arrow IPC dump format.
const MetaDumpFormat = "quantstream.dump"

// ErrBadDump marks an Arrow IPC stream that is not a layer dump.
var ErrBadDump = errors.New("arrowio: malformed layer dump")

// dumpSchema is the stream's schema: the layer columns, without a layer's index,
// which differs per batch and travels in each batch's custom metadata
// (pyarrow: RecordBatchStreamReader.read_next_batch_with_custom_metadata).
func dumpSchema() *arrow.Schema {
	ls := quantstream.LayerSchema(0, "")
	md := arrow.NewMetadata([]string{MetaDumpFormat}, []string{"1"})
	return arrow.NewSchema(ls.Fields(), &md)
}

// DumpWriter writes layers to an Arrow IPC stream, one record batch per layer.
// pyarrow (pa.ipc.open_stream) and DuckDB can read the stream as one table of
// tensors. Not safe for concurrent use.
type DumpWriter struct {
	w      *ipc.Writer
	schema *arrow.Schema
}

// NewDumpWriter starts a dump on w. Buffers for the stream framing come from mem.
func NewDumpWriter(w io.Writer, mem memory.Allocator) *DumpWriter {
	s := dumpSchema()
	return &DumpWriter{w: ipc.NewWriter(w, ipc.WithSchema(s), ipc.WithAllocator(mem)), schema: s}
}

var _ quantstream.Sink = (*DumpWriter)(nil)

// Write appends l: a DumpWriter is a Sink. The caller keeps ownership of l.
func (d *DumpWriter) Write(ctx context.Context, l *quantstream.Layer) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	rec := l.Record()
	md := arrow.NewMetadata(
		[]string{quantstream.MetaLayerIndex, quantstream.MetaLayerPrefix},
		[]string{strconv.Itoa(l.Index()), l.Prefix()},
	)
	batch := array.NewRecordBatchWithMetadata(d.schema, rec.Columns(), rec.NumRows(), md)
	defer batch.Release()
	if err := d.w.Write(batch); err != nil {
		return fmt.Errorf("arrowio: dump layer %d: %w", l.Index(), err)
	}
	return nil
}

// Close ends the stream (it does not close the underlying io.Writer).
func (d *DumpWriter) Close() error { return d.w.Close() }

// DumpReader reads the layers of a dump written by DumpWriter.
type DumpReader struct {
	r *ipc.Reader
}

// NewDumpReader reads the stream's schema from r. Record buffers come from mem.
// The message body limit is off (a layer can be many GB); a stream is trusted
// input, like the checkpoint it was dumped from.
func NewDumpReader(r io.Reader, mem memory.Allocator) (*DumpReader, error) {
	ir, err := ipc.NewReader(r, ipc.WithAllocator(mem), ipc.WithBodySizeLimit(0))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadDump, err)
	}
	if !ir.Schema().HasMetadata() || ir.Schema().Metadata().FindKey(MetaDumpFormat) < 0 {
		ir.Release()
		return nil, fmt.Errorf("%w: no %s schema metadata", ErrBadDump, MetaDumpFormat)
	}
	return &DumpReader{r: ir}, nil
}

// Next returns the next layer, which the caller owns and must Release, or io.EOF
// after the last one.
func (d *DumpReader) Next() (*quantstream.Layer, error) {
	if !d.r.Next() {
		if err := d.r.Err(); err != nil {
			return nil, fmt.Errorf("%w: %v", ErrBadDump, err)
		}
		return nil, io.EOF
	}
	rec := d.r.RecordBatch()
	rm, ok := rec.(arrow.RecordBatchWithMetadata)
	if !ok {
		return nil, fmt.Errorf("%w: batch without layer metadata", ErrBadDump)
	}
	md := rm.Metadata()
	i := md.FindKey(quantstream.MetaLayerIndex)
	if i < 0 {
		return nil, fmt.Errorf("%w: batch without %s", ErrBadDump, quantstream.MetaLayerIndex)
	}
	index, err := strconv.Atoi(md.Values()[i])
	if err != nil {
		return nil, fmt.Errorf("%w: layer index %q", ErrBadDump, md.Values()[i])
	}
	prefix := ""
	if j := md.FindKey(quantstream.MetaLayerPrefix); j >= 0 {
		prefix = md.Values()[j]
	}
	lrec := array.NewRecordBatch(quantstream.LayerSchema(index, prefix), rec.Columns(), rec.NumRows())
	defer lrec.Release()
	l, err := quantstream.LayerFromRecord(lrec)
	if err != nil {
		return nil, fmt.Errorf("%w: layer %d: %w", ErrBadDump, index, err)
	}
	for k := range l.Len() {
		t := l.Tensor(k)
		if !checkShape(t.DType, t.Shape, int64(len(t.Data))) {
			l.Release()
			return nil, fmt.Errorf("%w: layer %d: tensor %q: %d bytes for %v %v", ErrBadDump, index, t.Name, len(t.Data), t.DType, t.Shape)
		}
	}
	return l, nil
}

// Release frees the reader.
func (d *DumpReader) Release() { d.r.Release() }
