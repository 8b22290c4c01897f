package convert

import (
	"context"
	"fmt"
	"os"
	"sort"
	"strings"

	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/quantstream/quantstream"
	"github.com/quantstream/quantstream/arrowio"
	"github.com/quantstream/quantstream/modelopt"
	"github.com/quantstream/quantstream/quant"
	"github.com/quantstream/quantstream/stages"
)

// dataFree resolves the recipe against the checkpoint's headers and returns the
// quantizer table plus the calibration stage that adds each weight quantizer's
// amax to its layer (ModelOpt's max calibration with forward_loop=None depends on
// the weights alone, so it can run layer by layer).
func dataFree(ck *arrowio.Checkpoint, side map[string]string, opt Options, mem memory.Allocator) (stages.Quantizers, *calibrateStage, []quantstream.TensorInfo, error) {
	r, err := modelopt.ResolveRecipe(opt.Recipe, opt.KVCache)
	if err != nil {
		return nil, nil, nil, err
	}
	cfgPath := side["config.json"]
	if cfgPath == "" {
		return nil, nil, nil, fmt.Errorf("convert: no config.json in %s: a recipe is applied per architecture", strings.Join(opt.Inputs, ", "))
	}
	cfg, err := os.ReadFile(cfgPath)
	if err != nil {
		return nil, nil, nil, err
	}
	shapes := map[string][]int64{}
	dtypes := map[string]quant.DType{}
	for _, t := range ck.Tensors() {
		shapes[t.Name] = t.Shape
		dtypes[t.Name] = t.DType
	}
	q, err := modelopt.DataFree(r, cfg, shapes)
	if err != nil {
		return nil, nil, nil, err
	}
	cs := &calibrateStage{q: q, mem: mem, byWeight: map[string][]quantstream.TensorInfo{}}
	var extra []quantstream.TensorInfo
	for _, qn := range q.Table.Names() {
		shape, ok := q.AmaxShapes[qn]
		tq := q.Table[qn]
		if !ok || !tq.Enabled {
			continue
		}
		slot, ok := q.Slot(qn)
		if !ok || slot.Kind != modelopt.WeightSlot || slot.Name != qn {
			continue
		}
		dt, ok := dtypes[slot.Weight]
		if !ok {
			return nil, nil, nil, fmt.Errorf("convert: quantizer %s calibrates on %s, which the checkpoint lacks", qn, slot.Weight)
		}
		info := quantstream.TensorInfo{
			Name:  qn + "._amax",
			DType: quant.CalibratedAmaxDType(tq, dt, len(slot.WeightShape)).String(),
			Shape: shape,
		}
		cs.byWeight[slot.Weight] = append(cs.byWeight[slot.Weight], info)
		extra = append(extra, info)
	}
	return q.Table, cs, extra, nil
}

// calibrateStage adds the weight quantizers' amax buffers to each layer, computed
// from the layer's own weights.
type calibrateStage struct {
	q        *modelopt.Quantized
	mem      memory.Allocator
	byWeight map[string][]quantstream.TensorInfo // weight tensor -> amax buffers it yields
}

var _ quantstream.Stage = (*calibrateStage)(nil)

func (s *calibrateStage) Name() string { return "calibrate" }

func (s *calibrateStage) added(in []quantstream.TensorInfo) []quantstream.TensorInfo {
	var out []quantstream.TensorInfo
	for _, t := range in {
		out = append(out, s.byWeight[t.Name]...)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Plan appends the amax buffers, sorted by name, after the layer's tensors.
func (s *calibrateStage) Plan(_ int, in []quantstream.TensorInfo) ([]quantstream.TensorInfo, error) {
	return append(append([]quantstream.TensorInfo(nil), in...), s.added(in)...), nil
}

func (s *calibrateStage) Process(ctx context.Context, l *quantstream.Layer) (*quantstream.Layer, error) {
	defer l.Release()
	tensors := l.Tensors()
	infos := make([]quantstream.TensorInfo, len(tensors))
	weights := map[string]quant.Tensor{}
	for i, t := range tensors {
		infos[i] = quantstream.TensorInfo{Name: t.Name, DType: t.DType.String(), Shape: t.Shape}
		if len(s.byWeight[t.Name]) > 0 {
			weights[t.Name] = t.Tensor
		}
	}
	want := s.added(infos)
	if len(want) == 0 {
		l.Retain()
		return l, nil
	}
	amax, err := s.q.WeightAmax(weights)
	if err != nil {
		return nil, err
	}
	b := quantstream.NewLayerBuilder(s.mem, l.Index(), l.Prefix())
	defer b.Release()
	for _, t := range tensors {
		if err := b.Append(t); err != nil {
			return nil, err
		}
	}
	for _, w := range want {
		a, ok := amax[w.Name]
		if !ok {
			return nil, fmt.Errorf("calibration produced no %s", w.Name)
		}
		if err := b.Append(quantstream.Tensor{Name: w.Name, Tensor: a}); err != nil {
			return nil, err
		}
	}
	return b.Finish()
}
