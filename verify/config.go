package verify

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"

	"github.com/quantstream/quantstream/quant"
	"github.com/quantstream/quantstream/stages"
)

// mixedPrecision is the quant_algo of a checkpoint whose modules have different
// formats, listed in quantized_layers.
const mixedPrecision = "MIXED_PRECISION"

// quantConfig is a checkpoint's ModelOpt quantization config, from
// hf_quant_config.json or, without it, from config.json's quantization_config.
type quantConfig struct {
	Source  string // the file it was read from
	Algo    string // quant_algo as written, "" for null
	KV      string // kv_cache_quant_algo, "" for null
	Group   int    // group_size, 0 when absent
	Exclude []string
	Layers  map[string]layerConfig // quantized_layers (MIXED_PRECISION)
	// Keys of the quantization object, for loaders that require some of them.
	Keys map[string]bool
	// Inline is config.json's quantization_config as written, nil when absent.
	Inline map[string]any
}

type layerConfig struct {
	Algo  string
	Group int
}

// parseQuantConfig reads the quantization config of c, checking that both files parse
// as ModelOpt writes them and agree. It returns nil for an unquantized checkpoint.
func parseQuantConfig(c *checkpoint, r *Report) *quantConfig {
	cfgErr := func(file, format string, a ...any) {
		r.add(Finding{Severity: Error, Check: CheckConfig, File: file, Message: fmt.Sprintf(format, a...)})
	}
	var hf, inline *quantConfig
	if c.hfQuant != nil {
		var raw map[string]any
		if err := json.Unmarshal(c.hfQuant, &raw); err != nil {
			cfgErr("hf_quant_config.json", "not a JSON object: %v", err)
		} else if q, ok := raw["quantization"].(map[string]any); ok {
			hf = nestedConfig(q, "hf_quant_config.json", cfgErr)
		} else {
			cfgErr("hf_quant_config.json", `no "quantization" object (ModelOpt writes {"producer": …, "quantization": {"quant_algo": …}})`)
		}
	}
	var inlineRaw map[string]any
	if c.configJSON != nil {
		var cfg map[string]any
		if err := json.Unmarshal(c.configJSON, &cfg); err != nil {
			cfgErr("config.json", "not a JSON object: %v", err)
		} else if q, ok := cfg["quantization_config"]; ok && q != nil {
			if inlineRaw, ok = q.(map[string]any); !ok {
				cfgErr("config.json", "quantization_config is not an object")
			}
		}
	}
	if inlineRaw != nil {
		method, _ := inlineRaw["quant_method"].(string)
		if !strings.HasPrefix(strings.ToLower(method), "modelopt") {
			cfgErr("config.json", "quantization_config.quant_method is %q: not a ModelOpt checkpoint (verify checks ModelOpt exports; engines pick another loader for it)", method)
			return nil
		}
		inline = flatConfig(inlineRaw, "config.json", cfgErr)
		inline.Inline = inlineRaw
	}
	switch {
	case hf != nil && inline != nil:
		agree(hf, inline, r)
		hf.Inline = inline.Inline
		return hf
	case hf != nil:
		return hf
	case inline != nil:
		return inline
	}
	return nil
}

// nestedConfig reads hf_quant_config.json's "quantization" object.
func nestedConfig(q map[string]any, file string, cfgErr func(string, string, ...any)) *quantConfig {
	qc := &quantConfig{Source: file, Keys: map[string]bool{}}
	for k := range q {
		qc.Keys[k] = true
	}
	qc.Algo = stringField(q, "quant_algo", file, cfgErr)
	qc.KV = stringField(q, "kv_cache_quant_algo", file, cfgErr)
	qc.Group = intField(q, "group_size", file, cfgErr)
	qc.Exclude = stringList(q, "exclude_modules", file, cfgErr)
	qc.Layers = layerConfigs(q, file, cfgErr)
	return qc
}

// flatConfig reads config.json's quantization_config (convert_hf_quant_config_format):
// "ignore" for the excluded modules, kv_cache_scheme for the KV cache, the group size
// in config_groups.
func flatConfig(q map[string]any, file string, cfgErr func(string, string, ...any)) *quantConfig {
	qc := &quantConfig{Source: file, Keys: map[string]bool{}}
	for k := range q {
		qc.Keys[k] = true
	}
	qc.Algo = stringField(q, "quant_algo", file, cfgErr)
	switch kv := q["kv_cache_scheme"].(type) {
	case nil:
	case string:
		qc.KV = kv
	case map[string]any:
		if kv["type"] == "float" && kv["num_bits"] == float64(8) {
			qc.KV = "FP8"
		} else {
			cfgErr(file, "quantization_config.kv_cache_scheme %v is not a scheme ModelOpt writes", kv)
		}
	default:
		cfgErr(file, "quantization_config.kv_cache_scheme is neither a string nor an object")
	}
	qc.Exclude = stringList(q, "ignore", file, cfgErr)
	qc.Layers = layerConfigs(q, file, cfgErr)
	qc.Group = intField(q, "group_size", file, cfgErr)
	if groups, ok := q["config_groups"].(map[string]any); ok && qc.Group == 0 {
		sizes := map[int]bool{}
		for _, g := range groups {
			gm, _ := g.(map[string]any)
			w, _ := gm["weights"].(map[string]any)
			if n, ok := w["group_size"].(float64); ok {
				sizes[int(n)] = true
			}
		}
		if len(sizes) == 1 {
			for n := range sizes {
				qc.Group = n
			}
		}
	}
	return qc
}

