package convert

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/quantstream/quantstream"
	"github.com/quantstream/quantstream/arrowio"
	"github.com/quantstream/quantstream/pipeline"
	"github.com/quantstream/quantstream/quant"
	"github.com/quantstream/quantstream/stages"
)

// splitExperts cuts, for an export planned by plan (nil: not an export), each decoder
// layer of more than a quarter of maxMemory into expert-aligned groups, so that a
// layer larger than the budget (a DeepSeek-V3 layer is 22.5 GB of experts) still
// converts, two groups in flight: first every tensor that is not a routed expert's
// (attention, norms, router, shared experts), then whole routed experts, in expert
// order, at most maxMemory/4 bytes a group (an expert alone when it is larger).
// Each group goes through the stages on its own; stages.Plan.ExpertSplit says when
// that is exact and what must be read first (readExpertFill). A layer it refuses stays
// whole, and the reason is kept for the budget error (explain); a layer without
// experts is cut the same way into groups of the units stages.Plan.DenseSplit
// gives (a fusion group with its norm, say), packed in order to at most maxMemory/4
// bytes a group (a unit alone when it is larger). A fusion group over that size
// whose members share only some scalar buffers' maximum (stages.FusionGroup) is taken
// apart when supply says each of those buffers can be had before the pipeline runs
// (readFusedAmax). userStages > 0 keeps every layer whole: a caller's stage may need
// one.
func (s *grouping) splitExperts(plan *stages.Plan, userStages int, maxMemory int64, supply func(string) bool) *grouping {
	if plan == nil || maxMemory <= 0 {
		return s
	}
	target := maxMemory / 4
	var out []quantstream.LayerInfo
	var of []int
	split := false
	for i, li := range s.layers {
		if li.Index == quantstream.NonDecoder || layerBytes(li) <= target {
			out, of = append(out, li), append(of, i)
			continue
		}
		dense := !hasExperts(li)
		var err error
		var preread []string
		var units [][]string
		switch {
		case userStages > 0:
			err = fmt.Errorf("%w: layer %d: the conversion has stages of its own, which may need whole layers", stages.ErrNoExpertSplit, li.Index)
		case dense:
			var shared []string
			var kept []string
			units, shared, err = plan.DenseSplit(li.Index, func(fg stages.FusionGroup) bool {
				if fg.Bytes <= target {
					return false
				}
				for _, n := range fg.Shared {
					if !supply(n) {
						kept = append(kept, fmt.Sprintf("%s (they share the maximum of %s, which is not known before the layer is read)", strings.Join(fg.Members, ", "), n))
						return false
					}
				}
				return true
			})
			if len(shared) > 0 {
				if s.fused == nil {
					s.fused = map[int][]string{}
				}
				s.fused[li.Index] = shared
			}
			if len(kept) > 0 {
				if s.together == nil {
					s.together = map[int][]string{}
				}
				s.together[li.Index] = kept
			}
		default:
			preread, err = plan.ExpertSplit(li.Index)
		}
		var groups []quantstream.LayerInfo
		switch {
		case err != nil:
		case dense:
			groups, err = unitGroups(li, units, target)
		default:
			groups = expertGroups(li, target)
		}
		if err != nil {
			if s.noSplit == nil {
				s.noSplit = map[int]error{}
			}
			s.noSplit[li.Index] = err
			out, of = append(out, li), append(of, i)
			continue
		}
		split = true
		if len(preread) > 0 {
			if s.preread == nil {
				s.preread = map[int][]string{}
			}
			s.preread[li.Index] = preread
		}
		for _, g := range groups {
			out, of = append(out, g), append(of, i)
		}
	}
	if split {
		s.whole, s.of, s.layers = s.layers, of, out
	}
	return s
}

