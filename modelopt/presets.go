package modelopt

import (
	"fmt"
	"sort"
	"strings"

	"github.com/quantstream/quantstream/quant"
)

// The presets below restate ModelOpt's recipe presets (modelopt_recipes/configs/ptq/
// presets/{model,kv}/*.yaml, exposed as mtq.<NAME>) in Go, resolved the way ModelOpt's
// loader resolves their $imports. They are checked against the full resolved recipes of
// the golden cases (quant_recipe.json).

func nb(n quant.NumBits) *quant.NumBits { return &n }

func axisNone() *Axis        { return &Axis{} }
func axisInt(a int) *Axis    { return &Axis{Values: []int{a}} }
func f64(f float64) *float64 { return &f }

func blocks(dims map[int]int, typ string, scale *quant.NumBits) *quant.BlockSizes {
	return &quant.BlockSizes{Dims: dims, Type: typ, ScaleBits: scale}
}

// Numeric formats (modelopt_recipes/configs/numerics).
func numFP8() Attributes  { return Attributes{NumBits: nb(quant.BitsE4M3), Axis: axisNone()} }
func numInt8() Attributes { return Attributes{NumBits: nb(quant.BitsInt8), Axis: axisNone()} }
func numInt8PerChannel() Attributes {
	return Attributes{NumBits: nb(quant.BitsInt8), Axis: axisInt(0)}
}
func numInt4PerBlock() Attributes {
	return Attributes{NumBits: nb(quant.BitsInt4), BlockSizesSet: true,
		BlockSizes: blocks(map[int]int{-1: 128}, "static", nil)}
}
func numNVFP4() Attributes {
	return Attributes{NumBits: nb(quant.BitsE2M1), EffectiveBits: f64(4.5), BlockSizesSet: true,
		BlockSizes: blocks(map[int]int{-1: 16}, "dynamic", nb(quant.BitsE4M3))}
}
func numNVFP4BS32() Attributes {
	return Attributes{NumBits: nb(quant.BitsE2M1), BlockSizesSet: true,
		BlockSizes: blocks(map[int]int{-1: 32}, "dynamic", nb(quant.BitsE4M3))}
}
func numMXFP4() Attributes {
	return Attributes{NumBits: nb(quant.BitsE2M1), BlockSizesSet: true,
		BlockSizes: blocks(map[int]int{-1: 32}, "dynamic", nb(quant.BitsE8M0))}
}
func numMXFP8() Attributes {
	return Attributes{NumBits: nb(quant.BitsE4M3), BlockSizesSet: true,
		BlockSizes: blocks(map[int]int{-1: 32}, "dynamic", nb(quant.BitsE8M0))}
}

func cfgRule(name string, a ...Attributes) Rule { return Rule{QuantizerName: name, Cfg: a} }
func offRule(name string) Rule                  { return Rule{QuantizerName: name, Enable: boolp(false)} }

// baseDisableAll is configs/ptq/units/base_disable_all.
func baseDisableAll() []Rule { return []Rule{offRule("*")} }

// defaultDisabled is configs/ptq/units/default_disabled_quantizers: routers, lm_head,
// vision towers and the layer types that are never quantized.
func defaultDisabled() []Rule {
	var rs []Rule
	for _, n := range []string{
		"*block_sparse_moe.gate*", "*linear_attn.conv1d*", "*linear_attn.in_proj_a*",
		"*linear_attn.in_proj_b*", "*lm_head*", "*mixer.conv1d*", "*mlp.gate.*",
		"*mlp.shared_expert_gate.*", "*output_layer*", "*proj_out.*", "*router*", "mtp.*",
		"output.*", "*embed_vision*", "*vision_tower*", "*visual*", "*vision_model*",
		"*multi_modal_projector*",
	} {
		rs = append(rs, offRule(n))
	}
	for _, c := range []string{"nn.BatchNorm1d", "nn.BatchNorm2d", "nn.BatchNorm3d", "nn.LeakyReLU", "nn.Embedding"} {
		r := offRule("*")
		r.ParentClass = c
		rs = append(rs, r)
	}
	return rs
}

// modelRecipe builds base_disable_all + rules + default_disabled_quantizers.
func modelRecipe(name string, alg any, rules ...Rule) *Recipe {
	r := &Recipe{Name: name, Algorithm: alg}
	r.Rules = append(append(baseDisableAll(), rules...), defaultDisabled()...)
	return r
}

func weightAndInput(w, in Attributes) []Rule {
	return []Rule{cfgRule("*weight_quantizer", w), cfgRule("*input_quantizer", in)}
}

