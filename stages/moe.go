package stages

import (
	"fmt"
	"slices"
	"strconv"
	"strings"

	quantstream "github.com/quantstream/quantstream"
	"github.com/quantstream/quantstream/quant"
)

// overlay adds quantizers for the per-expert modules cut out of fused experts.
type overlay struct {
	Quantizers
	extra map[string]*quant.Quantizer
}

func (o *overlay) Get(name string) (*quant.Quantizer, bool) {
	if q, ok := o.extra[name]; ok {
		return q, true
	}
	return o.Quantizers.Get(name)
}

// fusedExperts is a transformers-5 experts container: gate_up_proj [E, 2F, H] (or
// up_proj [E, F, H] when not gated) and down_proj [E, H, F], one weight quantizer per
// expert in "<proj>_weight_quantizers.<e>" and one input quantizer per projection.
type fusedExperts struct {
	name        string // "model.layers.0.mlp.experts"
	first       string // "gate_up_proj" or "up_proj"
	gated       bool
	experts     int
	first3, dn3 []int64
}

// findFused finds fused expert containers among the layer's tensors. The expert
// count of a container comes from its header, so it is checked before anything is
// sized by it: against numExperts (config.json's num_experts / num_local_experts,
// 0 when the config has none) and against the number of per-expert weight
// quantizers; no dimension may be zero. When the family does not list the fused_3d
// layout (allowed false), the containers are returned unchecked, for the layout
// refusal (checkExpertLayout) to name them.
func findFused(ts *tensorSet, qs Quantizers, numExperts int64, allowed bool) ([]*fusedExperts, error) {
	var out []*fusedExperts
	for _, n := range sortedKeys(ts.hdr) {
		container, attr := splitLast(n)
		if !strings.HasSuffix(container, "experts") || (attr != "gate_up_proj" && attr != "up_proj") {
			continue
		}
		if attr == "up_proj" && ts.has(container+".gate_up_proj") {
			continue
		}
		// Singular quantizers mark batched-matmul experts (bmm.go), not fused ones.
		if _, plural := qs.Get(container + "." + attr + "_weight_quantizers.0"); !plural {
			continue
		}
		f := &fusedExperts{name: container, first: attr, gated: attr == "gate_up_proj"}
		if !allowed {
			out = append(out, f)
			continue
		}
		f.first3 = ts.hdr[n].Shape
		dn, ok := ts.hdr[container+".down_proj"]
		if !ok || len(f.first3) != 3 || len(dn.Shape) != 3 || dn.Shape[0] != f.first3[0] {
			return nil, fmt.Errorf("%w: fused experts %s: %s %v with down_proj %v", ErrIncomplete, container, attr, f.first3, dn.Shape)
		}
		if f.gated && f.first3[1]%2 != 0 {
			return nil, fmt.Errorf("%w: fused experts %s: gate_up_proj rows %d not even", ErrShape, container, f.first3[1])
		}
		f.dn3 = dn.Shape
		// The export cuts gate_up_proj [E, 2I, H] into rows and keeps down_proj's
		// [E, H, I] per expert (unified_export_hf._export_fused_experts): a down_proj of
		// another orientation (a batched-matmul [E, I, H]) would be written with its
		// axes swapped, so the pair must agree on H and I.
		k := int64(1)
		if f.gated {
			k = 2
		}
		if f.first3[2] != f.dn3[1] || f.first3[1] != k*f.dn3[2] {
			want := "up_proj [E, I, H] / down_proj [E, H, I]"
			if f.gated {
				want = "gate_up_proj [E, 2I, H] / down_proj [E, H, I]"
			}
			return nil, fmt.Errorf("%w: fused experts %s: %s %v and down_proj %v are not %s (one weight quantizer per expert, <proj>_weight_quantizers.<e>, marks the transformers-5 fused layout): check the checkpoint and the quantizer table", ErrShape, container, attr, f.first3, f.dn3, want)
		}
		if err := checkExpertCount(container, attr, f.first3, dn.Shape, qs, numExperts); err != nil {
			return nil, err
		}
		f.experts = int(f.first3[0])
		out = append(out, f)
	}
	return out, nil
}

