package convert

import (
	"context"
	"io"

	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/quantstream/quantstream"
	"github.com/quantstream/quantstream/arrowio"
)

// checkpointSource streams a Checkpoint's layers in its deterministic order.
type checkpointSource struct {
	ck     *arrowio.Checkpoint
	mem    memory.Allocator
	layers []arrowio.LayerInfo
	next   int

	// Set by splitExperts when it cut some layer: whole are the groups before,
	// of[i] is the index in whole of layers[i].
	whole []arrowio.LayerInfo
	of    []int
	// preread names, per split layer, the amax tensors its fill targets need.
	preread map[int][]string
	// noSplit says why a layer over a quarter of the budget was kept whole.
	noSplit map[int]error
}

var _ quantstream.Source = (*checkpointSource)(nil)

func newCheckpointSource(ck *arrowio.Checkpoint, mem memory.Allocator) *checkpointSource {
	return &checkpointSource{ck: ck, mem: mem, layers: ck.Layers()}
}

// splitForBudget cuts layers for a passthrough (stages is the number of stages: none
// needs a whole layer then) under a memory budget: each layer larger than a quarter
// of maxMemory becomes runs of consecutive tensors of at most that many bytes (a
// larger tensor alone), so that a budget below the largest layer still converts,
// with a read and a write in flight at once. Nothing is cut when some tensor alone
// exceeds the budget: the plan then reports the layer that does not fit, as it
// would without cutting. Output order and bytes are unchanged: the runs keep the
// layer's tensor order.
func (s *checkpointSource) splitForBudget(stages int, maxMemory int64) *checkpointSource {
	if stages > 0 || maxMemory <= 0 {
		return s
	}
	for _, li := range s.layers {
		for _, t := range li.Tensors {
			if t.Size() > maxMemory {
				return s
			}
		}
	}
	target := maxMemory / 4
	var out []arrowio.LayerInfo
	for _, li := range s.layers {
		if li.DataBytes() <= target {
			out = append(out, li)
			continue
		}
		run := arrowio.LayerInfo{Index: li.Index, Prefix: li.Prefix}
		var n int64
		for _, t := range li.Tensors {
			if len(run.Tensors) > 0 && n+t.Size() > target {
				out = append(out, run)
				run, n = arrowio.LayerInfo{Index: li.Index, Prefix: li.Prefix}, 0
			}
			run.Tensors = append(run.Tensors, t)
			n += t.Size()
		}
		out = append(out, run)
	}
	s.layers = out
	return s
}

func (s *checkpointSource) Layers() []quantstream.LayerInfo {
	out := make([]quantstream.LayerInfo, len(s.layers))
	for i, li := range s.layers {
		out[i] = quantstream.LayerInfo{Index: li.Index, Prefix: li.Prefix, Tensors: li.Infos()}
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