func stringField(q map[string]any, key, file string, cfgErr func(string, string, ...any)) string {
	switch v := q[key].(type) {
	case nil:
		return ""
	case string:
		return v
	default:
		cfgErr(file, "%s is %v, not a string", key, v)
		return ""
	}
}

func intField(q map[string]any, key, file string, cfgErr func(string, string, ...any)) int {
	switch v := q[key].(type) {
	case nil:
		return 0
	case float64:
		if v != float64(int(v)) || v <= 0 {
			cfgErr(file, "%s is %v, not a positive integer", key, v)
			return 0
		}
		return int(v)
	default:
		cfgErr(file, "%s is %v, not an integer", key, v)
		return 0
	}
}

func stringList(q map[string]any, key, file string, cfgErr func(string, string, ...any)) []string {
	v, ok := q[key]
	if !ok || v == nil {
		return nil
	}
	l, ok := v.([]any)
	if !ok {
		cfgErr(file, "%s is not a list", key)
		return nil
	}
	out := make([]string, 0, len(l))
	for _, e := range l {
		s, ok := e.(string)
		if !ok {
			cfgErr(file, "%s holds %v, not a string", key, e)
			continue
		}
		out = append(out, s)
	}
	return out
}

func layerConfigs(q map[string]any, file string, cfgErr func(string, string, ...any)) map[string]layerConfig {
	v, ok := q["quantized_layers"]
	if !ok || v == nil {
		return nil
	}
	m, ok := v.(map[string]any)
	if !ok {
		cfgErr(file, "quantized_layers is not an object")
		return nil
	}
	out := map[string]layerConfig{}
	for name, e := range m {
		em, ok := e.(map[string]any)
		if !ok {
			cfgErr(file, "quantized_layers[%q] is not an object", name)
			continue
		}
		out[name] = layerConfig{Algo: stringField(em, "quant_algo", file, cfgErr), Group: intField(em, "group_size", file, cfgErr)}
	}
	return out
}

// agree reports every field on which the two configs disagree: an engine that reads
// one of them (vLLM and SGLang read config.json first, TensorRT-LLM
// hf_quant_config.json) would load something else than one that reads the other.
func agree(hf, inline *quantConfig, r *Report) {
	dis := func(what string, a, b any) {
		r.add(Finding{Severity: Error, Check: CheckConfig, File: "config.json",
			Message: fmt.Sprintf("quantization_config disagrees with hf_quant_config.json on %s: %v vs %v", what, b, a)})
	}
	if hf.Algo != inline.Algo {
		dis("quant_algo", hf.Algo, inline.Algo)
	}
	if hf.KV != inline.KV {
		dis("the KV cache algorithm (kv_cache_quant_algo / kv_cache_scheme)", hf.KV, inline.KV)
	}
	a, b := slices.Sorted(slices.Values(hf.Exclude)), slices.Sorted(slices.Values(inline.Exclude))
	if !slices.Equal(slices.Compact(a), slices.Compact(b)) {
		dis("the excluded modules (exclude_modules / ignore)", a, b)
	}
	if hf.Group != 0 && inline.Group != 0 && hf.Group != inline.Group {
		dis("group_size", hf.Group, inline.Group)
	}
	if !maps.Equal(hf.Layers, inline.Layers) {
		for _, n := range sortedKeys(hf.Layers) {
			if inline.Layers[n] != hf.Layers[n] {
				dis(fmt.Sprintf("quantized_layers[%q]", n), hf.Layers[n], inline.Layers[n])
				return
			}
		}
		for _, n := range sortedKeys(inline.Layers) {
			if _, ok := hf.Layers[n]; !ok {
				dis(fmt.Sprintf("quantized_layers[%q]", n), "absent", inline.Layers[n])
				return
			}
		}
	}
}

var (
	algoFormatsOnce sync.Once
	algoFormats     map[string]string
)

// formatOf maps a quant_algo to the ModelOpt format whose export writes it: the
// inverse of stages.LayerQuantConfig (process_layer_quant_config) over every format
// quant registers, so the two cannot drift. ok is false for an algorithm no format
// writes (MIXED_PRECISION included).
func formatOf(algo string) (string, bool) {
	algoFormatsOnce.Do(func() {
		algoFormats = map[string]string{}
		for _, f := range quant.Formats() {
			a, _ := stages.LayerQuantConfig(f, 0).Get("quant_algo")
			if s, ok := a.(string); ok {
				algoFormats[s] = f
			}
		}
	})
	f, ok := algoFormats[algo]
	return f, ok
}
