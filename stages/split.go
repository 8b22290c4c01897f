package stages

import (
	"errors"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"strings"

	quantstream "github.com/quantstream/quantstream"
	"github.com/quantstream/quantstream/quant"
)

// ErrNoExpertSplit says why a decoder layer cannot be exported in groups of experts.
var ErrNoExpertSplit = errors.New("stages: layer cannot be exported in groups of experts")

// routedRE finds a routed expert's "experts.E." component ("shared_experts.0." is
// not one: the component must be exactly "experts").
var routedRE = regexp.MustCompile(`(?:^|\.)experts\.(\d{1,9})\.`)

// RoutedExpert returns, for a tensor of a routed expert (named "….experts.E.…"), the
// expert's prefix ("model.layers.3.mlp.experts.17.") and E; ok is false for every
// other tensor (attention, norms, router, shared experts, fused expert containers).
// Every tensor of one expert's modules, quantizer buffers included, has its prefix.
func RoutedExpert(name string) (prefix string, expert int, ok bool) {
	m := routedRE.FindStringSubmatchIndex(name)
	if m == nil {
		return "", 0, false
	}
	e, err := strconv.Atoi(name[m[2]:m[3]])
	if err != nil {
		return "", 0, false
	}
	return name[:m[1]], e, true
}

// expertSplit is what Process needs to export one group of a split layer exactly:
// the MoE input-amax fill targets of the whole layer, by batch.
type expertSplit struct {
	preread []string            // the amax tensors the targets are computed from
	static  map[fillKey]bool    // batches with a quantizer that can be filled
	targets map[fillKey]float32 // nil until known
}

// ExpertSplit prepares decoder layer index for an export in groups: one group with
// every tensor that is not a routed expert's (RoutedExpert), and groups of whole
// routed experts. Each group is then planned and processed on its own (Stage.Plan and
// Process per group), with output bytes identical to the whole layer's, which holds
// because every export step but three is local to a module or to one expert's gate
// and up projections, and the three are handled here:
//
//   - AWQ resmoothing over all experts of a projection (nvfp4_awq, int4_awq,
//     w4a8_awq, nvfp4_svdquant models), and
//   - fused experts (one [E, 2F, H] tensor) or other expert containers:
//     the layer is refused (an error wrapping ErrNoExpertSplit);
//   - the MoE input-amax fill (layer_utils.set_expert_quantizer_amax), whose target is a max over every expert
//     of a projection: when some expert has an enabled, static input quantizer, its
//     value depends on the data, so ExpertSplit returns the names of the layer's
//     expert input amax tensors (scalars or tiny) that SetExpertFill must be given
//     before any group is processed; with none (weight-only or dynamic inputs) no
//     fill can happen and nothing is to be read.
//
// ExpertSplit and SetExpertFill must be called before the Plan's Stage processes any
// layer; the Plan is read-only afterwards. Process refuses a group that needs a fill
// whose target it was not given.
func (p *Plan) ExpertSplit(index int) (preread []string, err error) {
	lp := p.layers[index]
	if index == quantstream.NonDecoder || lp == nil {
		return nil, fmt.Errorf("%w: no decoder layer %d", ErrNoExpertSplit, index)
	}
	if strings.Contains(p.ModelFormat, "awq") || p.ModelFormat == "nvfp4_svdquant" {
		return nil, fmt.Errorf("%w: layer %d: a %s export resmooths each projection over all experts", ErrNoExpertSplit, index, p.ModelFormat)
	}
	routed := 0
	for _, t := range lp.Inputs {
		if _, _, ok := RoutedExpert(t.Name); ok {
			routed++
			continue
		}
		if i := strings.Index(t.Name, "experts."); i >= 0 && (i == 0 || t.Name[i-1] == '.') {
			return nil, fmt.Errorf("%w: layer %d: %s belongs to an experts container (fused or batched experts are one tensor)", ErrNoExpertSplit, index, t.Name)
		}
	}
	if routed == 0 {
		return nil, fmt.Errorf("%w: layer %d has no routed experts", ErrNoExpertSplit, index)
	}
	_, mods, err := p.splitModules(index, lp.Inputs)
	if err != nil {
		return nil, err
	}
	for _, m := range mods {
		// Each module's tensors must travel together: a routed expert's all under its
		// prefix, any other module's none.
		prefix, _, routed := RoutedExpert(m.Weight)
		if routed != (m.Expert >= 0) || (routed && !strings.HasPrefix(m.Name, prefix)) {
			return nil, fmt.Errorf("%w: layer %d: module %s is not one routed expert's", ErrNoExpertSplit, index, m.Name)
		}
	}
	keys, batches := fillBatches(mods)
	s := &expertSplit{static: map[fillKey]bool{}}
	for _, k := range keys {
		static := false
		for _, m := range batches[k] {
			static = static || !m.IQ.Dynamic
		}
		if !static {
			continue // no quantizer of the batch can be filled
		}
		s.static[k] = true
		for _, m := range batches[k] {
			if m.IAmax != "" {
				s.preread = append(s.preread, m.IAmax)
			}
		}
		if s.targets == nil {
			s.targets = map[fillKey]float32{}
		}
		// A batch without any amax needs no data: its target is 0.5.
		s.targets[k] = 0.5
	}
	if p.splits == nil {
		p.splits = map[int]*expertSplit{}
	}
	p.splits[index] = s
	if len(s.preread) > 0 {
		// Until SetExpertFill, a group needing a fill is refused.
		s.targets = nil
	}
	return s.preread, nil
}