// unitGroups packs the units of dense layer li (stages.Plan.DenseSplit), in their
// order, into groups of at most target bytes (a unit alone when it is larger), each
// sorted by name. A tensor of li that no unit names (an earlier stage replaced it)
// is refused: the layer is then kept whole.
func unitGroups(li quantstream.LayerInfo, units [][]string, target int64) ([]quantstream.LayerInfo, error) {
	byName := make(map[string]quantstream.TensorInfo, len(li.Tensors))
	for _, t := range li.Tensors {
		byName[t.Name] = t
	}
	var out []quantstream.LayerInfo
	g := quantstream.LayerInfo{Index: li.Index, Prefix: li.Prefix}
	var n int64
	flush := func() {
		if len(g.Tensors) > 0 {
			slices.SortFunc(g.Tensors, func(a, b quantstream.TensorInfo) int { return cmp.Compare(a.Name, b.Name) })
			out = append(out, g)
		}
		g, n = quantstream.LayerInfo{Index: li.Index, Prefix: li.Prefix}, 0
	}
	for _, u := range units {
		var size int64
		var ts []quantstream.TensorInfo
		for _, name := range u {
			// The export's inputs include what an earlier stage adds (calibration's
			// weight amax, made from the weight of the same module): only the
			// checkpoint's tensors are read.
			if t, ok := byName[name]; ok {
				ts = append(ts, t)
				size += infoBytes(t)
				delete(byName, name)
			}
		}
		if n > 0 && n+size > target {
			flush()
		}
		g.Tensors = append(g.Tensors, ts...)
		n += size
	}
	flush()
	for _, t := range li.Tensors {
		if _, left := byName[t.Name]; left {
			return nil, fmt.Errorf("%w: layer %d: %s is not among the export's inputs (an earlier stage replaces it)", stages.ErrNoExpertSplit, li.Index, t.Name)
		}
	}
	return out, nil
}

// hasExperts reports whether li holds experts in any form (a component "experts":
// routed experts one by one, or a fused container).
func hasExperts(li quantstream.LayerInfo) bool {
	for _, t := range li.Tensors {
		if strings.HasPrefix(t.Name, "experts.") || strings.Contains(t.Name, ".experts.") {
			return true
		}
	}
	return false
}

// expertGroups cuts li into the group of its tensors that are not a routed expert's
// and groups of whole routed experts of at most target bytes, each sorted by name.
func expertGroups(li quantstream.LayerInfo, target int64) []quantstream.LayerInfo {
	type expert struct {
		block string // the prefix up to "experts."
		e     int
		ts    []quantstream.TensorInfo
		size  int64
	}
	rest := quantstream.LayerInfo{Index: li.Index, Prefix: li.Prefix}
	byPrefix := map[string]*expert{}
	var experts []*expert
	for _, t := range li.Tensors {
		prefix, e, ok := stages.RoutedExpert(t.Name)
		if !ok {
			rest.Tensors = append(rest.Tensors, t)
			continue
		}
		x := byPrefix[prefix]
		if x == nil {
			block := strings.TrimSuffix(prefix, fmt.Sprintf("%d.", e))
			x = &expert{block: block, e: e}
			byPrefix[prefix] = x
			experts = append(experts, x)
		}
		x.ts = append(x.ts, t)
		x.size += infoBytes(t)
	}
	slices.SortFunc(experts, func(a, b *expert) int {
		return cmp.Or(cmp.Compare(a.block, b.block), cmp.Compare(a.e, b.e))
	})
	var out []quantstream.LayerInfo
	if len(rest.Tensors) > 0 {
		out = append(out, rest)
	}
	g := quantstream.LayerInfo{Index: li.Index, Prefix: li.Prefix}
	var n int64
	flush := func() {
		if len(g.Tensors) > 0 {
			slices.SortFunc(g.Tensors, func(a, b quantstream.TensorInfo) int { return cmp.Compare(a.Name, b.Name) })
			out = append(out, g)
		}
		g, n = quantstream.LayerInfo{Index: li.Index, Prefix: li.Prefix}, 0
	}
	for _, x := range experts {
		if n > 0 && n+x.size > target {
			flush()
		}
		g.Tensors = append(g.Tensors, x.ts...)
		n += x.size
	}
	flush()
	return out
}

