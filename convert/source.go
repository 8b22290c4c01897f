package convert

import (
	"context"
	"io"

	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/quantstream/quantstream"
	"github.com/quantstream/quantstream/arrowio"
	"github.com/quantstream/quantstream/pipeline"
)

// checkpointSource streams a Checkpoint's layers in its deterministic order.
type checkpointSource struct {
	ck     *arrowio.Checkpoint
	mem    memory.Allocator
	layers []arrowio.LayerInfo
	next   int
}

var _ pipeline.Source = (*checkpointSource)(nil)

func newCheckpointSource(ck *arrowio.Checkpoint, mem memory.Allocator) *checkpointSource {
	return &checkpointSource{ck: ck, mem: mem, layers: ck.Layers()}
}

func (s *checkpointSource) Layers() []pipeline.LayerInfo {
	out := make([]pipeline.LayerInfo, len(s.layers))
	for i, li := range s.layers {
		out[i] = pipeline.LayerInfo{Index: li.Index, Prefix: li.Prefix, Tensors: li.Infos()}
	}
	return out
}

func (s *checkpointSource) Next(ctx context.Context) (*quantstream.Layer, error) {
	if s.next >= len(s.layers) {
		return nil, io.EOF
	}
	li := s.layers[s.next]
	s.next++
	return s.ck.ReadLayer(ctx, s.mem, li)
}

// writerSink writes each layer at its planned place in the output shards.
type writerSink struct{ w *arrowio.Writer }

func (s writerSink) Write(_ context.Context, l *quantstream.Layer) error { return s.w.WriteLayer(l) }

// dumpSink appends each layer to an Arrow IPC stream.
type dumpSink struct{ d *arrowio.DumpWriter }

func (s dumpSink) Write(_ context.Context, l *quantstream.Layer) error { return s.d.Write(l) }