// SetExpertFill computes the MoE input-amax fill targets of split decoder layer index
// from amax, which holds at least the tensors ExpertSplit named, exactly as the whole
// layer's export would (the same buffers, checked the same way, reduced in the same
// order). amax is not retained.
func (p *Plan) SetExpertFill(index int, amax map[string]quant.Tensor) error {
	s := p.splits[index]
	if s == nil {
		return fmt.Errorf("%w: layer %d was not split (ExpertSplit)", ErrPlanMismatch, index)
	}
	ts, err := headerSet(p.layers[index].Inputs)
	if err != nil {
		return err
	}
	ts.data = make(map[string]quant.Tensor, len(s.preread))
	for _, n := range s.preread {
		t, ok := amax[n]
		if !ok {
			return fmt.Errorf("%w: layer %d: no %s to compute the expert input amax fill from", ErrPlanMismatch, index, n)
		}
		h := ts.hdr[n]
		if t.DType != h.DType || !slices.Equal(t.Shape, h.Shape) {
			return fmt.Errorf("%w: tensor %s is %v %v, planned %v %v", ErrPlanMismatch, n, t.DType, t.Shape, h.DType, h.Shape)
		}
		ts.data[n] = t
	}
	if err := checkBuffers(ts); err != nil {
		return err
	}
	mods, _, err := p.discover(ts)
	if err != nil {
		return err
	}
	keys, batches := fillBatches(mods)
	targets := map[fillKey]float32{}
	for _, k := range keys {
		if _, static := s.static[k]; !static {
			continue
		}
		v, err := fillTarget(ts, batches[k])
		if err != nil {
			return err
		}
		targets[k] = v
	}
	s.targets = targets
	return nil
}

