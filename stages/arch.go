package stages

import (
	"github.com/quantstream/quantstream/arch"
)

// The model rules live in package arch (families as data); these names keep the
// stages API readable where a plan exposes them.
type (
	// Arch is the family whose rules an export applies (Plan.Arch).
	Arch = arch.Family
	// FusionRule is one fusion group rule of a family.
	FusionRule = arch.FusionRule
	// PrequantRule is one nvfp4_awq pre_quant_scale fold of a family.
	PrequantRule = arch.PrequantRule
	// FusedGroup is a FusionRule instantiated in one decoder layer.
	FusedGroup = arch.FusedGroup
	// ModelConfig is the part of config.json the export reads.
	ModelConfig = arch.Config
)

// ParseModelConfig decodes config.json.
func ParseModelConfig(b []byte) (*ModelConfig, error) { return arch.ParseConfig(b) }

// DetectArch picks the built-in family of a config.json (arch.Builtin().Detect); an
// unknown family is an error, never a guess.
func DetectArch(c *ModelConfig) (*Arch, error) { return arch.Builtin().Detect(c) }

// LayerOf returns the decoder layer index and prefix of a tensor name
// ("model.layers.3.mlp.up_proj.weight" -> 3, "model.layers.3."), or NonDecoder (-1).
func LayerOf(name string) (int, string) { return arch.LayerOf(name) }

func moduleLess(a, b string) bool { return arch.ModuleLess(a, b) }

// SharesFusedScales reports whether the export makes the modules of a fused group of
// this format share their input amax and per-tensor weight amax (so their input_scale
// and weight_scale_2 come out equal): every quantized format but per-tensor FP8 (fp8,
// fp8_pb_real), whose groups the export leaves alone.
func SharesFusedScales(format string) bool {
	return format != "" && format != "fp8" && format != "fp8_pb_real"
}
