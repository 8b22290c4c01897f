package stages

import (
	"bytes"
	"fmt"
	"math"
	"strings"

	quantstream "github.com/quantstream/quantstream"
	"github.com/quantstream/quantstream/quant"
)

// PreprocessLinearFusion is ModelOpt's preprocess_linear_fusion on modules that read
// the same input (quant_utils.preprocess_linear_fusion): AWQ pre_quant_scales are averaged and the weights rescaled with
// a recalibrated weight amax; unless resmoothOnly, per-tensor input amax, per-tensor
// weight amax and the second stage of W4A8 become the group maximum.
func preprocessLinearFusion(ts *tensorSet, mods []*Module, resmoothOnly bool, mode quant.DivMode) error {
	if len(mods) == 0 {
		return nil
	}
	for _, m := range mods[1:] {
		if m.Format != mods[0].Format {
			return fmt.Errorf("%w: fused modules %s (%s) and %s (%s) differ in format", ErrIncomplete, mods[0].Name, mods[0].Format, m.Name, m.Format)
		}
	}
	if mods[0].PQS != "" {
		if err := resmooth(ts, mods, mode); err != nil {
			return err
		}
	}
	if resmoothOnly {
		return nil
	}
	for _, buf := range fusedShares(ts, mods) {
		if err := shareMax(ts, mods, buf); err != nil {
			return err
		}
	}
	return nil
}

// fusedShares are the scalar buffers of fused modules mods (their first module
// decides, as preprocess_linear_fusion reads it) that become the group maximum:
// per-tensor input amax, per-tensor weight amax, the global amax of static NVFP4
// and the second stage of W4A8. They are known from headers: the checks run while
// planning too, so that plan finds what convert would.
func fusedShares(ts *tensorSet, mods []*Module) []func(*Module) string {
	var shared []func(*Module) string
	if hasQuant(mods[0].IQ) && mods[0].IAmax != "" {
		shared = append(shared, func(m *Module) string { return m.IAmax })
	}
	wq := mods[0].WQ
	switch {
	case wq != nil && len(wq.Sequential) > 0:
		if last := wq.Sequential[len(wq.Sequential)-1]; last.Enabled && mods[0].WAmax1 != "" {
			shared = append(shared, func(m *Module) string { return m.WAmax1 })
		}
	case wq != nil && (staticNVFP4Classes[wq.Class] || mods[0].GAmax != ""):
		// isinstance(NVFP4StaticQuantizer), an alias of StaticBlockScaleQuantizer:
		// the global amax is unified, the per-block amax never.
		if mods[0].GAmax != "" {
			shared = append(shared, func(m *Module) string { return m.GAmax })
		}
	case hasQuant(wq) && mods[0].WAmax != "" && numel(ts.hdr[mods[0].WAmax].Shape) == 1:
		shared = append(shared, func(m *Module) string { return m.WAmax })
	}
	return shared
}