// DenseSplit returns, for dense decoder layer index (no experts of any kind), its
// input tensors cut into units whose exports are independent of each other, so that
// a layer larger than the memory budget can be exported in groups of whole units,
// each group planned and processed on its own with output bytes identical to the
// whole layer's. Every export step of such a layer is local to one module except
// those that read or write across modules, and those keep their modules together:
//
//   - a fusion group of the family (requantize_resmooth_fused_llm_layers: the shared
//     amax maximum, AWQ resmoothing) with the norm it folds a pre_quant_scale into
//     (fuse_prequant_layernorm), unless apart takes it apart (below);
//   - a pre_quant_scale fold from one linear into another (fuse_prequant_to_linear,
//     which run applies to nvfp4_awq exports);
//   - a tensor of no module (a norm no fusion group names stands alone; any other,
//     such as an attention BMM quantizer's amax, goes with every module under its
//     parent).
//
// A fusion group whose members share only the maximum of some scalar buffers
// (FusionGroup) is exported member by member, its norm alone, when apart (nil:
// never) says so; shared then lists the buffers whose values SetFusedAmax must be
// given before any group of the layer is processed.
//
// Units are sorted by their first tensor name, tensors within a unit by name. A
// layer with experts, or whose modules cannot be found, is refused with an error
// wrapping ErrNoExpertSplit (ExpertSplit handles experts).
func (p *Plan) DenseSplit(index int, apart func(FusionGroup) bool) (units [][]string, shared []string, err error) {
	lp := p.layers[index]
	if index == quantstream.NonDecoder || lp == nil {
		return nil, nil, fmt.Errorf("%w: no decoder layer %d", ErrNoExpertSplit, index)
	}
	for _, t := range lp.Inputs {
		if i := strings.Index(t.Name, "experts."); i >= 0 && (i == 0 || t.Name[i-1] == '.' || t.Name[i-1] == '_') {
			return nil, nil, fmt.Errorf("%w: layer %d: %s is an expert's", ErrNoExpertSplit, index, t.Name)
		}
	}
	ts, mods, err := p.splitModules(index, lp.Inputs)
	if err != nil {
		return nil, nil, err
	}
	names := sortedKeys(ts.hdr)
	// Union-find over tensor names.
	up := make(map[string]string, len(names))
	var find func(string) string
	find = func(n string) string {
		if up[n] == "" || up[n] == n {
			return n
		}
		r := find(up[n])
		up[n] = r
		return r
	}
	union := func(a, b string) {
		if ra, rb := find(a), find(b); ra != rb {
			up[max(ra, rb)] = min(ra, rb)
		}
	}
	// owner is the module (longest name that is a component prefix) of each tensor.
	modNames := make([]string, 0, len(mods))
	for _, m := range mods {
		if m.BMM || m.Expert >= 0 {
			return nil, nil, fmt.Errorf("%w: layer %d: module %s is an expert's", ErrNoExpertSplit, index, m.Name)
		}
		modNames = append(modNames, m.Name)
	}
	owner := func(t string) string {
		best := ""
		for _, m := range modNames {
			if strings.HasPrefix(t, m+".") && len(m) > len(best) {
				best = m
			}
		}
		return best
	}
	first := map[string]string{} // a tensor of each module, norm or parent
	join := func(key, t string) {
		if f, ok := first[key]; ok {
			union(f, t)
		} else {
			first[key] = t
		}
	}
	norms := map[string]bool{}
	var groups [][]string
	// Fusion groups are taken over every module, quantized or not, of the family's
	// rules: a superset of the groups any format fuses.
	var fa map[string]*FusionGroup
	if apart != nil {
		fa = p.fusionApart(lp, ts, mods)
	}
	decided := map[*FusionGroup]bool{}
	for _, g := range p.Arch.FusedGroups(lp.Prefix, modNames) {
		if g.Norm != "" {
			norms[g.Norm] = true
		}
		if fg := fa[g.Members[0]]; fg != nil && slices.Equal(fg.Members, g.Members) {
			a, ok := decided[fg]
			if !ok {
				a = apart(*fg)
				decided[fg] = a
				if a {
					shared = append(shared, fg.Shared...)
				}
			}
			if a {
				continue // each member, and the norm, a unit of its own
			}
		}
		members := slices.Clone(g.Members)
		if g.Norm != "" {
			members = append(members, "norm:"+g.Norm)
		}
		groups = append(groups, members)
	}
	for _, r := range p.Arch.Prequant {
		if !strings.Contains(p.ModelFormat, "nvfp4_awq") {
			break // run folds linears into linears for these exports only
		}
		src, tgt := lp.Prefix+r.Parent+"."+r.Source, lp.Prefix+r.Parent+"."+r.Target
		if slices.Contains(modNames, src) && slices.Contains(modNames, tgt) {
			groups = append(groups, []string{src, tgt})
		}
	}
	var loose []string
	for _, t := range names {
		if o := owner(t); o != "" {
			join(o, t)
			continue
		}
		n, _ := splitLast(t)
		parent, _ := splitLast(n)
		switch {
		case norms[n]:
			join("norm:"+n, t)
		case parent+"." == lp.Prefix || !strings.HasPrefix(t, lp.Prefix):
			join("tensor:"+n, t)
		default:
			loose = append(loose, t)
		}
	}
	for _, g := range groups {
		for _, k := range g[1:] {
			if a, ok := first[g[0]]; ok {
				if b, ok := first[k]; ok {
					union(a, b)
				}
			}
		}
	}
	for _, t := range loose {
		// A tensor of no module below the layer goes with every module of its parent.
		parent, _ := splitLast(t)
		for {
			var ok bool
			parent, _ = splitLast(parent)
			if parent == "" || parent+"." == lp.Prefix || !strings.HasPrefix(parent+".", lp.Prefix) {
				parent = ""
				break
			}
			for _, m := range modNames {
				if strings.HasPrefix(m, parent+".") {
					union(first[m], t)
					ok = true
				}
			}
			if ok {
				break
			}
		}
		if parent == "" {
			// Nothing to attach it to: the layer is kept whole.
			return nil, nil, fmt.Errorf("%w: layer %d: tensor %s belongs to no module", ErrNoExpertSplit, index, t)
		}
	}
	byRoot := map[string][]string{}
	var roots []string
	for _, t := range names {
		r := find(t)
		if _, ok := byRoot[r]; !ok {
			roots = append(roots, r)
		}
		byRoot[r] = append(byRoot[r], t)
	}
	out := make([][]string, 0, len(roots))
	for _, r := range roots {
		out = append(out, byRoot[r])
	}
	return out, shared, nil
}

// splitModules discovers the modules of one decoder layer's inputs for a split (by
// experts or by modules); fused experts are one tensor and cannot be split.
func (p *Plan) splitModules(index int, inputs []quantstream.TensorInfo) (*tensorSet, []*Module, error) {
	ts, err := headerSet(inputs)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: layer %d: %w", ErrNoExpertSplit, index, err)
	}
	mods, fused, err := p.discover(ts)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: layer %d: %w", ErrNoExpertSplit, index, err)
	}
	if len(fused) > 0 {
		return nil, nil, fmt.Errorf("%w: layer %d: fused experts %s", ErrNoExpertSplit, index, fused[0].name)
	}
	return ts, mods, nil
}
