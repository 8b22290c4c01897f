package modelopt

import (
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/quantstream/quantstream/arch"
	"github.com/quantstream/quantstream/quant"
)

// ErrNeedsCalibration is returned for a recipe whose quantizer state depends on
// activation data, so it cannot be derived from the weights alone.
var ErrNeedsCalibration = errors.New("modelopt: recipe needs calibration data")

// howToCalibrate is the remedy every ErrNeedsCalibration names.
const howToCalibrate = "calibrate with ModelOpt (mtq.quantize with a forward_loop), " +
	"save with mto.enable_huggingface_checkpointing() and model.save_pretrained(dir), " +
	"then convert that folder (--in dir)"

// dataFreeMethods are the calibration algorithms whose result depends on the weights
// only when no activation quantizer needs statistics: max calibrates every weight
// quantizer on its weight (forward_loop=None), and None calibrates nothing.
var dataFreeMethods = map[string]bool{"max": true, "": true}

// DataFree derives the quantizer state mtq.quantize(model, recipe, forward_loop=None)
// would produce for a plain checkpoint (config.json and tensor shapes), and checks that
// it is exact: the golden data_free_check shows that for such recipes the state and
// every exported file are byte-identical whatever data calibration would have seen.
// The model is of a built-in family (arch.Builtin); DataFreeFor takes the family a
// caller detected in its own registry.
func DataFree(r *Recipe, config []byte, shapes map[string][]int64) (*Quantized, error) {
	cfg, fam, err := detect(config, arch.Builtin())
	if err != nil {
		return nil, err
	}
	return DataFreeFor(r, cfg, fam, shapes)
}

// DataFreeFor is DataFree for a model of family fam, detected from cfg in the
// registry the export plan uses (the built-in families and the user's --arch files),
// so that the quantizers derived here and the export apply one set of rules.
func DataFreeFor(r *Recipe, cfg *arch.Config, fam *arch.Family, shapes map[string][]int64) (*Quantized, error) {
	m, err := NewModelFor(cfg, fam, shapes)
	if err != nil {
		return nil, err
	}
	q, err := Apply(r, m, ApplyOptions{})
	if err != nil {
		return nil, err
	}
	if err := q.CheckDataFree(); err != nil {
		return nil, err
	}
	return q, nil
}

// CheckDataFree reports whether the quantizer state depends on the weights only. It
// refuses calibration algorithms other than max and None (AWQ, SmoothQuant, ...), any
// enabled activation quantizer (input, output, KV-cache bmm) that would collect a
// static amax, chained weight quantizers (the second element sees the first one's
// output), and static weight quantizers under algorithm None (ModelOpt would leave them
// without an amax).
func (q *Quantized) CheckDataFree() error {
	name := q.Recipe.Name
	if name == "" {
		name = "recipe"
	}
	if m := q.Recipe.Method(); !dataFreeMethods[m] {
		return fmt.Errorf("%w: %s uses the %q calibration algorithm, which searches scales on activations; %s",
			ErrNeedsCalibration, name, m, howToCalibrate)
	}
	var static []string
	for _, qn := range q.Table.Names() {
		tq := q.Table[qn]
		s := q.slots[qn]
		// Constant amax where ModelOpt's code sets it but no export of it is pinned
		// (a weight or output quantizer, the cast mode off the KV cache) is refused.
		switch {
		case tq.UseConstantAmax && s.Kind != BMMSlot:
			return fmt.Errorf("%w: %s sets use_constant_amax on %s, which quantstream supports on the KV-cache quantizers (*[kv]_bmm_quantizer) only", ErrRecipe, name, qn)
		case tq.ConstantAmax != nil && s.Kind != InputSlot:
			return fmt.Errorf("%w: %s sets constant_amax on %s, which quantstream supports on input quantizers only", ErrRecipe, name, qn)
		}
		if !tq.Enabled {
			continue
		}
		if s.Kind != WeightSlot {
			// A constant amax needs no data: use_constant_amax keeps none, constant_amax
			// is the configured value.
			if !tq.Dynamic && !isMX(tq) && !tq.UseConstantAmax && tq.ConstantAmax == nil {
				static = append(static, qn)
			}
			continue
		}
		if qn != s.Name {
			return fmt.Errorf("%w: %s chains weight quantizers (%s); the second is calibrated on the first one's output, which is not supported without a saved state; %s",
				ErrNeedsCalibration, name, s.Name, howToCalibrate)
		}
		if q.Recipe.Method() == "" && !tq.Dynamic && !isMX(tq) {
			return fmt.Errorf("%w: %s has no calibration algorithm but weight quantizer %s needs an amax; %s",
				ErrNeedsCalibration, name, qn, howToCalibrate)
		}
	}
	if len(static) > 0 {
		more := ""
		if len(static) > 3 {
			more = fmt.Sprintf(" and %d more", len(static)-3)
			static = static[:3]
		}
		return fmt.Errorf("%w: %s enables static activation quantizers that need amax statistics from data (%s%s); %s",
			ErrNeedsCalibration, name, strings.Join(static, ", "), more, howToCalibrate)
	}
	return nil
}