// readExpertFill reads, for each split layer that needs them, the expert input amax
// tensors the MoE fill target is computed from (a few bytes per expert) and hands
// them to plan (stages.Plan.SetExpertFill). It runs before the pipeline starts.
func (s *grouping) readExpertFill(ctx context.Context, ck *arrowio.Checkpoint, mem memory.Allocator, plan *stages.Plan) error {
	for _, idx := range sortedIntKeys(s.preread) {
		li := quantstream.LayerInfo{Index: idx}
		for _, n := range s.preread[idx] {
			t, ok := ck.Lookup(n)
			if !ok {
				return fmt.Errorf("convert: layer %d: expert input amax %s is not in the input", idx, n)
			}
			li.Tensors = append(li.Tensors, t.Info())
		}
		l, err := ck.ReadLayer(ctx, mem, li)
		if err != nil {
			return err
		}
		amax := make(map[string]quant.Tensor, l.Len())
		for _, t := range l.Tensors() {
			amax[t.Name] = t.Tensor
		}
		err = plan.SetExpertFill(idx, amax)
		l.Release()
		if err != nil {
			return fmt.Errorf("layer %d: %w", idx, err)
		}
	}
	return nil
}

// readFusedAmax gives each split layer whose fusion groups are exported apart the
// buffers those groups share (stages.Plan.SetFusedAmax): a calibration state's
// scalars read from the input, or weight amaxes the calibration stage cs computes in
// a read-only pass over the weights (calibrateStage.passAmax), never holding one. It
// runs before the pipeline starts.
func (s *grouping) readFusedAmax(ctx context.Context, ck *arrowio.Checkpoint, mem memory.Allocator, plan *stages.Plan, cs *calibrateStage) error {
	var buf []byte
	for _, idx := range sortedIntKeys(s.fused) {
		amax := map[string]quant.Tensor{}
		li := quantstream.LayerInfo{Index: idx}
		for _, n := range s.fused[idx] {
			if t, ok := ck.Lookup(n); ok {
				li.Tensors = append(li.Tensors, t.Info())
				continue
			}
			if cs == nil {
				return fmt.Errorf("convert: layer %d: %s, shared by a fusion group exported apart, is not in the input", idx, n)
			}
			if buf == nil {
				buf = make([]byte, passChunk)
			}
			a, err := cs.passAmax(ctx, ck, n, buf)
			if err != nil {
				return fmt.Errorf("layer %d: %w", idx, err)
			}
			amax[n] = a
		}
		var l *quantstream.Layer
		if len(li.Tensors) > 0 {
			var err error
			if l, err = ck.ReadLayer(ctx, mem, li); err != nil {
				return err
			}
			for _, t := range l.Tensors() {
				amax[t.Name] = t.Tensor
			}
		}
		err := plan.SetFusedAmax(idx, amax)
		if l != nil {
			l.Release()
		}
		if err != nil {
			return fmt.Errorf("layer %d: %w", idx, err)
		}
	}
	return nil
}

