package convert

import (
	"github.com/quantstream/quantstream"
	"github.com/quantstream/quantstream/arrowio"
)

// grouping is how a conversion cuts the checkpoint's layers into the groups the
// pipeline streams (arrowio's Source reads any group of the checkpoint's tensors):
// the layers as they are, runs of tensors for a passthrough under a budget
// (splitForBudget), or groups of whole experts for an export (splitExperts).
type grouping struct {
	layers []quantstream.LayerInfo // the groups, in the order they are streamed

	// Set by splitExperts when it cut some layer: whole are the groups before,
	// of[i] is the index in whole of layers[i].
	whole []quantstream.LayerInfo
	of    []int
	// preread names, per split layer, the amax tensors its fill targets need.
	preread map[int][]string
	// noSplit says why a layer over a quarter of the budget was kept whole.
	noSplit map[int]error
	// fused names, per split layer, the buffers its fusion groups exported apart
	// share (readFusedAmax); together why some fusion group over a quarter of the
	// budget was kept together.
	fused    map[int][]string
	together map[int][]string
}

func newGrouping(ck *arrowio.Checkpoint) *grouping {
	return &grouping{layers: ck.Layers()}
}

// splitForBudget cuts layers for a passthrough (stages is the number of stages: none
// needs a whole layer then) under a memory budget: each layer larger than a quarter
// of maxMemory becomes runs of consecutive tensors of at most that many bytes (a
// larger tensor alone), so that a budget below the largest layer still converts,
// with a read and a write in flight at once. Nothing is cut when some tensor alone
// exceeds the budget: the plan then reports the layer that does not fit, as it
// would without cutting. Output order and bytes are unchanged: the runs keep the
// layer's tensor order.
func (g *grouping) splitForBudget(stages int, maxMemory int64) *grouping {
	if stages > 0 || maxMemory <= 0 {
		return g
	}
	for _, li := range g.layers {
		for _, t := range li.Tensors {
			if infoBytes(t) > maxMemory {
				return g
			}
		}
	}
	target := maxMemory / 4
	var out []quantstream.LayerInfo
	for _, li := range g.layers {
		if layerBytes(li) <= target {
			out = append(out, li)
			continue
		}
		run := quantstream.LayerInfo{Index: li.Index, Prefix: li.Prefix}
		var n int64
		for _, t := range li.Tensors {
			if len(run.Tensors) > 0 && n+infoBytes(t) > target {
				out = append(out, run)
				run, n = quantstream.LayerInfo{Index: li.Index, Prefix: li.Prefix}, 0
			}
			run.Tensors = append(run.Tensors, t)
			n += infoBytes(t)
		}
		out = append(out, run)
	}
	g.layers = out
	return g
}

// layerBytes is the data size of a layer's tensors (headers the checkpoint
// validated).
func layerBytes(li quantstream.LayerInfo) int64 {
	n, _ := li.DataBytes()
	return n
}
