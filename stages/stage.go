package stages

import (
	"context"
	"fmt"
	"slices"
	"sync"

	"github.com/apache/arrow-go/v18/arrow/memory"

	quantstream "github.com/quantstream/quantstream"
	"github.com/quantstream/quantstream/internal/parallel"
	"github.com/quantstream/quantstream/quant"
)

// Stage runs a Plan's export on layers: unified HF export of one decoder layer (or the
// non-decoder group) per Process call. It is safe for concurrent use on different
// layers and its output does not depend on the order or parallelism of calls.
type Stage struct {
	plan *Plan
	mem  memory.Allocator

	// fp8 are the input weights that arrive coded (TakeFP8Coded); read-only
	// while layers are processed.
	fp8 map[string]quant.FP8Block

	mu    sync.Mutex
	notes []string
}

// Notes returns, sorted, what the export of the layers processed so far did that
// a user should know: for now, each input quantizer whose zero amax was exported
// as maxbound, as ModelOpt does. Call it after the layers are processed.
func (s *Stage) Notes() []string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Sorted(slices.Values(s.notes))
}

var _ quantstream.Stage = (*Stage)(nil)

// NewStage returns the export stage of p; output layers are allocated from mem.
func NewStage(p *Plan, mem memory.Allocator) *Stage { return &Stage{plan: p, mem: mem} }

// Name is the stage's name in pipeline errors.
func (s *Stage) Name() string { return "export" }

// Plan maps a layer's input headers to its output headers (sorted by name).
func (s *Stage) Plan(in quantstream.LayerInfo) ([]quantstream.TensorInfo, error) {
	ts, err := headerSet(in.Tensors)
	if err != nil {
		return nil, err
	}
	if _, _, err := s.plan.run(context.Background(), ts, &LayerPlan{Index: in.Index, Prefix: in.Prefix}); err != nil {
		return nil, err
	}
	return infos(ts), nil
}

// Process exports one layer. It takes ownership of l and releases it (also on error);
// the returned layer belongs to the caller. Output tensors are in name order, exactly
// as Plan lists them.
func (s *Stage) Process(ctx context.Context, l *quantstream.Layer) (_ *quantstream.Layer, err error) {
	// A panic is not recovered here: the pipeline recovers it at the stage boundary
	// (pipeline.ErrPanic, with the stack), and l is released on the way out.
	defer l.Release()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	in := l.Tensors()
	ts := &tensorSet{hdr: make(map[string]quantstream.TensorInfo, len(in)), data: make(map[string]quant.Tensor, len(in))}
	for _, t := range in {
		ts.set(t.Name, t.Tensor)
	}
	if err := s.setCoded(ts, in); err != nil {
		return nil, err
	}
	want, err := s.Plan(l.Info())
	if err != nil {
		return nil, err
	}
	if _, _, err := s.plan.run(ctx, ts, &LayerPlan{Index: l.Index(), Prefix: l.Prefix()}); err != nil {
		return nil, err
	}
	if err := checkCodedDone(ts); err != nil {
		return nil, err
	}
	if len(ts.notes) > 0 {
		s.mu.Lock()
		s.notes = append(s.notes, ts.notes...)
		s.mu.Unlock()
	}
	got := infos(ts)
	if !sameInfos(got, want) {
		return nil, fmt.Errorf("%w: %s: %s", ErrPlanMismatch, quantstream.LayerName(l.Index()), firstInfoDiff(got, want))
	}
	if unchanged(ts, got, in) {
		// Nothing to export in this layer (an excluded lm_head, the embeddings, a
		// norm): hand on the input rather than copy it.
		l.Retain()
		return l, nil
	}
	b, err := quantstream.NewLayerBuilder(s.mem, quantstream.LayerInfo{Index: l.Index(), Prefix: l.Prefix(), Tensors: got}, quantstream.BuildOptions{})
	if err != nil {
		return nil, err
	}
	defer b.Release()
	if err := fillOutput(ctx, ts, got, b); err != nil {
		return nil, err
	}
	return b.Finish()
}

