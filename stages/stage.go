package stages

import (
	"context"
	"fmt"
	"slices"

	"github.com/apache/arrow-go/v18/arrow/memory"

	quantstream "github.com/quantstream/quantstream"
	"github.com/quantstream/quantstream/quant"
)

// Stage runs a Plan's export on layers: unified HF export of one decoder layer (or the
// non-decoder group) per Process call. It is safe for concurrent use on different
// layers and its output does not depend on the order or parallelism of calls.
type Stage struct {
	plan *Plan
	mem  memory.Allocator
}

var _ quantstream.Stage = (*Stage)(nil)

// NewStage returns the export stage of p; output layers are allocated from mem.
func NewStage(p *Plan, mem memory.Allocator) *Stage { return &Stage{plan: p, mem: mem} }

// Name is the stage's name in pipeline errors.
func (s *Stage) Name() string { return "export" }

// Plan maps a layer's input headers to its output headers (sorted by name).
func (s *Stage) Plan(layer int, in []quantstream.TensorInfo) ([]quantstream.TensorInfo, error) {
	ts, err := headerSet(in)
	if err != nil {
		return nil, err
	}
	if _, _, err := s.plan.run(context.Background(), ts, &LayerPlan{Index: layer, Prefix: layerPrefix(layer, in)}); err != nil {
		return nil, err
	}
	return infos(ts), nil
}

// layerPrefix is the "…layers.N." prefix of decoder layer N among its tensors ("" for
// the non-decoder group).
func layerPrefix(layer int, in []quantstream.TensorInfo) string {
	if layer == quantstream.NonDecoder {
		return ""
	}
	for _, t := range in {
		if idx, prefix := LayerOf(t.Name); idx == layer {
			return prefix
		}
	}
	return ""
}

// Process exports one layer. It takes ownership of l and releases it (also on error);
// the returned layer belongs to the caller. Output tensors are in name order, exactly
// as Plan lists them.
func (s *Stage) Process(ctx context.Context, l *quantstream.Layer) (_ *quantstream.Layer, err error) {
	defer l.Release()
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("stages: layer %d: panic: %v", l.Index(), r)
		}
	}()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	in := l.Tensors()
	infosIn := make([]quantstream.TensorInfo, len(in))
	ts := &tensorSet{hdr: make(map[string]TensorHeader, len(in)), data: make(map[string]quant.Tensor, len(in))}
	for i, t := range in {
		infosIn[i] = quantstream.TensorInfo{Name: t.Name, DType: t.DType.String(), Shape: t.Shape}
		ts.set(t.Name, t.Tensor)
	}
	want, err := s.Plan(l.Index(), infosIn)
	if err != nil {
		return nil, err
	}
	if _, _, err := s.plan.run(ctx, ts, &LayerPlan{Index: l.Index(), Prefix: layerPrefix(l.Index(), infosIn)}); err != nil {
		return nil, err
	}
	got := infos(ts)
	if !sameInfos(got, want) {
		return nil, fmt.Errorf("%w: layer %d: %s", ErrPlanMismatch, l.Index(), firstInfoDiff(got, want))
	}
	b := quantstream.NewLayerBuilder(s.mem, l.Index(), l.Prefix())
	defer b.Release()
	for _, h := range got {
		t := ts.data[h.Name]
		if err := b.Append(quantstream.Tensor{Name: h.Name, Tensor: t}); err != nil {
			return nil, err
		}
	}
	return b.Finish()
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
