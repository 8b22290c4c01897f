package modelopt

import (
	"regexp"
	"strings"

	"github.com/quantstream/quantstream/quant"
)

// sharedGlobalPatterns are ModelOpt's SHARED_PATTERNS (quantization/utils/
// shared_input.py): the fusible sibling groups whose static NVFP4 weight quantizers
// share one global amax, matched (re.fullmatch) against module names, the captured
// parent being the group — q/k/v per attention block, gate/up per MLP or expert,
// Mixtral's w1/w3 per expert.
var sharedGlobalPatterns = []*regexp.Regexp{
	regexp.MustCompile(`^(?:(.*)\.)?(?:q_proj|k_proj|v_proj)$`),
	regexp.MustCompile(`^(?:(.*)\.)?(?:gate_proj|up_proj)$`),
	regexp.MustCompile(`^(?:(.*)\.)?(?:w1|w3)$`),
}

// IsStaticNVFP4 reports whether max calibration promotes q to a static NVFP4
// quantizer (TensorQuantizer.is_nvfp4_static: static E2M1 blocks with E4M3 scales),
// which then carries a per-block _amax and a _global_amax.
func IsStaticNVFP4(q *quant.Quantizer) bool {
	bs := q.BlockSizes
	return q.Enabled && q.NumBits == quant.BitsE2M1 && bs != nil && bs.Type != "dynamic" &&
		bs.ScaleBits != nil && *bs.ScaleBits == quant.BitsE4M3 && len(q.Sequential) == 0
}

// StaticGlobals says how each static NVFP4 weight quantizer gets its _global_amax
// after max calibration (promote_static_block_weight_quantizers with
// SharedWeightGlobalAmaxState): the maximum of the calibrated _amax of every member
// of its sibling group — the modules whose enabled weight quantizer's module name
// matches the same SHARED_PATTERNS entry with the same parent, when there are at
// least two — or of its own _amax otherwise. It maps each such quantizer to the
// weight quantizers whose amax its global amax is the maximum of (itself alone
// when it has no group).
func (q *Quantized) StaticGlobals() map[string][]string {
	groups := map[string][]string{}
	keyOf := map[string]string{}
	for _, qn := range q.Table.Names() {
		tq, s := q.Table[qn], q.slots[qn]
		if !tq.Enabled || s == nil || s.Kind != WeightSlot || qn != s.Name {
			continue
		}
		mod, ok := strings.CutSuffix(qn, ".weight_quantizer")
		if !ok {
			continue // an experts container's quantizer: no module name to group by
		}
		for i, re := range sharedGlobalPatterns {
			if m := re.FindStringSubmatch(mod); m != nil {
				k := string(rune('0'+i)) + "\x00" + m[1]
				groups[k] = append(groups[k], qn)
				keyOf[qn] = k
				break
			}
		}
	}
	out := map[string][]string{}
	for _, qn := range q.Table.Names() {
		tq := q.Table[qn]
		if s := q.slots[qn]; s == nil || s.Kind != WeightSlot || !IsStaticNVFP4(tq) {
			continue
		}
		if _, calibrated := q.AmaxShapes[qn]; !calibrated {
			continue
		}
		if g := groups[keyOf[qn]]; keyOf[qn] != "" && len(g) >= 2 {
			out[qn] = g
		} else {
			out[qn] = []string{qn}
		}
	}
	return out
}

// ForceWeightQuantizersStatic is hf_ptq's force_weight_quantizers_static for
// --cast_mxfp4_to_nvfp4: every rule whose quantizer_name contains
// "weight_quantizer" and whose cfg is one dict with a block_sizes dict gets
// block_sizes type "static", so that max calibration records per-block amaxes.
// It returns a new recipe; r is not changed.
func ForceWeightQuantizersStatic(r *Recipe) *Recipe {
	out := &Recipe{Name: r.Name + " (weight quantizers forced static)", Algorithm: r.Algorithm}
	for _, rule := range r.Rules {
		if strings.Contains(rule.QuantizerName, "weight_quantizer") && !rule.CfgList && len(rule.Cfg) == 1 && rule.Cfg[0].BlockSizes != nil {
			a := rule.Cfg[0]
			bs := *a.BlockSizes
			bs.Dims = make(map[int]int, len(a.BlockSizes.Dims))
			for k, v := range a.BlockSizes.Dims {
				bs.Dims[k] = v
			}
			bs.Type = "static"
			a.BlockSizes = &bs
			rule.Cfg = []Attributes{a}
		}
		out.Rules = append(out.Rules, rule)
	}
	return out
}
