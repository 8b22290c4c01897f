package stages

import (
	"fmt"
	"slices"
	"strings"

	quantstream "github.com/quantstream/quantstream"
	"github.com/quantstream/quantstream/quant"
)

// A FusionGroup is a fusion group of a dense decoder layer whose members DenseSplit
// can export in separate groups: what ties their exports together is only the group
// maximum of a few scalar buffers (preprocess_linear_fusion's shared input amax,
// per-tensor weight amax, static NVFP4 global amax, W4A8 second-stage amax), no
// pre_quant_scale (AWQ resmoothing rescales the weights, fuse_prequant_layernorm
// changes the norm). Members are exported apart once the whole group's maxima are
// known (SetFusedAmax), read before the layer from a calibration state or computed
// by a read-only pass over the weights (a per-tensor amax is a maximum, so it can be
// taken in pieces).
type FusionGroup struct {
	Members []string // module names, in the family's order
	Bytes   int64    // data bytes of the members' tensors
	// Shared names every member's buffer that becomes the group maximum, sorted; SetFusedAmax
	// must be given each of them.
	Shared []string
}

// fusedApart holds the group maxima of one split layer's fusion groups exported
// apart: by buffer name, and the modules they cover.
type fusedApart struct {
	max     map[string]float32
	members map[string]bool
}

// noteFusion records, for whole decoder layer lp planned with modules mods, the
// fusion group each quantized module is exported with (exportApart).
func (p *Plan) noteFusion(lp *LayerPlan, mods []*Module) {
	if lp.Index == quantstream.NonDecoder {
		return
	}
	byName := map[string]*Module{}
	for _, m := range mods {
		byName[m.ID()] = m
	}
	for _, g := range p.fusionGroups(lp.Prefix, byName) {
		if len(g.mods) < 2 {
			continue
		}
		if lp.fusedOf == nil {
			lp.fusedOf, lp.fusedSize = map[string]string{}, map[string]int{}
		}
		key := g.mods[0].ID()
		for _, m := range g.mods {
			lp.fusedOf[m.ID()] = key
		}
		lp.fusedSize[key] = len(g.mods)
	}
}

// exportApart prepares the modules of one group of a split decoder layer whose
// fusion group is not all in the group (DenseSplit exported its members apart):
// each shared buffer takes the whole group's maximum (SetFusedAmax), which
// preprocess_linear_fusion over the members present then leaves as it is, so that
// each member exports the bytes the whole layer would. A module exported apart
// without that maximum is refused, never exported with its own scales.
func (p *Plan) exportApart(ts *tensorSet, index int, mods []*Module) error {
	whole := p.layers[index]
	if index == quantstream.NonDecoder || whole == nil || len(whole.fusedOf) == 0 || ts.planning() {
		return nil
	}
	present := map[string]int{}
	for _, m := range mods {
		if k, ok := whole.fusedOf[m.ID()]; ok && m.Format != "" && !m.FromFused {
			present[k]++
		}
	}
	ap := p.apart[index]
	for _, m := range mods {
		k, ok := whole.fusedOf[m.ID()]
		if !ok || m.Format == "" || m.FromFused || present[k] == whole.fusedSize[k] {
			continue
		}
		if ap == nil || !ap.members[m.ID()] {
			return fmt.Errorf("%w: module %s is exported apart from its fusion group without the group's maxima (SetFusedAmax)", ErrPlanMismatch, m.Name)
		}
		if m.PQS != "" {
			return fmt.Errorf("%w: module %s has a pre_quant_scale and cannot be exported apart from its fusion group", ErrPlanMismatch, m.Name)
		}
		for _, name := range []string{m.IAmax, m.WAmax, m.WAmax1, m.GAmax} {
			v, ok := ap.max[name]
			if name == "" || !ok {
				continue
			}
			h := ts.hdr[name]
			if err := ts.setFloats(name, h.DType, h.Shape, []float32{v}); err != nil {
				return err
			}
		}
	}
	return nil
}

