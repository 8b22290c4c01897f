package stages

import (
	"fmt"
	"strings"

	quantstream "github.com/quantstream/quantstream"
	"github.com/quantstream/quantstream/quant"
)

// Keys containing one of these are dropped unless a rename rule below matches
// (quant_utils.postprocess_state_dict).
var postprocessSkip = []string{"output_quantizer", "_amax", "_bias_value", "input_quantizer._pre_quant_scale", "weight_shape"}

// Rename rules, tried in order, matched as a key suffix.
var postprocessRename = []struct{ suffix, repl string }{
	{"k_bmm_quantizer._amax", "k_proj.k_scale"},
	{"v_bmm_quantizer._amax", "v_proj.v_scale"},
	{"k_bmm_quantizer._bias_value", "k_proj.k_bias"},
	{"v_bmm_quantizer._bias_value", "v_proj.v_bias"},
	{"input_quantizer._pre_quant_scale", "pre_quant_scale"},
}

var realQuantDrops = []string{"weight_quantizer._scale", "weight_quantizer._double_scale", "weight_quantizer._scale_zeros"}

// postprocessKey decides the fate of one state-dict key: the output name ("" when
// dropped) and whether the value is a KV-cache amax to turn into a scale.
func postprocessKey(key string, qlora bool) (out string, kvScale bool) {
	if key == "vision_model.radio_model.summary_idxs" {
		return "", false
	}
	for _, s := range realQuantDrops {
		if strings.HasSuffix(key, s) {
			return "", false
		}
	}
	if qlora {
		if strings.Contains(key, "lora") {
			return "", false
		}
		key = strings.ReplaceAll(key, ".base_layer.", ".")
	}
	skip := false
	for _, s := range postprocessSkip {
		if strings.Contains(key, s) {
			skip = true
			break
		}
	}
	if !skip {
		return key, false
	}
	for i, r := range postprocessRename {
		if strings.HasSuffix(key, r.suffix) {
			return strings.TrimSuffix(key, r.suffix) + r.repl, i < 2
		}
	}
	return "", false
}

// maybeSqueezeScale is _maybe_squeeze_scale: a 3-D tensor with "scale" in its key and
// a leading 1 loses that dimension.
func maybeSqueezeScale(key string, shape []int64) []int64 {
	if strings.Contains(key, "scale") && len(shape) == 3 && shape[0] == 1 {
		return shape[1:]
	}
	return shape
}

// kvFormats are the KV-cache formats the HF export can write scales for.
var kvFormats = map[string]bool{"FP8": true, "NVFP4": true, "NVFP4_AFFINE": true}

// postprocess applies quant_utils.postprocess_state_dict to the layer's tensors: KV amax
// becomes k_scale/v_scale = amax.float() ÷ 448 (quant.KVCacheScaleHF: no zero fix, no
// clamp; maxbound is ModelOpt's argument, always 448 in the HF export).
func postprocess(ts *tensorSet, maxbound float32, kvFormat string, qlora bool, mode quant.DivMode) error {
	if maxbound != quant.E4M3Max {
		return fmt.Errorf("%w: KV maxbound %v (the HF export uses 448)", ErrUnsupported, maxbound)
	}
	for _, key := range sortedKeys(ts.hdr) {
		out, kv := postprocessKey(key, qlora)
		h := ts.hdr[key]
		if out == "" {
			ts.del(key)
			continue
		}
		if kv && !kvFormats[kvFormat] {
			return fmt.Errorf("%w: %q for %s (kv cache format %q)", ErrKVCacheFormat, key, out, kvFormat)
		}
		shape := maybeSqueezeScale(out, h.Shape)
		if out == key && len(shape) == len(h.Shape) {
			continue
		}
		if lo, ok := ts.later[key]; ok && !kv {
			// Renamed or squeezed: the same bytes under another header.
			ts.del(key)
			lo.job.outs[lo.k] = out
			ts.setLater(out, h.DType, shape, lo.job, lo.k)
			continue
		}
		var t quant.Tensor
		if !ts.planning() {
			var err error
			if t, err = ts.get(key); err != nil {
				return err
			}
		}
		ts.del(key)
		if kv {
			if ts.planning() {
				ts.setHeader(out, quant.F32, shape)
				continue
			}
			s, err := quant.KVCacheScaleHF(t, kvFormat, mode)
			if err != nil {
				return fmt.Errorf("tensor %q: %w", key, err)
			}
			s.Shape = shape
			ts.set(out, s)
			continue
		}
		if ts.planning() {
			ts.setHeader(out, h.DType, shape)
			continue
		}
		t.Shape = shape
		ts.set(out, t)
	}
	return nil
}

// PostprocessStateDict applies postprocess_state_dict to a whole state dict. tied maps
// an alias key to the key whose storage it shares; an alias is dropped when its target
// is present (the data-pointer backstop of the resident export).
func (Reference) PostprocessStateDict(sd map[string]quant.Tensor, maxbound float32, kvFormat string, qlora bool, tied map[string]string, mode quant.DivMode) (map[string]quant.Tensor, error) {
	ts := &tensorSet{hdr: map[string]quantstream.TensorInfo{}, data: map[string]quant.Tensor{}}
	for k, t := range sd {
		if c, ok := tied[k]; ok {
			if _, has := sd[c]; has {
				continue
			}
		}
		ts.set(k, t)
	}
	if err := postprocess(ts, maxbound, kvFormat, qlora, mode); err != nil {
		return nil, err
	}
	return ts.data, nil
}