// outputTensors is the output's tensor list in the order the writer lays shards out
// from: each group's final tensors in source order, except that the groups of a split
// layer give way to the whole layer's final tensors, planned through the same stages,
// so that shards and bytes do not depend on the split. It checks that the groups
// together produce exactly the whole layer's tensors.
func (s *grouping) outputTensors(plan *pipeline.Plan, stgs []quantstream.Stage) ([]quantstream.TensorInfo, error) {
	if s.of == nil {
		return finalTensors(plan), nil
	}
	if len(plan.Layers) != len(s.of) {
		return nil, fmt.Errorf("%w: %d groups planned, %d read", pipeline.ErrPlanMismatch, len(plan.Layers), len(s.of))
	}
	last := func(lp pipeline.LayerPlan) []quantstream.TensorInfo { return lp.Steps[len(lp.Steps)-1] }
	var out []quantstream.TensorInfo
	for i := 0; i < len(plan.Layers); {
		j := i + 1
		for j < len(plan.Layers) && s.of[j] == s.of[i] {
			j++
		}
		if j == i+1 {
			out = append(out, last(plan.Layers[i])...)
			i = j
			continue
		}
		w := s.whole[s.of[i]]
		wp, err := pipeline.NewPlan([]quantstream.LayerInfo{w}, stgs...)
		if err != nil {
			return nil, err
		}
		want := last(wp.Layers[0])
		got := map[string]quantstream.TensorInfo{}
		for _, lp := range plan.Layers[i:j] {
			for _, t := range last(lp) {
				got[t.Name] = t
			}
		}
		if len(got) != len(want) {
			return nil, fmt.Errorf("%w: layer %d: its groups produce %d tensors, the whole layer %d", pipeline.ErrPlanMismatch, w.Index, len(got), len(want))
		}
		for _, t := range want {
			g, ok := got[t.Name]
			if !ok || g.DType != t.DType || !slices.Equal(g.Shape, t.Shape) {
				return nil, fmt.Errorf("%w: layer %d: its groups produce %s %v %v, the whole layer %s %v", pipeline.ErrPlanMismatch, w.Index, t.Name, g.DType, g.Shape, t.DType, t.Shape)
			}
		}
		out = append(out, want...)
		i = j
	}
	return out, nil
}

// extraGroups is how many more groups than layers the expert split made.
func (s *grouping) extraGroups() int {
	if s.of == nil {
		return 0
	}
	return len(s.layers) - len(s.whole)
}

// explain adds to a budget error why layers over the budget were kept whole, or
// fusion groups kept together.
func (s *grouping) explain(err error) error {
	if err == nil || !errors.Is(err, pipeline.ErrOverBudget) {
		return err
	}
	if len(s.together) > 0 {
		keys := sortedIntKeys(s.together)
		err = fmt.Errorf("%w (fusion group kept together in layer %d: %s)", err, keys[0], s.together[keys[0]][0])
	}
	if len(s.noSplit) == 0 {
		return err
	}
	keys := sortedIntKeys(s.noSplit)
	why := s.noSplit[keys[0]]
	if len(keys) > 1 {
		return fmt.Errorf("%w (not cut into groups: %w; and %d more layers)", err, why, len(keys)-1)
	}
	return fmt.Errorf("%w (not cut into groups: %w)", err, why)
}

// groupName names a group of a split layer for the plan's printout ("" when lp is
// a layer whole): "layer 3 experts 0-15", or "layer 3 without experts".
func groupName(layers []pipeline.LayerPlan, i int) string {
	lp := layers[i]
	if lp.Prefix == "" || ((i == 0 || layers[i-1].Index != lp.Index) && (i+1 == len(layers) || layers[i+1].Index != lp.Index)) {
		return ""
	}
	lo, hi := -1, -1
	for _, t := range lp.Steps[0] {
		if _, e, ok := stages.RoutedExpert(t.Name); ok {
			if lo < 0 || e < lo {
				lo = e
			}
			hi = max(hi, e)
		}
	}
	if lo < 0 {
		for k := range layers {
			if layers[k].Index != lp.Index {
				continue
			}
			for _, t := range layers[k].Steps[0] {
				if _, _, ok := stages.RoutedExpert(t.Name); ok {
					return fmt.Sprintf("layer %d w/o experts", lp.Index)
				}
			}
		}
		part := 1
		for k := i - 1; k >= 0 && layers[k].Index == lp.Index; k-- {
			part++
		}
		return fmt.Sprintf("layer %d part %d", lp.Index, part)
	}
	return fmt.Sprintf("layer %d experts %d-%d", lp.Index, lo, hi)
}

func sortedIntKeys[V any](m map[int]V) []int {
	keys := make([]int, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
