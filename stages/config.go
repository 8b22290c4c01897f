package stages

import (
	"fmt"
	"slices"
	"sort"
)

// ModelOptVersion is the ModelOpt release whose export this package reproduces; it is
// the default producer version written into hf_quant_config.json.
const ModelOptVersion = "0.47.0.dev81"

// ConfigModule is one module of get_quant_config: a module that owns weight or input
// quantizers, in named_modules order.
type ConfigModule struct {
	Name   string
	Format string // "" for None; "nvfp4_static" for a static NVFP4 weight quantizer
	Block  int    // awq_block_size
}

// LayerQuantConfig is process_layer_quant_config's per-layer entry for one format.
func LayerQuantConfig(format string, block int) Obj {
	awq := func(algo string) Obj {
		return Obj{{"quant_algo", algo}, {"group_size", block}, {"has_zero_point", false}, {"pre_quant_scale", true}}
	}
	gs := func(algo string) Obj { return Obj{{"quant_algo", algo}, {"group_size", block}} }
	switch format {
	case "fp8":
		return Obj{{"quant_algo", "FP8"}}
	case "fp8_pc_pt":
		return Obj{{"quant_algo", "FP8_PER_CHANNEL_PER_TOKEN"}}
	case "int4_awq":
		return awq("W4A16_AWQ")
	case "w4a8_awq":
		return awq("W4A8_AWQ")
	case "int8_wo":
		return Obj{{"quant_algo", "W8A16"}}
	case "int8_sq":
		return Obj{{"quant_algo", "W8A8_SQ_PER_CHANNEL"}}
	case "nvfp4", "nvfp4_static":
		return gs("NVFP4")
	case "w4a16_nvfp4":
		return gs("W4A16_NVFP4")
	case "nvfp4_awq":
		return awq("NVFP4_AWQ")
	case "w4a8_nvfp4_fp8":
		return gs("W4A8_NVFP4_FP8")
	case "w4a8_mxfp4_fp8":
		return gs("W4A8_MXFP4_FP8")
	case "nvfp4_svdquant":
		return awq("NVFP4_SVD")
	case "mxfp8":
		return gs("MXFP8")
	case "":
		return Obj{{"quant_algo", nil}}
	}
	// mxfp4, fp8_pb_wo, fp8_pb_real and anything else: the raw string.
	return Obj{{"quant_algo", format}}
}

// processLayerQuantConfig is process_layer_quant_config over modules in order.
func processLayerQuantConfig(mods []ConfigModule) Obj {
	var exclude []string
	layers := Obj{}
	var distinct []string
	seen := map[string]bool{}
	var single Obj
	for _, m := range mods {
		cfg := LayerQuantConfig(m.Format, m.Block)
		if algo, _ := cfg.Get("quant_algo"); algo == nil {
			exclude = append(exclude, m.Name)
			continue
		}
		b, _ := cfg.MarshalJSON()
		if !seen[string(b)] {
			seen[string(b)] = true
			distinct = append(distinct, string(b))
			single = cfg
		}
		layers.Set(m.Name, cfg)
	}
	out := Obj{{"quant_algo", nil}, {"kv_cache_quant_algo", nil}, {"quantized_layers", layers}}
	switch len(distinct) {
	case 0:
		out.Set("quantized_layers", Obj{})
	case 1:
		for _, f := range single {
			out.Set(f.K, f.V)
		}
		names := make([]string, len(layers))
		for i, f := range layers {
			names[i] = f.K
		}
		ex := summarizeExcludeModules(exclude, names)
		sort.Strings(ex)
		out.Set("exclude_modules", ex)
		out.Delete("quantized_layers")
	default:
		out.Set("quant_algo", "MIXED_PRECISION")
	}
	return out
}