// checkExpertCount validates a fused experts container's shapes before they size
// anything: no zero dimension, the expert count of config.json (when it says), and
// one "<attr>_weight_quantizers.<e>" per expert for both projections.
func checkExpertCount(container, attr string, first, down []int64, qs Quantizers, numExperts int64) error {
	for _, d := range append(slices.Clone(first), down...) {
		if d <= 0 {
			return fmt.Errorf("%w: fused experts %s: %s %v, down_proj %v: zero-size dimension", ErrShape, container, attr, first, down)
		}
	}
	e := first[0]
	if numExperts > 0 && e != numExperts {
		return fmt.Errorf("%w: fused experts %s.%s has %d experts, config.json says %d", ErrShape, container, attr, e, numExperts)
	}
	for _, a := range []string{attr, "down_proj"} {
		prefix := container + "." + a + "_weight_quantizers."
		n := countIndexed(qs, prefix, e)
		if n != e {
			return fmt.Errorf("%w: fused experts %s.%s has %d experts, the quantizer table %d %s<e> entries", ErrShape, container, a, e, n, prefix)
		}
	}
	return nil
}

// countIndexed counts prefix+"0", prefix+"1", ... in qs, stopping after limit+1 so
// that a hostile count costs nothing.
func countIndexed(qs Quantizers, prefix string, limit int64) int64 {
	var n int64
	for n <= limit {
		if _, ok := qs.Get(prefix + strconv.FormatInt(n, 10)); !ok {
			break
		}
		n++
	}
	return n
}

type expertSlice struct {
	proj    string // gate_proj, up_proj, down_proj
	src     string // fused attribute: gate_up_proj, up_proj, down_proj
	row0    int64
	rows    int64
	cols    int64
	srcRows int64
}

func (f *fusedExperts) slices() []expertSlice {
	r, c := f.first3[1], f.first3[2]
	var s []expertSlice
	if f.gated {
		s = append(s, expertSlice{"gate_proj", f.first, 0, r / 2, c, r}, expertSlice{"up_proj", f.first, r / 2, r / 2, c, r})
	} else {
		s = append(s, expertSlice{"up_proj", f.first, 0, r, c, r})
	}
	return append(s, expertSlice{"down_proj", "down_proj", 0, f.dn3[1], f.dn3[2], f.dn3[1]})
}