// NewBytes is what Process allocates for a layer whose headers are in and planned
// output out (the pipeline's BufferReuser, for its memory budget): nothing when
// out is in, tensor for tensor in the same order (an excluded lm_head, the
// embeddings, a norm), since Process then hands the input on (unchanged); otherwise
// the whole output. The pipeline checks the claim on every layer.
func (s *Stage) NewBytes(in quantstream.LayerInfo, out []quantstream.TensorInfo) int64 {
	same := len(in.Tensors) == len(out)
	var n int64
	for i, t := range out {
		if same && (t.Name != in.Tensors[i].Name || t.DType != in.Tensors[i].DType || !slices.Equal(t.Shape, in.Tensors[i].Shape)) {
			same = false
		}
		b, _ := t.DataBytes() // validated by the pipeline's plan
		n += b
	}
	if same {
		return 0
	}
	return n
}

// unchanged reports whether the output is the input: the same tensors in the same
// order, each still the input's own bytes.
func unchanged(ts *tensorSet, got []quantstream.TensorInfo, in []quantstream.Tensor) bool {
	if len(got) != len(in) || len(ts.later) > 0 {
		return false
	}
	for i, t := range in {
		d, ok := ts.data[t.Name]
		if !ok || got[i].Name != t.Name || got[i].DType != t.DType || !slices.Equal(got[i].Shape, t.Shape) ||
			len(d.Data) != len(t.Data) || (len(d.Data) > 0 && &d.Data[0] != &t.Data[0]) {
			return false
		}
	}
	return true
}

// fillOutput writes the layer's outputs into b's rows (output i in b.Data(i)): the
// tensors computed already are copied, the rowJobs run, all of it split into
// pieces over the cores.
func fillOutput(ctx context.Context, ts *tensorSet, got []quantstream.TensorInfo, b *quantstream.LayerBuilder) error {
	var tasks []parallel.Task
	var jobs []*rowJob
	where := map[string][]byte{}
	for i, h := range got {
		dst := b.Data(i)
		if lo, ok := ts.later[h.Name]; ok {
			if !slices.Contains(jobs, lo.job) {
				jobs = append(jobs, lo.job)
			}
			where[h.Name] = dst
			continue
		}
		t, ok := ts.data[h.Name]
		if !ok || len(t.Data) != len(dst) {
			return fmt.Errorf("%w: tensor %s has %d bytes, the plan %d", ErrPlanMismatch, h.Name, len(t.Data), len(dst))
		}
		tasks = append(tasks, parallel.Copy(dst, t.Data)...)
	}
	for _, j := range jobs {
		dst := make([][]byte, len(j.outs))
		for k, name := range j.outs {
			if name == "" {
				dst[k] = make([]byte, j.outBytes[k]) // dropped by a later step
				continue
			}
			dst[k] = where[name]
			if int64(len(dst[k])) != j.outBytes[k] {
				return fmt.Errorf("%w: tensor %s has %d bytes, the plan %d", ErrPlanMismatch, name, j.outBytes[k], len(dst[k]))
			}
		}
		tasks = append(tasks, parallel.RowsAligned(j.rows, j.rowBytes, j.align, func(r0, r1 int) error { return j.fill(dst, r0, r1) })...)
	}
	return parallel.Run(ctx, tasks)
}

// firstInfoDiff describes where got and want first differ.
func firstInfoDiff(got, want []quantstream.TensorInfo) string {
	for i := 0; i < min(len(got), len(want)); i++ {
		g, w := got[i], want[i]
		if g.Name != w.Name || g.DType != w.DType || !slices.Equal(g.Shape, w.Shape) {
			return fmt.Sprintf("produced %s %s %v where the plan has %s %s %v", g.Name, g.DType, g.Shape, w.Name, w.DType, w.Shape)
		}
	}
	return fmt.Sprintf("produced %d tensors, the plan has %d", len(got), len(want))
}

func sameInfos(a, b []quantstream.TensorInfo) bool {
	return slices.EqualFunc(a, b, func(x, y quantstream.TensorInfo) bool {
		return x.Name == y.Name && x.DType == y.DType && slices.Equal(x.Shape, y.Shape)
	})
}