// WeightTensors lists the checkpoint tensors the enabled weight quantizers are
// calibrated on, sorted.
func (q *Quantized) WeightTensors() []string {
	set := map[string]bool{}
	for qn, tq := range q.Table {
		if s := q.slots[qn]; tq.Enabled && s.Kind == WeightSlot && s.Weight != "" {
			set[s.Weight] = true
		}
	}
	out := make([]string, 0, len(set))
	for n := range set {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// WeightAmax calibrates the enabled weight quantizers whose weights are in weights
// (tensor name → tensor; pass one layer's tensors at a time, or all of them) with
// quant.CalibrateAmax and returns the amax buffers under the state-dict names the
// export stages read: "<module>.weight_quantizer._amax", and for fused experts
// "<experts>.<proj>_weight_quantizers.<e>._amax". Quantizers that keep no amax (MX
// formats, dynamic) get none. Call CheckDataFree first; the result borrows nothing.
func (q *Quantized) WeightAmax(weights map[string]quant.Tensor) (map[string]quant.Tensor, error) {
	out := map[string]quant.Tensor{}
	for _, qn := range q.Table.Names() {
		tq := q.Table[qn]
		s := q.slots[qn]
		if !tq.Enabled || s.Kind != WeightSlot {
			continue
		}
		w, ok := weights[s.Weight]
		if !ok {
			continue
		}
		if qn != s.Name {
			return nil, fmt.Errorf("%w: chained weight quantizer %s (see CheckDataFree)", ErrNeedsCalibration, qn)
		}
		if s.Expert >= 0 {
			var err error
			if w, err = expertSlice(w, s.Expert); err != nil {
				return nil, fmt.Errorf("quantizer %s: weight %s: %w", qn, s.Weight, err)
			}
		}
		amax, err := quant.CalibrateAmax(tq, w)
		if errors.Is(err, quant.ErrNoAmax) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("quantizer %s: weight %s: %w", qn, s.Weight, err)
		}
		out[qn+"._amax"] = amax
	}
	return out, nil
}

// expertSlice is w[e] of a fused [E, ...] expert weight; it shares w's data.
func expertSlice(w quant.Tensor, e int) (quant.Tensor, error) {
	if err := w.Check(); err != nil {
		return quant.Tensor{}, err
	}
	if len(w.Shape) < 2 || int64(e) >= w.Shape[0] {
		return quant.Tensor{}, fmt.Errorf("%w: expert %d of shape %v", ErrModel, e, w.Shape)
	}
	per := len(w.Data) / int(w.Shape[0])
	return quant.Tensor{DType: w.DType, Shape: w.Shape[1:], Data: w.Data[e*per : (e+1)*per]}, nil
}