// expand replaces the fused tensors and their quantizer buffers by per-expert weights
// "<name>.<e>.<proj>.weight" with weight and input amax buffers, and registers the
// per-expert quantizers in ov (unified_export_hf._export_fused_experts). Amax rules: a missing or all-zero first-projection
// amax becomes max|gate_up_proj[e]| shared by gate and up; a per-channel or per-block
// amax is split by rows in proportion; a still-missing or zero amax becomes max|slice|.
func (f *fusedExperts) expand(ts *tensorSet, qs Quantizers, ov *overlay) error {
	for e := range f.experts {
		es := strconv.Itoa(e)
		// The first projection's amax, shared by its halves.
		firstQ := f.name + "." + f.first + "_weight_quantizers." + es
		var firstAmax []float32
		var firstAmaxHdr quantstream.TensorInfo
		if q, _ := qs.Get(firstQ); hasQuant(q) && !ts.planning() {
			if ts.has(firstQ + "._amax") {
				v, err := ts.floats(firstQ + "._amax")
				if err != nil {
					return err
				}
				firstAmax, firstAmaxHdr = v, ts.hdr[firstQ+"._amax"]
			}
			if allZero(firstAmax) {
				w, err := f.expert(ts, f.first, e, 0, f.first3[1], f.first3[1], f.first3[2])
				if err != nil {
					return err
				}
				firstAmax = []float32{absMax(w)}
				firstAmaxHdr = quantstream.TensorInfo{DType: quant.F32}
			}
		}
		for _, sl := range f.slices() {
			mod := f.name + "." + es + "." + sl.proj
			wqName := f.name + "." + sl.src + "_weight_quantizers." + es
			iqName := f.name + "." + sl.src + "_input_quantizer"
			wq, okW := qs.Get(wqName)
			iq, okI := qs.Get(iqName)
			if okW {
				c := *wq // deep enough: the fields a stage reads are values or shared read-only
				ov.extra[mod+".weight_quantizer"] = &c
			}
			if okI {
				ov.extra[mod+".input_quantizer"] = iq
			}
			wdt := ts.hdr[f.name+"."+sl.src].DType
			ts.setHeader(mod+".weight", wdt, []int64{sl.rows, sl.cols})
			if hasQuant(wq) {
				var shape []int64
				if h, ok := ts.hdr[wqName+"._amax"]; ok && len(h.Shape) >= 1 {
					shape = splitRowsShape(h.Shape, sl.row0, sl.rows, sl.srcRows)
				}
				ts.setHeader(mod+".weight_quantizer._amax", quant.F32, shape)
				// A static NVFP4 quantizer's global amax goes to gate and up alike
				// (_export_fused_experts deep-copies the quantizer).
				if h, ok := ts.hdr[wqName+"._global_amax"]; ok {
					ts.setHeader(mod+".weight_quantizer._global_amax", h.DType, h.Shape)
					if !ts.planning() {
						ts.data[mod+".weight_quantizer._global_amax"] = ts.data[wqName+"._global_amax"]
					}
				}
			}
			if okI && ts.has(iqName+"._amax") {
				h := ts.hdr[iqName+"._amax"]
				ts.setHeader(mod+".input_quantizer._amax", h.DType, h.Shape)
			}
			if ts.planning() {
				continue
			}
			w, err := f.expert(ts, sl.src, e, sl.row0, sl.rows, sl.srcRows, sl.cols)
			if err != nil {
				return err
			}
			ts.data[mod+".weight"] = quant.Tensor{DType: wdt, Shape: []int64{sl.rows, sl.cols}, Data: f.expertBytes(ts, sl.src, e, sl.row0, sl.rows, sl.srcRows, sl.cols)}
			if hasQuant(wq) {
				var amax []float32
				var hdr quantstream.TensorInfo
				if sl.src == f.first {
					amax, hdr = firstAmax, firstAmaxHdr
				} else if ts.has(wqName + "._amax") {
					v, err := ts.floats(wqName + "._amax")
					if err != nil {
						return err
					}
					amax, hdr = v, ts.hdr[wqName+"._amax"]
				}
				shape := hdr.Shape
				if amax != nil && len(shape) >= 1 {
					amax, shape = splitRows(amax, shape, sl.row0, sl.rows, sl.srcRows)
				}
				if allZero(amax) {
					amax, hdr, shape = []float32{absMax(w)}, quantstream.TensorInfo{DType: quant.F32}, nil
				}
				if err := ts.setFloats(mod+".weight_quantizer._amax", hdr.DType, shape, amax); err != nil {
					return err
				}
			}
			if okI && ts.has(iqName+"._amax") {
				ts.data[mod+".input_quantizer._amax"] = ts.data[iqName+"._amax"]
			}
		}
	}
	// The fused tensors and their buffers are consumed.
	for _, n := range sortedKeys(ts.hdr) {
		if n == f.name+"."+f.first || n == f.name+".down_proj" ||
			strings.HasPrefix(n, f.name+"."+f.first+"_") || strings.HasPrefix(n, f.name+".down_proj_") {
			ts.del(n)
		}
	}
	return nil
}

func (f *fusedExperts) expertBytes(ts *tensorSet, src string, e int, row0, rows, srcRows, cols int64) []byte {
	t := ts.data[f.name+"."+src]
	es := int64(t.DType.Size())
	off := ((int64(e)*srcRows + row0) * cols) * es
	return t.Data[off : off+rows*cols*es]
}

func (f *fusedExperts) expert(ts *tensorSet, src string, e int, row0, rows, srcRows, cols int64) ([]float32, error) {
	t := ts.data[f.name+"."+src]
	if t.DType.Size() == 0 || int64(len(t.Data)) != numel(t.Shape)*int64(t.DType.Size()) {
		return nil, fmt.Errorf("%w: fused experts tensor %q", ErrShape, f.name+"."+src)
	}
	return quant.Float32s(quant.Tensor{DType: t.DType, Shape: []int64{rows, cols}, Data: f.expertBytes(ts, src, e, row0, rows, srcRows, cols)})
}