// kvCastRules is configs/ptq/units/kv_{fp8,nvfp4}_cast: the KV-cache quantizers
// with a constant amax (use_constant_amax), calibrated on nothing.
func kvCastRules(a Attributes) []Rule {
	a.UseConstantAmax = boolp(true)
	return []Rule{cfgRule("*[kv]_bmm_quantizer", a)}
}

// numNVFP4Static is configs/numerics/nvfp4_static: NVFP4 with static block scales
// (calibrated per-block amax and a global amax).
func numNVFP4Static() Attributes {
	return Attributes{NumBits: nb(quant.BitsE2M1), BlockSizesSet: true,
		BlockSizes: blocks(map[int]int{-1: 16}, "static", nb(quant.BitsE4M3))}
}

func kvRules(a Attributes, affine bool) []Rule {
	rs := []Rule{cfgRule("*[kv]_bmm_quantizer", a)}
	if affine {
		b := a
		b.Bias = blocks(map[int]int{-2: 0, -4: 0}, "static", nil)
		rs = append(rs, cfgRule("*[kv]_bmm_quantizer", b))
	}
	return rs
}

var presets = map[string]func() *Recipe{
	"FP8_DEFAULT_CFG": func() *Recipe {
		return modelRecipe("FP8_DEFAULT_CFG", "max", weightAndInput(numFP8(), numFP8())...)
	},
	"FP8_PER_CHANNEL_PER_TOKEN_CFG": func() *Recipe {
		w := Attributes{NumBits: nb(quant.BitsE4M3), Axis: axisInt(0)}
		in := Attributes{NumBits: nb(quant.BitsE4M3), Axis: axisNone(), Type: "dynamic",
			BlockSizesSet: true, BlockSizes: blocks(map[int]int{-1: 0}, "", nil)}
		return modelRecipe("FP8_PER_CHANNEL_PER_TOKEN_CFG", "max", weightAndInput(w, in)...)
	},
	"FP8_2D_BLOCKWISE_WEIGHT_ONLY_CFG": func() *Recipe {
		w := Attributes{NumBits: nb(quant.BitsE4M3), Axis: axisNone(), BlockSizesSet: true,
			BlockSizes: blocks(map[int]int{-1: 128, -2: 128}, "", nil)}
		return modelRecipe("FP8_2D_BLOCKWISE_WEIGHT_ONLY_CFG", "max",
			cfgRule("*weight_quantizer", w), offRule("*input_quantizer"))
	},
	"INT8_DEFAULT_CFG": func() *Recipe {
		return modelRecipe("INT8_DEFAULT_CFG", "max", weightAndInput(numInt8PerChannel(), numInt8())...)
	},
	"INT8_SMOOTHQUANT_CFG": func() *Recipe {
		return modelRecipe("INT8_SMOOTHQUANT_CFG", "smoothquant", weightAndInput(numInt8PerChannel(), numInt8())...)
	},
	"INT8_WEIGHT_ONLY_CFG": func() *Recipe {
		return modelRecipe("INT8_WEIGHT_ONLY_CFG", "max",
			cfgRule("*weight_quantizer", numInt8PerChannel()), offRule("*input_quantizer"))
	},
	"INT4_AWQ_CFG": func() *Recipe {
		return modelRecipe("INT4_AWQ_CFG", map[string]any{"method": "awq_lite", "alpha_step": 0.1},
			cfgRule("*weight_quantizer", numInt4PerBlock()), offRule("*input_quantizer"))
	},
	"INT4_BLOCKWISE_WEIGHT_ONLY_CFG": func() *Recipe {
		return modelRecipe("INT4_BLOCKWISE_WEIGHT_ONLY_CFG", "max",
			cfgRule("*weight_quantizer", numInt4PerBlock()), offRule("*input_quantizer"))
	},
	"W4A8_AWQ_BETA_CFG": func() *Recipe {
		w := Rule{QuantizerName: "*weight_quantizer", Cfg: []Attributes{numInt4PerBlock(), numFP8()}, CfgList: true}
		return modelRecipe("W4A8_AWQ_BETA_CFG", "awq_lite", w, cfgRule("*input_quantizer", numFP8()))
	},
	"NVFP4_DEFAULT_CFG": func() *Recipe {
		return modelRecipe("NVFP4_DEFAULT_CFG", "max", weightAndInput(numNVFP4(), numNVFP4())...)
	},
	"NVFP4_AWQ_LITE_CFG": func() *Recipe {
		return modelRecipe("NVFP4_AWQ_LITE_CFG", "awq_lite", weightAndInput(numNVFP4(), numNVFP4())...)
	},
	"W4A16_NVFP4_CFG": func() *Recipe {
		return modelRecipe("W4A16_NVFP4_CFG", "max", cfgRule("*weight_quantizer", numNVFP4()))
	},
	"W4A8_NVFP4_FP8_CFG": func() *Recipe {
		return modelRecipe("W4A8_NVFP4_FP8_CFG", "max", weightAndInput(numNVFP4BS32(), numFP8())...)
	},
	"MXFP4_DEFAULT_CFG": func() *Recipe {
		return modelRecipe("MXFP4_DEFAULT_CFG", nil, weightAndInput(numMXFP4(), numMXFP4())...)
	},
	"W4A8_MXFP4_FP8_CFG": func() *Recipe {
		return modelRecipe("W4A8_MXFP4_FP8_CFG", nil, weightAndInput(numMXFP4(), numFP8())...)
	},
	"MXFP8_DEFAULT_CFG": func() *Recipe {
		return modelRecipe("MXFP8_DEFAULT_CFG", nil, weightAndInput(numMXFP8(), numMXFP8())...)
	},
	"FP8_KV_CFG": func() *Recipe {
		return &Recipe{Name: "FP8_KV_CFG", Rules: kvRules(numFP8(), false)}
	},
	"FP8_AFFINE_KV_CFG": func() *Recipe {
		return &Recipe{Name: "FP8_AFFINE_KV_CFG", Rules: kvRules(numFP8(), true)}
	},
	"NVFP4_KV_CFG": func() *Recipe {
		return &Recipe{Name: "NVFP4_KV_CFG", Rules: kvRules(numNVFP4(), false)}
	},
	"NVFP4_AFFINE_KV_CFG": func() *Recipe {
		return &Recipe{Name: "NVFP4_AFFINE_KV_CFG", Rules: kvRules(numNVFP4(), true)}
	},
	// The cast modes have no mtq constant; they go by hf_ptq's --kv_cache_qformat
	// names (configs/ptq/presets/kv/fp8_cast, nvfp4_cast). fp8_cast is hf_ptq's default.
	"fp8_cast": func() *Recipe {
		return &Recipe{Name: "fp8_cast", Rules: kvCastRules(numFP8())}
	},
	"nvfp4_cast": func() *Recipe {
		return &Recipe{Name: "nvfp4_cast", Rules: kvCastRules(numNVFP4())}
	},
}