// summarizeExcludeModules is quant_utils._prefix_wildcard_summarize_exclude_modules: each
// unquantized name is replaced by the shortest wildcard prefix that matches no
// quantized name. The result is unsorted; callers sort it.
func summarizeExcludeModules(unquantized, quantized []string) []string {
	neg := map[string]bool{}
	for _, n := range quantized {
		neg[n] = true
		for i := 0; i <= len(n); i++ {
			neg[n[:i]+"*"] = true
		}
	}
	result := map[string]bool{}
	var order []string
	add := func(s string) {
		if !result[s] {
			result[s] = true
			order = append(order, s)
		}
	}
	for _, u := range unquantized {
		var cands [][]string
		for i := 0; i < len(u); i++ {
			if u[i] == '.' {
				cands = append(cands, []string{u[:i] + "*"}, []string{u[:i], u[:i] + ".*"})
			}
		}
		cands = append(cands, []string{u})
		for _, c := range cands {
			bad, all := false, true
			for _, s := range c {
				bad = bad || neg[s]
				all = all && result[s]
			}
			if bad {
				continue
			}
			if all {
				break
			}
			if len(c) == 2 {
				add(c[1])
			} else {
				for _, s := range c {
					add(s)
				}
			}
			break
		}
	}
	return order
}

// QuantConfig is get_quant_config: the hf_quant_config.json object. routers are the
// unquantized MoE routers (recorded as None unless already present); kvFormat is the
// KV cache format or "".
func QuantConfig(mods []ConfigModule, routers []string, kvFormat string, producerVersion string) Obj {
	all := slices.Clone(mods)
	have := map[string]bool{}
	for _, m := range mods {
		have[m.Name] = true
	}
	for _, r := range routers {
		if !have[r] {
			all = append(all, ConfigModule{Name: r})
			have[r] = true
		}
	}
	q := Obj{{"quant_algo", nil}, {"kv_cache_quant_algo", nil}}
	for _, f := range processLayerQuantConfig(all) {
		q.Set(f.K, f.V)
	}
	if kvFormat != "" {
		q.Set("kv_cache_quant_algo", kvFormat)
	}
	return Obj{{"producer", Obj{{"name", "modelopt"}, {"version", producerVersion}}}, {"quantization", q}}
}

// hfQuantConfigFormat is convert_hf_quant_config_format: the config.json
// "quantization_config" value.
func hfQuantConfigFormat(c Obj) Obj {
	qv, _ := c.Get("quantization")
	q, _ := qv.(Obj)
	algo, _ := q.Get("quant_algo")
	gsOr := func(d int) any {
		if v, ok := q.Get("group_size"); ok {
			return v
		}
		return d
	}
	out := Obj{}
	fl := func(bits int, extra ...Field) Obj {
		return append(Obj{{"dynamic", false}, {"num_bits", bits}, {"type", "float"}}, extra...)
	}
	switch algo {
	case "FP8":
		out.Set("config_groups", Obj{{"group_0", Obj{{"input_activations", fl(8)}, {"weights", fl(8)}, {"targets", []string{"Linear"}}}}})
	case "NVFP4":
		g := gsOr(16)
		out.Set("config_groups", Obj{{"group_0", Obj{{"input_activations", fl(4, Field{"group_size", g})},
			{"weights", fl(4, Field{"group_size", g})}, {"targets", []string{"Linear"}}}}})
	case "W4A16_NVFP4":
		g := gsOr(16)
		out.Set("config_groups", Obj{{"group_0", Obj{{"weights", fl(4, Field{"group_size", g})}, {"targets", []string{"Linear"}}}}})
	case "NVFP4_SVD":
		g := gsOr(16)
		grp := Obj{{"input_activations", fl(4, Field{"group_size", g})}, {"weights", fl(4, Field{"group_size", g})},
			{"has_zero_point", false}, {"pre_quant_scale", true}, {"targets", []string{"Linear"}}}
		if r, ok := q.Get("lora_rank"); ok && r != nil {
			grp.Set("lora_rank", r)
		}
		out.Set("config_groups", Obj{{"group_0", grp}})
	case "MIXED_PRECISION":
		lv, _ := q.Get("quantized_layers")
		layers, _ := lv.(Obj)
		type group struct {
			cfg   Obj
			names []string
		}
		var groups []*group
		byKey := map[string]*group{}
		for _, f := range layers {
			cfg, _ := f.V.(Obj)
			sorted := slices.Clone(cfg)
			sort.Slice(sorted, func(i, j int) bool { return sorted[i].K < sorted[j].K })
			b, _ := sorted.MarshalJSON()
			g := byKey[string(b)]
			if g == nil {
				g = &group{cfg: sorted}
				byKey[string(b)] = g
				groups = append(groups, g)
			}
			g.names = append(g.names, f.K)
		}
		cg := Obj{}
		for i, g := range groups {
			a, _ := g.cfg.Get("quant_algo")
			s, _ := a.(string)
			gs, _ := g.cfg.Get("group_size")
			gc := groupConfig(s, gs)
			names := slices.Clone(g.names)
			sort.Strings(names)
			gc.Set("targets", names)
			cg.Set(fmt.Sprintf("group_%d", i), gc)
		}
		out.Set("config_groups", cg)
		out.Set("quantized_layers", layers)
	}
	if ex, ok := q.Get("exclude_modules"); ok && ex != nil {
		out.Set("ignore", ex)
	} else {
		out.Set("ignore", []string{})
	}
	if s, ok := algo.(string); ok && s != "" {
		out.Set("quant_algo", s)
	}
	if kv, _ := q.Get("kv_cache_quant_algo"); kv != nil && kv != "" {
		if kv == "FP8" {
			out.Set("kv_cache_scheme", fl(8))
		} else {
			out.Set("kv_cache_scheme", kv)
		}
	}
	if p, ok := c.Get("producer"); ok && p != nil {
		out.Set("producer", p)
	}
	out.Set("quant_method", "modelopt")
	return out
}