// splitRows is _export_fused_experts' amax slicing for a projection taking rows
// [row0, row0+rows) of a fused tensor with srcRows rows: an amax whose element count is
// a multiple of srcRows (but not equal) is first viewed as (srcRows, -1); then, when
// its leading dim divides srcRows, the proportional slice of that dim is kept.
// Otherwise the amax is used whole (ModelOpt warns).
func splitRows(a []float32, shape []int64, row0, rows, srcRows int64) ([]float32, []int64) {
	n := int64(len(a))
	if n != srcRows && n%srcRows == 0 {
		shape = []int64{srcRows, n / srcRows}
	}
	d0 := shape[0]
	if d0 == 0 || srcRows%d0 != 0 {
		return slices.Clone(a), shape
	}
	inner := n / d0
	start, end := row0*d0/srcRows, (row0+rows)*d0/srcRows
	out := append([]int64{end - start}, shape[1:]...)
	return slices.Clone(a[start*inner : end*inner]), out
}

// splitRowsShape is the shape splitRows gives an amax of shape shape.
func splitRowsShape(shape []int64, row0, rows, srcRows int64) []int64 {
	n := numel(shape)
	if n != srcRows && n%srcRows == 0 {
		shape = []int64{srcRows, n / srcRows}
	}
	d0 := shape[0]
	if d0 == 0 || srcRows%d0 != 0 {
		return slices.Clone(shape)
	}
	start, end := row0*d0/srcRows, (row0+rows)*d0/srcRows
	return append([]int64{end - start}, shape[1:]...)
}

func allZero(a []float32) bool {
	for _, v := range a {
		if v != 0 {
			return false
		}
	}
	return true
}

// fillKey names a batch of the MoE input-amax fill: an MoE block and a projection.
type fillKey struct{ block, proj string }

// fillBatches groups the iterable experts' modules with an enabled input quantizer by
// MoE block and projection, keys in the order of mods.
func fillBatches(mods []*Module) ([]fillKey, map[fillKey][]*Module) {
	batches := map[fillKey][]*Module{}
	var keys []fillKey
	for _, m := range mods {
		if m.Expert < 0 || m.FromFused || !hasQuant(m.IQ) {
			continue
		}
		block, _ := splitLast(m.Parent)
		k := fillKey{block, m.Proj}
		if _, ok := batches[k]; !ok {
			keys = append(keys, k)
		}
		batches[k] = append(batches[k], m)
	}
	return keys, batches
}

// fillTarget is the value set_expert_quantizer_amax gives the batch's quantizers that
// need one: the max over every existing amax of the batch (zeros included; NaN wins,
// as torch.max over the stacked maxima), 0.5 when none has one.
func fillTarget(ts *tensorSet, batch []*Module) (float32, error) {
	have := false
	var best float32
	for _, m := range batch {
		if m.IAmax == "" {
			continue
		}
		v, err := ts.floats(m.IAmax)
		if err != nil {
			return 0, err
		}
		if len(v) > 0 {
			a := maxOf(v)
			if !have || a > best || a != a {
				best, have = a, true
			}
		}
	}
	if !have {
		best = 0.5
	}
	return best, nil
}

// fillExpertInputAmax is set_expert_quantizer_amax for the input quantizers of
// iterable experts (run by unified_export_hf._prepare_moe_inputs): per MoE block and projection, the target is the max
// over every existing amax of the batch's enabled input quantizers (zeros included),
// 0.5 when none has one; it goes to each quantizer whose amax is missing or all zero,
// except dynamic ones. It returns the names it filled, sorted.
//
// ts holds the whole layer unless split is non-nil: the layer is exported in groups
// of experts (ExpertSplit), and the targets were computed from the whole layer's
// amaxes beforehand (SetExpertFill); a batch that needs a fill without a target is an
// error, never a target computed from part of the batch.
func fillExpertInputAmax(ts *tensorSet, mods []*Module, split *expertSplit) ([]string, error) {
	keys, batches := fillBatches(mods)
	var filled []string
	for _, k := range keys {
		batch := batches[k]
		var need []*Module
		for _, m := range batch {
			if m.IAmax == "" {
				if !m.IQ.Dynamic {
					need = append(need, m)
				}
				continue
			}
			if ts.planning() || m.IQ.Dynamic {
				continue
			}
			v, err := ts.floats(m.IAmax)
			if err != nil {
				return nil, err
			}
			if allZero(v) {
				need = append(need, m)
			}
		}
		if len(need) == 0 {
			continue
		}
		var best float32
		if !ts.planning() {
			var err error
			if split == nil {
				best, err = fillTarget(ts, batch)
			} else {
				var ok bool
				if best, ok = split.targets[k]; !ok {
					err = fmt.Errorf("%w: %s needs the MoE input amax fill, whose target is the max over every expert of the layer, but the layer is exported in groups of experts and no target was computed for %s.*.%s", ErrPlanMismatch, need[0].Name, k.block, k.proj)
				}
			}
			if err != nil {
				return nil, err
			}
		}
		for _, m := range need {
			name := m.Name + ".input_quantizer._amax"
			if m.IAmax == "" {
				filled = append(filled, name)
			}
			m.IAmax = name
			if ts.planning() {
				ts.setHeader(name, quant.F32, nil)
				continue
			}
			if err := ts.setFloats(name, quant.F32, nil, []float32{best}); err != nil {
				return nil, err
			}
		}
	}
	slices.Sort(filled)
	return filled, nil
}