// kvPresets are the presets meant for --kv-cache (they only touch *[kv]_bmm_quantizer).
var kvPresets = map[string]bool{
	"FP8_KV_CFG": true, "FP8_AFFINE_KV_CFG": true, "NVFP4_KV_CFG": true, "NVFP4_AFFINE_KV_CFG": true,
	"fp8_cast": true, "nvfp4_cast": true,
}

// PresetNames lists the model presets and the KV-cache presets, sorted.
func PresetNames() (model, kv []string) {
	for n := range presets {
		if kvPresets[n] {
			kv = append(kv, n)
		} else {
			model = append(model, n)
		}
	}
	sort.Strings(model)
	sort.Strings(kv)
	return model, kv
}

// Preset returns a fresh copy of a ModelOpt preset by its mtq name ("NVFP4_DEFAULT_CFG",
// "FP8_KV_CFG", ...).
func Preset(name string) (*Recipe, error) {
	f, ok := presets[name]
	if !ok {
		m, kv := PresetNames()
		return nil, fmt.Errorf("%w: unknown preset %q (model presets: %s; KV-cache presets: %s)",
			ErrRecipe, name, strings.Join(m, ", "), strings.Join(kv, ", "))
	}
	return f(), nil
}

// ResolveRecipe returns the recipe for --recipe and --kv-cache: a preset name or a
// recipe file (.json in the quant_recipe.json form, .yaml/.yml in the modelopt_recipes
// form), combined with an optional KV-cache preset or file (kv may be "").
func ResolveRecipe(recipe, kv string) (*Recipe, error) {
	r, err := loadRecipe(recipe)
	if err != nil {
		return nil, err
	}
	if kv == "" {
		return r, nil
	}
	k, err := loadRecipe(kv)
	if err != nil {
		return nil, err
	}
	return Combine(r, k), nil
}

func loadRecipe(s string) (*Recipe, error) {
	switch {
	case strings.HasSuffix(s, ".json"):
		return ReadRecipeJSON(s)
	case strings.HasSuffix(s, ".yaml") || strings.HasSuffix(s, ".yml"):
		return ReadRecipeYAML(s)
	}
	return Preset(s)
}
