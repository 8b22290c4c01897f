package convert

import (
	"cmp"
	"context"
	"slices"
	"sync"

	"github.com/quantstream/quantstream"
	"github.com/quantstream/quantstream/arrowio"
	"github.com/quantstream/quantstream/pipeline"
	"github.com/quantstream/quantstream/stages"
)

// A direct group is one that no stage of the chain changes: every stage hands it
// on as it is (pipeline.BufferReuser with nothing new, the same headers in the
// same order) and every tensor is stored as it is in an input file. Such a group
// (the embeddings and an excluded lm_head of an export, every group of a
// passthrough) is not read into memory at all: its tensors are copied from the
// input files to the output shards (arrowio.Checkpoint.CopyTensor), beside the
// pipeline, so that it costs nothing of the memory budget at any size: a 1 GB
// lm_head converts under 256 MiB. Only the conversion's own stages qualify, since
// a stage of the caller's own may want to see every layer.

// isDirect reports whether the planned group lp is direct.
func (j *Job) isDirect(lp *pipeline.LayerPlan) bool {
	for _, st := range j.chain {
		switch st.(type) {
		case *stages.Stage, *calibrateStage:
		default:
			return false
		}
	}
	for k := 1; k < len(lp.Steps); k++ {
		if lp.New[k] != 0 || !sameHeaders(lp.Steps[k], lp.Steps[0]) {
			return false
		}
	}
	for _, t := range lp.Steps[0] {
		if !j.ck.Stored(t.Name) {
			return false
		}
	}
	return true
}

func sameHeaders(a, b []quantstream.TensorInfo) bool {
	return slices.EqualFunc(a, b, func(x, y quantstream.TensorInfo) bool {
		return x.Name == y.Name && x.DType == y.DType && slices.Equal(x.Shape, y.Shape)
	})
}

// newPlan plans layers through the chain, with the direct groups charged nothing
// (they are copied, never held), and reports which groups are direct.
func (j *Job) newPlan(layers []quantstream.LayerInfo) (*pipeline.Plan, []bool, error) {
	plan, err := pipeline.NewPlan(layers, slices.Clone(j.chain)...)
	if err != nil {
		return nil, nil, err
	}
	direct := make([]bool, len(plan.Layers))
	plan.MaxCharge = 0
	for i := range plan.Layers {
		lp := &plan.Layers[i]
		if direct[i] = j.isDirect(lp); direct[i] {
			clear(lp.Charge)
		}
		plan.MaxCharge = max(plan.MaxCharge, lp.Charge[0])
	}
	return plan, direct, nil
}

// copyDirect copies the tensors of the direct groups that w wants, telling pr
// after each group. They are copied in the order they lie in the output shards, not
// group by group: the writer hashes each shard's written prefix as it grows
// (arrowio.Writer), so copies in file order are hashed right behind the copy, on
// the other core, instead of after the last one. The bytes do not depend on the
// order.
func (j *Job) copyDirect(ctx context.Context, groups []quantstream.LayerInfo, w *arrowio.Writer, pr *progress) error {
	type task struct {
		name  string
		group int
		shard int
		at    int64
	}
	var tasks []task
	left := make([]int, len(groups))
	for g, li := range groups {
		for _, t := range li.Tensors {
			if !w.Wants(t.Name) {
				continue
			}
			k, h, _ := w.Plan().Lookup(t.Name)
			tasks = append(tasks, task{name: t.Name, group: g, shard: k, at: h.Begin})
			left[g]++
		}
	}
	slices.SortStableFunc(tasks, func(a, b task) int {
		return cmp.Or(cmp.Compare(a.shard, b.shard), cmp.Compare(a.at, b.at))
	})
	for g, li := range groups {
		if left[g] == 0 {
			pr.copied(layerBytes(li))
		}
	}
	for _, t := range tasks {
		if err := j.ck.CopyTensor(ctx, w, t.name); err != nil {
			return err
		}
		if left[t.group]--; left[t.group] == 0 {
			pr.copied(layerBytes(groups[t.group]))
		}
	}
	return nil
}

// progress merges the pipeline's progress with the direct groups' (copied beside
// it) into the run's, for Options.Progress, which it calls one call at a time.
type progress struct {
	f func(pipeline.Progress)

	mu         sync.Mutex
	pipe, copy pipeline.Progress // copy: Layers and Bytes done, and the totals
}

func newProgress(f func(pipeline.Progress), todo, copies []quantstream.LayerInfo) *progress {
	p := &progress{f: f}
	// The totals are the whole run's from the first report on, whichever side
	// reports first.
	for _, li := range todo {
		p.pipe.TotalLayers++
		p.pipe.TotalBytes += layerBytes(li)
	}
	for _, li := range copies {
		p.copy.TotalLayers++
		p.copy.TotalBytes += layerBytes(li)
	}
	return p
}

func (p *progress) report() {
	if p.f == nil {
		return
	}
	p.f(pipeline.Progress{
		Layers: p.pipe.Layers + p.copy.Layers, TotalLayers: p.pipe.TotalLayers + p.copy.TotalLayers,
		Bytes: p.pipe.Bytes + p.copy.Bytes, TotalBytes: p.pipe.TotalBytes + p.copy.TotalBytes,
	})
}

// pipeline is the pipeline's Progress.
func (p *progress) pipeline(pp pipeline.Progress) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.pipe = pp
	p.report()
}

func (p *progress) copied(n int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.copy.Layers++
	p.copy.Bytes += n
	p.report()
}