func maxOf(v []float32) float32 {
	m := v[0]
	for _, x := range v[1:] {
		if x > m || x != x {
			m = x
		}
	}
	return m
}

// syncGateUpAmax is sync_moe_gate_up_amax: for iterable experts with a separate gate
// and up projection, differing weight amaxes both become their element-wise max.
//
// fusedInMemory (arch.Experts.FusedInMemory): the per-expert modules stand for one
// quantizer over the expert's fused gate_up_proj, so only a per-tensor amax is shared
// (the fused tensor's maximum); per-row and per-block amaxes stay each projection's
// own rows. Blocks along the rows that cross from gate into up cannot be reproduced
// from separate projections: a plan problem.
func syncGateUpAmax(ts *tensorSet, mods []*Module, pair [2]string, fusedInMemory bool) error {
	if pair[0] == "" {
		return nil
	}
	byName := map[string]*Module{}
	for _, m := range mods {
		byName[m.ID()] = m
	}
	for _, g := range mods {
		if g.Expert < 0 || g.FromFused || g.Proj != pair[0] {
			continue
		}
		u := byName[g.Parent+"."+pair[1]]
		if u == nil || g.WAmax == "" || u.WAmax == "" {
			continue
		}
		if fusedInMemory {
			if err := checkRowBlocks(ts, g, u); err != nil {
				return err
			}
			if numel(ts.hdr[g.WAmax].Shape) != 1 || numel(ts.hdr[u.WAmax].Shape) != 1 {
				continue
			}
		}
		if ts.planning() {
			continue
		}
		a, err := ts.floats(g.WAmax)
		if err != nil {
			return err
		}
		b, err := ts.floats(u.WAmax)
		if err != nil {
			return err
		}
		if len(a) != len(b) || slices.Equal(a, b) {
			continue
		}
		for i := range a {
			a[i] = max(a[i], b[i])
		}
		ha, hb := ts.hdr[g.WAmax], ts.hdr[u.WAmax]
		if err := ts.setFloats(g.WAmax, ha.DType, ha.Shape, a); err != nil {
			return err
		}
		ts.setFloats(u.WAmax, hb.DType, hb.Shape, a)
	}
	return nil
}

// checkRowBlocks refuses gate and up weight quantizers with blocks along the rows
// that do not divide the gate's rows: in the fused [2I, H] tensor ModelOpt quantizes,
// a block would hold rows of both.
func checkRowBlocks(ts *tensorSet, g, u *Module) error {
	if g.WQ == nil || g.WQ.BlockSizes == nil {
		return nil
	}
	shape := ts.hdr[g.Weight].Shape
	if len(shape) != 2 {
		return nil
	}
	for axis, b := range g.WQ.BlockSizes.Dims {
		if b <= 0 || (axis != 0 && axis != -2) {
			continue
		}
		if shape[0]%int64(b) != 0 {
			return fmt.Errorf("%w: %s and %s: blocks of %d rows over %d gate rows: transformers fuses them into one gate_up_proj, whose blocks cross from gate into up; convert the in-memory (fused) checkpoint instead", ErrUnsupported, g.Weight, u.Weight, b, shape[0])
		}
	}
	return nil
}