// fusionApart returns the fusion groups of decoder layer lp (modules mods, headers
// ts) whose members can be exported apart (FusionGroup), keyed by each member's
// name. Unquantized modules of a family's group share nothing: they are keyed too.
// Nothing goes apart in an AWQ or SVDQuant export (pre_quant_scales are folded
// across modules).
func (p *Plan) fusionApart(lp *LayerPlan, ts *tensorSet, mods []*Module) map[string]*FusionGroup {
	if strings.Contains(p.ModelFormat, "awq") || strings.Contains(p.ModelFormat, "svdquant") {
		return nil
	}
	byName := map[string]*Module{}
	all := map[string]*Module{}
	var names []string
	for _, m := range mods {
		byName[m.ID()] = m
		all[m.Name] = m
		names = append(names, m.Name)
	}
	runGroup := map[string]fusionGroup{}
	for _, g := range p.fusionGroups(lp.Prefix, byName) {
		for _, m := range g.mods {
			runGroup[m.Name] = g
		}
	}
	bytesOf := func(module string) int64 {
		var n int64
		for name, h := range ts.hdr {
			if strings.HasPrefix(name, module+".") {
				b, _ := h.DataBytes()
				n += b
			}
		}
		return n
	}
	out := map[string]*FusionGroup{}
	for _, g := range p.Arch.FusedGroups(lp.Prefix, names) {
		fg := &FusionGroup{Members: slices.Clone(g.Members)}
		ok := true
		seen := map[string]bool{}
		for _, n := range g.Members {
			m := all[n]
			if m == nil || m.PQS != "" || m.BMM || m.Expert >= 0 {
				ok = false
				break
			}
			fg.Bytes += bytesOf(n)
			rg, fused := runGroup[n]
			if !fused || len(rg.mods) < 2 || seen[rg.mods[0].Name] {
				continue
			}
			seen[rg.mods[0].Name] = true
			for _, rm := range rg.mods {
				if rm.PQS != "" {
					ok = false
				}
			}
			for _, buf := range fusedShares(ts, rg.mods) {
				for _, rm := range rg.mods {
					if b := buf(rm); b != "" {
						fg.Shared = append(fg.Shared, b)
					}
				}
			}
		}
		if !ok {
			continue
		}
		slices.Sort(fg.Shared)
		fg.Shared = slices.Compact(fg.Shared)
		for _, n := range g.Members {
			out[n] = fg
		}
	}
	return out
}

// SetFusedAmax gives split decoder layer index the buffers amax, which hold at least
// the Shared buffers of every FusionGroup DenseSplit exported apart, as the whole
// layer's export reads them (a calibration state's, or the calibrated weight amax);
// it computes each group's maxima from them exactly as preprocess_linear_fusion
// does (the same buffers, checked the same way, reduced in the same order). A group
// none of whose shared buffers are given stays unregistered, and Process refuses
// its members apart. amax is not retained. Call it before the Plan's Stage
// processes any layer; the Plan is read-only afterwards.
func (p *Plan) SetFusedAmax(index int, amax map[string]quant.Tensor) error {
	lp := p.layers[index]
	if index == quantstream.NonDecoder || lp == nil {
		return fmt.Errorf("%w: no decoder layer %d", ErrPlanMismatch, index)
	}
	ts, err := headerSet(lp.Inputs)
	if err != nil {
		return err
	}
	ts.data = make(map[string]quant.Tensor, len(amax))
	for n, t := range amax {
		h, ok := ts.hdr[n]
		if !ok {
			return fmt.Errorf("%w: layer %d has no tensor %s", ErrPlanMismatch, index, n)
		}
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
	byName := map[string]*Module{}
	for _, m := range mods {
		byName[m.ID()] = m
	}
	ap := &fusedApart{max: map[string]float32{}, members: map[string]bool{}}
	for _, g := range p.fusionGroups(lp.Prefix, byName) {
		if len(g.mods) < 2 || slices.ContainsFunc(g.mods, func(m *Module) bool { return m.PQS != "" }) {
			continue
		}
		bufs := fusedShares(ts, g.mods)
		given := true
		for _, buf := range bufs {
			for _, m := range g.mods {
				if _, ok := amax[buf(m)]; buf(m) == "" || !ok {
					given = false
				}
			}
		}
		if !given {
			continue
		}
		for _, buf := range bufs {
			best, err := groupMax(ts, g.mods, buf)
			if err != nil {
				return err
			}
			for _, m := range g.mods {
				ap.max[buf(m)] = best
			}
		}
		for _, m := range g.mods {
			ap.members[m.ID()] = true
		}
	}
	if p.apart == nil {
		p.apart = map[int]*fusedApart{}
	}
	p.apart[index] = ap
	return nil
}
