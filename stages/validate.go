package stages

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	quantstream "github.com/quantstream/quantstream"
	"github.com/quantstream/quantstream/quant"
)

// Errors of the checks of a checkpoint against its quantizer table.
var (
	// ErrMissingWeight: an enabled weight quantizer whose weight is not in the input.
	ErrMissingWeight = errors.New("stages: missing weight")
	// ErrUnusedBuffer: a quantizer buffer no module of the input uses.
	ErrUnusedBuffer = errors.New("stages: quantizer buffer used by no module")
	// ErrMissingBuffer: a buffer the quantizer table records is not in the input (or
	// has another shape).
	ErrMissingBuffer = errors.New("stages: missing quantizer buffer")
)

// quantizerOf splits a quantizer buffer name such as
// "m.layers.0.self_attn.q_proj.weight_quantizer.0._amax" at its last quantizer
// component: the owner module ("m.layers.0.self_attn.q_proj"), the component
// ("weight_quantizer") and the quantizer's name (up to and with a chain or expert
// index: "….weight_quantizer.0"). ok is false when name is no quantizer buffer.
func quantizerOf(name string) (owner, comp, quantizer string, ok bool) {
	parts := strings.Split(name, ".")
	for i := len(parts) - 2; i >= 0; i-- {
		if !strings.HasSuffix(parts[i], "_quantizer") && !strings.HasSuffix(parts[i], "_quantizers") {
			continue
		}
		end := i + 1
		if end < len(parts)-1 && isIndex(parts[end]) {
			end++
		}
		return strings.Join(parts[:i], "."), parts[i], strings.Join(parts[:end], "."), true
	}
	return "", "", "", false
}