// shareMax sets a scalar buffer of every module to the group's maximum, keeping each
// buffer's dtype. While planning it only checks that every module has the buffer.
func shareMax(ts *tensorSet, mods []*Module, buf func(*Module) string) error {
	var missing []string
	for _, m := range mods {
		if buf(m) == "" {
			missing = append(missing, m.Name)
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("%w: %s: no %s, which %s has (modules fused together share its maximum)", ErrMissingAmax, strings.Join(missing, ", "), strings.TrimPrefix(buf(mods[0]), mods[0].Name+"."), mods[0].Name)
	}
	if ts.planning() {
		return nil
	}
	best, err := groupMax(ts, mods, buf)
	if err != nil {
		return err
	}
	for _, m := range mods {
		h := ts.hdr[buf(m)]
		if err := ts.setFloats(buf(m), h.DType, h.Shape, []float32{best}); err != nil {
			return err
		}
	}
	return nil
}

// groupMax is the maximum shareMax gives every module's buffer: over mods in order,
// a NaN winning.
func groupMax(ts *tensorSet, mods []*Module, buf func(*Module) string) (float32, error) {
	var best float32
	for i, m := range mods {
		v, err := ts.scalar(buf(m))
		if err != nil {
			return 0, err
		}
		if i == 0 || v > best || v != v {
			best = v
		}
	}
	return best, nil
}

// resmooth averages the group's pre_quant_scales (float32 sum, ÷scalar n, rounded to
// the scale dtype: torch.mean of a half-precision tensor) and rescales each module
// whose scale differs.
func resmooth(ts *tensorSet, mods []*Module, mode quant.DivMode) error {
	if strings.Contains(mods[0].Format, "svdquant") {
		return fmt.Errorf("%w: SVDQuant resmoothing needs an SVD (LAPACK-dependent)", ErrUnsupported)
	}
	for _, m := range mods {
		if m.PQS == "" {
			return fmt.Errorf("%w: %s has no pre_quant_scale while %s has", ErrIncomplete, m.Name, mods[0].Name)
		}
	}
	if ts.planning() {
		return nil
	}
	var sum []float32
	pdt := ts.hdr[mods[0].PQS].DType
	for _, m := range mods {
		p, err := ts.floats(m.PQS)
		if err != nil {
			return err
		}
		if sum == nil {
			sum = make([]float32, len(p))
		}
		if len(p) != len(sum) {
			return fmt.Errorf("%w: pre_quant_scale %s has %d elements, want %d", ErrShape, m.PQS, len(p), len(sum))
		}
		for i, v := range p {
			sum[i] = sum[i] + v
		}
	}
	avg := make([]float32, len(sum))
	for i, s := range sum {
		avg[i] = quant.RoundTo(pdt, quant.DivScalar(s, float32(len(mods)), mode))
	}
	avgBytes, err := quant.AppendEncoded(nil, avg, pdt)
	if err != nil {
		return err
	}
	for _, m := range mods {
		t, _ := ts.get(m.PQS)
		if t.DType == pdt && bytes.Equal(t.Data, avgBytes) {
			continue
		}
		if err := updatePreQuantScale(ts, m, avg); err != nil {
			return err
		}
	}
	return nil
}

// updatePreQuantScale is _update_pre_quant_scale: w = f32(f32(w*old)/new) cast back,
// the buffer takes the new scale, and the weight amax is recalibrated.
func updatePreQuantScale(ts *tensorSet, m *Module, scale []float32) error {
	old, err := ts.floats(m.PQS)
	if err != nil {
		return err
	}
	wh := ts.hdr[m.Weight]
	w, err := ts.floats(m.Weight)
	if err != nil {
		return err
	}
	cols := len(old)
	if cols == 0 || len(w)%cols != 0 {
		return fmt.Errorf("%w: weight %s %v with pre_quant_scale of %d", ErrShape, m.Weight, wh.Shape, cols)
	}
	for i := range w {
		c := i % cols
		x := float32(w[i] * old[c])
		w[i] = quant.RoundTo(wh.DType, x/scale[c])
	}
	if err := ts.setFloats(m.Weight, wh.DType, wh.Shape, w); err != nil {
		return err
	}
	ph := ts.hdr[m.PQS]
	if err := ts.setFloats(m.PQS, ph.DType, ph.Shape, scale); err != nil {
		return err
	}
	return recalibrateWeightAmax(ts, m)
}

// recalibrateWeightAmax re-collects the weight amax of m from its current weight
// with the quantizer's own reduction (quant.CalibrateAmax); a W4A8 chain calibrates
// each stage on the weight.
func recalibrateWeightAmax(ts *tensorSet, m *Module) error {
	w, err := ts.get(m.Weight)
	if err != nil {
		return err
	}
	qs := []*quant.Quantizer{m.WQ}
	bufs := []string{m.WAmax}
	if m.WQ != nil && len(m.WQ.Sequential) > 0 {
		qs = m.WQ.Sequential
		bufs = []string{m.WAmax, m.WAmax1}
	}
	for i, q := range qs {
		if i >= len(bufs) || bufs[i] == "" || q == nil || !q.Enabled {
			continue
		}
		a, err := quant.CalibrateAmax(q, w)
		if err != nil {
			return fmt.Errorf("module %s: recalibrate %s: %w", m.Name, bufs[i], err)
		}
		ts.set(bufs[i], a)
	}
	return nil
}

// fusePrequantLayernorm is fuse_prequant_layernorm: the group's (shared) pre_quant_scale
// is folded into the norm that feeds it (w*p, or (w+1)*p-1 for Gemma-style norms, each
// op rounded to its dtype), and removed from the modules.
func fusePrequantLayernorm(ts *tensorSet, norm string, onePlus bool, mods []*Module) error {
	if len(mods) == 0 || mods[0].PQS == "" {
		return nil
	}
	if !ts.planning() {
		p, err := ts.floats(mods[0].PQS)
		if err != nil {
			return err
		}
		pdt := ts.hdr[mods[0].PQS].DType
		for _, part := range []string{norm + ".weight", norm + ".bias"} {
			if !ts.has(part) {
				continue
			}
			h := ts.hdr[part]
			w, err := ts.floats(part)
			if err != nil {
				return err
			}
			if len(w) != len(p) {
				return fmt.Errorf("%w: norm %s has %d elements, pre_quant_scale %d", ErrShape, part, len(w), len(p))
			}
			rdt := promote(h.DType, pdt)
			for i := range w {
				if onePlus && strings.HasSuffix(part, ".weight") {
					x := quant.RoundTo(h.DType, w[i]+1)
					x = quant.RoundTo(rdt, x*p[i])
					w[i] = quant.RoundTo(h.DType, quant.RoundTo(rdt, x-1))
				} else {
					w[i] = quant.RoundTo(h.DType, quant.RoundTo(rdt, w[i]*p[i]))
				}
			}
			if err := ts.setFloats(part, h.DType, h.Shape, w); err != nil {
				return err
			}
		}
	}
	for _, m := range mods {
		if m.PQS != "" {
			ts.del(m.PQS)
			m.PQS = ""
		}
		m.Fused = true
	}
	return nil
}

// promote is torch's result dtype of two dimensioned float tensors.
func promote(a, b quant.DType) quant.DType {
	if a == b {
		return a
	}
	if a == quant.F64 || b == quant.F64 {
		return quant.F64
	}
	return quant.F32
}

// fusePrequantToLinear is fuse_prequant_to_linear for one pattern (nvfp4_awq only): the
// source's pre_quant_scale scales the target's output rows, when its length equals the
// target's output size; the source's scale is then dropped.
func fusePrequantToLinear(ts *tensorSet, src, tgt *Module) error {
	if src.PQS == "" {
		return nil
	}
	wh := ts.hdr[tgt.Weight]
	if len(wh.Shape) != 2 || numel(ts.hdr[src.PQS].Shape) != wh.Shape[0] {
		return nil // ModelOpt skips with a warning (grouped heads)
	}
	if !ts.planning() {
		p, err := ts.floats(src.PQS)
		if err != nil {
			return err
		}
		w, err := ts.floats(tgt.Weight)
		if err != nil {
			return err
		}
		cols := int(wh.Shape[1])
		for i := range w {
			w[i] = quant.RoundTo(wh.DType, w[i]*p[i/cols])
		}
		if err := ts.setFloats(tgt.Weight, wh.DType, wh.Shape, w); err != nil {
			return err
		}
		if tgt.Bias != "" {
			bh := ts.hdr[tgt.Bias]
			b, err := ts.floats(tgt.Bias)
			if err != nil {
				return err
			}
			for i := range b {
				b[i] = quant.RoundTo(bh.DType, b[i]*p[i])
			}
			if err := ts.setFloats(tgt.Bias, bh.DType, bh.Shape, b); err != nil {
				return err
			}
		}
		if err := recalibrateWeightAmax(ts, tgt); err != nil {
			return err
		}
	}
	ts.del(src.PQS)
	src.PQS = ""
	src.Fused = true
	return nil
}

// adjustAttnAmax is adjust_attn_amax_values on scalar weight amaxes: every child whose
// name contains "q", "k" or "v" gets the maximum of them.
func adjustAttnAmax(amax map[string]float32, order []string) (map[string]float32, error) {
	var best float32
	var hit []string
	for _, name := range order {
		if _, ok := amax[name]; !ok {
			continue
		}
		for _, letter := range []string{"q", "k", "v"} {
			if strings.Contains(name, letter) {
				hit = append(hit, name)
				best = float32(math.Max(float64(best), float64(amax[name])))
			}
		}
	}
	if len(hit) == 0 {
		return nil, fmt.Errorf("%w: no q/k/v child with a weight amax", ErrMissingAmax)
	}
	if !(best > 0) {
		return nil, fmt.Errorf("%w: q/k/v amax maximum %v is not positive", ErrMissingAmax, best)
	}
	out := map[string]float32{}
	for k, v := range amax {
		out[k] = v
	}
	for _, n := range hit {
		out[n] = best
	}
	return out, nil
}

// NewModule describes the linear module name of a state dict (tensors named
// "<name>.weight", "<name>.weight_quantizer._amax", "<name>.input_quantizer._amax",
// ...): its buffers, format and block size.
func (Reference) NewModule(name string, sd map[string]quant.Tensor, wq, iq *quant.Quantizer) (*Module, error) {
	hdr := make(map[string]quantstream.TensorInfo, len(sd))
	for k, t := range sd {
		hdr[k] = quantstream.TensorInfo{DType: t.DType, Shape: t.Shape}
	}
	m := &Module{Name: name, Weight: name + ".weight", WQ: wq, IQ: iq, Expert: -1}
	m.Parent, m.Proj = splitLast(name)
	m.fillBuffers(hdr)
	if err := m.classify(); err != nil {
		return nil, fmt.Errorf("module %s: %w", name, err)
	}
	return m, nil
}

func stateSet(sd map[string]quant.Tensor) *tensorSet {
	ts := &tensorSet{hdr: map[string]quantstream.TensorInfo{}, data: map[string]quant.Tensor{}}
	for k, t := range sd {
		ts.set(k, t)
	}
	return ts
}

// PreprocessLinearFusion runs preprocess_linear_fusion on modules whose tensors are in
// sd and returns the updated state dict; sd itself is not modified.
func (Reference) PreprocessLinearFusion(sd map[string]quant.Tensor, mods []*Module, resmoothOnly bool, mode quant.DivMode) (map[string]quant.Tensor, error) {
	ts := stateSet(sd)
	if err := preprocessLinearFusion(ts, mods, resmoothOnly, mode); err != nil {
		return nil, err
	}
	return ts.data, nil
}

// FusePrequantLayernorm runs fuse_prequant_layernorm: norm names the norm module
// ("<norm>.weight" in sd), mods the modules it feeds. The pre_quant_scale buffers are
// removed from the returned state dict; sd itself is not modified.
func (Reference) FusePrequantLayernorm(sd map[string]quant.Tensor, norm string, onePlus bool, mods []*Module) (map[string]quant.Tensor, error) {
	ts := stateSet(sd)
	if err := fusePrequantLayernorm(ts, norm, onePlus, mods); err != nil {
		return nil, err
	}
	return ts.data, nil
}

// AdjustAttnAmax is adjust_attn_amax_values over an attention's children, in
// registration order, with their scalar weight amax.
func (Reference) AdjustAttnAmax(amax map[string]float32, children []string) (map[string]float32, error) {
	return adjustAttnAmax(amax, children)
}