// groupConfig is _quant_algo_to_group_config for MIXED_PRECISION groups.
func groupConfig(algo string, gsv any) Obj {
	gs := func(d int) any {
		if n, ok := gsv.(int); ok && n != 0 {
			return n
		}
		return d
	}
	f := func(bits int, typ string, extra ...Field) Obj {
		return append(Obj{{"dynamic", false}, {"num_bits", bits}, {"type", typ}}, extra...)
	}
	switch algo {
	case "FP8":
		return Obj{{"input_activations", f(8, "float")}, {"weights", f(8, "float")}}
	case "FP8_PER_CHANNEL_PER_TOKEN":
		return Obj{{"input_activations", f(8, "float")}, {"weights", f(8, "float", Field{"strategy", "channel"})}}
	case "NVFP4":
		g := gs(16)
		return Obj{{"input_activations", f(4, "float", Field{"group_size", g})}, {"weights", f(4, "float", Field{"group_size", g})}}
	case "W4A16_AWQ":
		return Obj{{"weights", f(4, "int", Field{"group_size", gs(128)})}}
	case "W4A16_NVFP4":
		return Obj{{"weights", f(4, "float", Field{"group_size", gs(16)})}}
	case "NVFP4_SVD":
		g := gs(16)
		return Obj{{"input_activations", f(4, "float", Field{"group_size", g})}, {"weights", f(4, "float", Field{"group_size", g})},
			{"has_zero_point", false}, {"pre_quant_scale", true}}
	case "NVFP4_AWQ", "W4A8_AWQ":
		g := gs(128)
		return Obj{{"input_activations", f(8, "float", Field{"group_size", g})}, {"weights", f(4, "float", Field{"group_size", g})}}
	case "W8A16":
		return Obj{{"weights", f(8, "int")}}
	case "W8A8_SQ_PER_CHANNEL":
		return Obj{{"input_activations", f(8, "int")}, {"weights", f(8, "int", Field{"strategy", "channel"})}}
	case "W4A8_NVFP4_FP8", "W4A8_MXFP4_FP8":
		return Obj{{"input_activations", f(8, "float")}, {"weights", f(4, "float", Field{"group_size", gs(16)})}}
	case "MXFP8":
		g := gs(32)
		return Obj{{"input_activations", f(8, "float", Field{"group_size", g})}, {"weights", f(8, "float", Field{"group_size", g})}}
	}
	return Obj{{"quant_algo", algo}}
}

// writeConfigJSON sets "quantization_config" in a config.json (keeping key order and
// number literals) and returns it as json.dump(indent=4) writes it.
func writeConfigJSON(configJSON []byte, hfQuantConfig Obj) ([]byte, error) {
	v, err := ParseOrdered(configJSON)
	if err != nil {
		return nil, fmt.Errorf("%w: config.json: %v", ErrConfig, err)
	}
	o, ok := v.(Obj)
	if !ok {
		return nil, fmt.Errorf("%w: config.json is not an object", ErrConfig)
	}
	o.Set("quantization_config", hfQuantConfigFormat(hfQuantConfig))
	return marshalPython(o)
}