func isIndex(s string) bool {
	if s == "" {
		return false
	}
	for _, c := range s {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// weightOf is the weight a linear-like quantizer component belongs to:
// "<owner>.weight" for weight_/input_quantizer, "<owner>.<attr>" for
// "<attr>_weight_quantizer(s)" / "<attr>_input_quantizer" (batched-matmul and fused
// experts); "" for other quantizers (output_quantizer, k_bmm_quantizer, ...), which
// belong to the owner module as a whole.
func weightOf(owner, comp string) string {
	switch comp {
	case "weight_quantizer", "input_quantizer":
		return owner + ".weight"
	}
	for _, suf := range []string{"_weight_quantizers", "_weight_quantizer", "_input_quantizer"} {
		if attr, ok := strings.CutSuffix(comp, suf); ok && attr != "" {
			return owner + "." + attr
		}
	}
	return ""
}

// checkCoverage checks the input against the quantizer table before anything is
// planned from it (discovery starts from weights, so without these checks a missing
// weight would silently drop its quantized module):
//   - every enabled weight quantizer has its weight;
//   - every quantizer buffer belongs to a module of the input (its weight exists;
//     for attention quantizers such as k_bmm_quantizer, some tensor of the owner);
//   - every enabled quantizer for which the table records an _amax buffer
//     (Quantizer.HasBufferShape) has "<quantizer>._amax" of that shape, and one that
//     records a _pre_quant_scale has "<quantizer>._pre_quant_scale".
//
// It returns one error per missing weight (naming its quantizers and buffers) and
// one per missing buffer, in name order.
func checkCoverage(inputs []quantstream.TensorInfo, qs Quantizers) []error {
	have := make(map[string][]int64, len(inputs))
	owners := map[string]bool{} // modules owning a tensor other than a quantizer buffer
	for _, t := range inputs {
		have[t.Name] = t.Shape
		if _, _, _, ok := quantizerOf(t.Name); ok {
			continue
		}
		for n := t.Name; ; {
			i := strings.LastIndexByte(n, '.')
			if i < 0 {
				break
			}
			n = n[:i]
			if owners[n] {
				break
			}
			owners[n] = true
		}
	}
	type missing struct{ quantizers, buffers []string }
	lost := map[string]*missing{}
	note := func(w string) *missing {
		m := lost[w]
		if m == nil {
			m = &missing{}
			lost[w] = m
		}
		return m
	}
	var errs []error
	withWeight := 0 // enabled weight quantizers whose weight is there
	for _, name := range qs.Names() {
		q, _ := qs.Get(name)
		if q == nil || !q.Enabled {
			continue
		}
		owner, comp, _, _ := quantizerOf(name + "._")
		isWQ := strings.HasSuffix(comp, "weight_quantizer") || strings.HasSuffix(comp, "weight_quantizers")
		if w := weightOf(owner, comp); w != "" && !has(have, w) {
			if isWQ {
				note(w).quantizers = append(note(w).quantizers, name)
			}
			continue // an input quantizer's buffers are reported with the weight
		} else if isWQ && w != "" {
			withWeight++
		}
		if q.HasBufferShape {
			b := name + "._amax"
			if shape, ok := have[b]; !ok {
				errs = append(errs, fmt.Errorf("%w: %s is enabled and its state records an _amax of shape %v, but tensor %s is not in the input", ErrMissingBuffer, name, q.BufferShape, b))
			} else if !slices.Equal(shape, q.BufferShape) && !(len(shape) == 0 && len(q.BufferShape) == 0) {
				errs = append(errs, fmt.Errorf("%w: tensor %s has shape %v, the quantizer state records %v", ErrMissingBuffer, b, shape, q.BufferShape))
			}
		}
		if q.HasPreQuantScale {
			if b := name + "._pre_quant_scale"; !has(have, b) {
				errs = append(errs, fmt.Errorf("%w: %s is enabled and its state records a _pre_quant_scale, but tensor %s is not in the input", ErrMissingBuffer, name, b))
			}
		}
	}
	for _, t := range inputs {
		owner, comp, _, ok := quantizerOf(t.Name)
		if !ok {
			continue
		}
		if w := weightOf(owner, comp); w != "" {
			if !has(have, w) {
				note(w).buffers = append(note(w).buffers, t.Name)
			}
		} else if !owners[owner] {
			errs = append(errs, fmt.Errorf("%w: tensor %s: the input has no module %s", ErrUnusedBuffer, t.Name, owner))
		}
	}
	var noWeight []string
	for _, w := range sortedKeys(lost) {
		if len(lost[w].quantizers) > 0 {
			noWeight = append(noWeight, w)
		}
	}
	if withWeight == 0 && len(noWeight) > 1 {
		// Not one weight: the base checkpoint was left out. That is the one problem;
		// every buffer would be reported as unused too.
		return []error{fmt.Errorf("%w: none of the %d weights the enabled weight quantizers quantize is in the input (%s); is the base checkpoint among the --in directories?", ErrMissingWeight, len(noWeight), listNames(noWeight))}
	}
	for _, w := range sortedKeys(lost) {
		m := lost[w]
		slices.Sort(m.buffers)
		switch {
		case len(m.quantizers) > 0:
			errs = append(errs, fmt.Errorf("%w: %s is enabled but weight %s is not in the input%s", ErrMissingWeight, strings.Join(m.quantizers, ", "), w, buffersNote(m.buffers)))
		default:
			errs = append(errs, fmt.Errorf("%w: %s: no weight %s in the input", ErrUnusedBuffer, listNames(m.buffers), w))
		}
	}
	return errs
}

func has(m map[string][]int64, name string) bool { _, ok := m[name]; return ok }

func buffersNote(b []string) string {
	if len(b) == 0 {
		return ""
	}
	return "; its buffers " + listNames(b) + " are used by no module"
}

// listNames lists names, the first three and a count of the others.
func listNames(n []string) string {
	if len(n) <= 3 {
		return strings.Join(n, ", ")
	}
	return fmt.Sprintf("%s and %d more", strings.Join(n[:3], ", "), len(n)-3)
}

// checkZeroDims refuses a quantized module whose weight has a zero-size dimension.
func checkZeroDims(ts *tensorSet, mods []*Module) error {
	var errs []error
	for _, m := range mods {
		if m.Format == "" {
			continue
		}
		if s := ts.hdr[m.Weight].Shape; slices.Contains(s, 0) {
			errs = append(errs, fmt.Errorf("%w: quantized weight %s has shape %v (a zero-size dimension)", ErrShape, m.Weight, s))
		}
	}
	return errors.Join(errs...)
}

// isStateBuffer reports whether name is a calibration buffer the export reads as a
// magnitude: an _amax, a _global_amax or a _pre_quant_scale.
func isStateBuffer(name string) bool {
	return strings.HasSuffix(name, "._amax") || strings.HasSuffix(name, "._global_amax") || strings.HasSuffix(name, "._pre_quant_scale")
}

// checkBuffers validates the calibration buffers of a layer's data before any step
// reads them (this runs on every Process, whatever planned the layer): every _amax,
// _global_amax and _pre_quant_scale must be finite and non-negative, and a
// pre_quant_scale positive (ModelOpt asserts it, and resmoothing divides by it).
//
// ModelOpt's export_amax would map a NaN amax to maxbound and +Inf to finfo.max;
// quantstream refuses non-finite and negative amax instead (quant.ErrNonFinite,
// quant.ErrNonPositive): they are failed calibrations, not ranges.
func checkBuffers(ts *tensorSet) error {
	var errs []error
	for _, n := range sortedKeys(ts.data) {
		if !isStateBuffer(n) {
			continue
		}
		if err := quant.CheckFinite(ts.data[n], strings.HasSuffix(n, "._pre_quant_scale")); err != nil {
			errs = append(errs, fmt.Errorf("tensor %s: %w (a failed calibration: where ModelOpt's export_amax would silently export maxbound for NaN, the dtype's max for Inf or its tiny for a negative value, quantstream refuses)", n, err))
		}
	}
	return errors.Join(errs...)
}

// checkZeroAmax refuses, right before export, a zero amax that the format divides
// by as it is: the per-tensor FP8 weight scale (amax.item()/448), the NVFP4-family
// global scale (amax/(6·448)) and the dynamic NVFP4 input scale take the raw buffer,
// so ModelOpt would write 0 scales and 0/0 weights (or fail its scale > 0 assert). Formats whose scales go through export_amax (which
// turns zeros into maxbound: INT, per-channel FP8, static blocks) keep zeros.
func checkZeroAmax(ts *tensorSet, m *Module) error {
	var bufs []string
	switch {
	case m.Format == "fp8":
		bufs = []string{m.WAmax}
	case nvfp4Family(m.Format):
		g := m.key("weight_quantizer._global_amax")
		if ts.has(g) {
			bufs = []string{g}
		} else {
			bufs = []string{m.WAmax}
		}
	}
	switch m.Format {
	case "nvfp4", "nvfp4_awq", "nvfp4_svdquant":
		// A dynamic-block NVFP4 input quantizer's amax reaches the input scale without
		// export_amax's zero fix, and ModelOpt asserts the scale is positive.
		if hasQuant(m.IQ) && m.IQ.BlockSizes.Dynamic() {
			bufs = append(bufs, m.IAmax)
		}
	}
	for _, b := range bufs {
		if b == "" {
			continue
		}
		t, ok := ts.data[b]
		if !ok || t.Numel() != 1 {
			continue
		}
		if err := quant.CheckFinite(t, true); err != nil {
			return fmt.Errorf("tensor %s: %w (a %s scale would be 0: ModelOpt divides by this amax as it is)", b, err, m.Format)
		}
	}
	return nil
}

func nvfp4Family(f string) bool {
	switch f {
	case "nvfp4", "nvfp4_awq", "nvfp4_svdquant", "w4a16_nvfp4", "w4a8_nvfp4_fp8":
		return true
	}
	return false
}

// nameOnce wraps err with the module's name unless the message already has it
// (quant's errors name the module they concern).
func nameOnce(module string, err error) error {
	if err == nil || strings.Contains(err.Error(), module) {
		return err
	}
	return fmt.Errorf("module %s: %w", module, err)
}

// checkBufferHeaders checks, from headers, what the export reads of each quantized
// module: its weight and its amax and pre_quant_scale buffers are BF16, F16 or F32
// (fp8_pb_real weights are FP8 already), and the per-tensor FP8 weight amax has one
// element (its scale is amax.item()/448).
func checkBufferHeaders(ts *tensorSet, mods []*Module) error {
	var errs []error
	for _, m := range mods {
		if m.Format == "" {
			continue
		}
		for _, b := range []string{m.WAmax, m.WAmax1, m.IAmax, m.PQS} {
			h, ok := ts.hdr[b]
			if b == "" || !ok {
				continue
			}
			switch h.DType {
			case quant.BF16, quant.F16, quant.F32:
			default:
				errs = append(errs, fmt.Errorf("%w: tensor %s is %v (calibration buffers are BF16, F16 or F32)", ErrDType, b, h.DType))
			}
		}
		if h, ok := ts.hdr[m.Weight]; ok && m.Format != "fp8_pb_real" {
			switch h.DType {
			case quant.BF16, quant.F16, quant.F32:
			default:
				errs = append(errs, fmt.Errorf("%w: weight %s is %v; %s export quantizes BF16, F16 or F32 weights", ErrDType, m.Weight, h.DType, m.Format))
			}
		}
		if h, ok := ts.hdr[m.WAmax]; ok && m.Format == "fp8" && h.Shape != nil && numel(h.Shape) != 1 {
			errs = append(errs, fmt.Errorf("%w: tensor %s has shape %v; a per-tensor FP8 weight amax has one element", ErrShape, m.WAmax, h.Shape))
		}
	}
	return errors.Join(errs...)
}
