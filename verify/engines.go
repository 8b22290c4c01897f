package verify

import (
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/quantstream/quantstream"
)

// The rules below are read from the engines' ModelOpt loaders, at the commits named in
// each Source. The public search index holds versions of files rather than one tree,
// so a rule names the file and commit it was read from; where the files disagree or
// the deciding code was not read, the verdict is "unknown", never a guess. To update:
// read the loader again, change the rule and its Source together.

// Loads is an engine's verdict on a checkpoint.
type Loads string

const (
	LoadsYes     Loads = "yes"
	LoadsNo      Loads = "no"
	LoadsUnknown Loads = "unknown"
)

// EngineVerdict says whether an engine's ModelOpt loader accepts a checkpoint, and
// why not: Reasons are errors (refusals), warnings (it loads with a caveat) and notes
// (what the rules do not cover).
type EngineVerdict struct {
	Engine  string    `json:"engine"`
	Version string    `json:"version"`
	Loads   Loads     `json:"loads"`
	Reasons []Finding `json:"reasons,omitempty"`
}

// WriteText prints the verdict and its reasons.
func (v EngineVerdict) WriteText(w io.Writer) {
	fmt.Fprintf(w, "%s (%s): loads %s\n", v.Engine, v.Version, v.Loads)
	for _, f := range v.Reasons {
		fmt.Fprintf(w, "  %s\n", f.String())
	}
}

// support is what a loader does with one quant_algo.
type support struct {
	loads  Loads
	why    string // for no and unknown
	source string
}

// engine is one engine's ModelOpt-loader rules.
type engine struct {
	name, version string
	// normalize is how the loader spells quant_algo before matching it.
	normalize func(string) string
	// algo decides a (normalized) top-level quant_algo; mixed a per-layer one under
	// MIXED_PRECISION.
	algo, mixed func(algo string) support
	// kv describes the KV-cache config the loader reads, given the checkpoint's.
	kv func(qc *quantConfig) []Finding
	// rules are the shape and layout rules; each returns its problems.
	rules []func(a *analysis, algo string) []Finding
}

const (
	vllmModelopt   = "vllm/model_executor/layers/quantization/modelopt.py@00155cd"
	vllmWeightUtil = "vllm/model_executor/model_loader/weight_utils.py@0035bdf (get_quant_config; an older stored version)"

	sglRoute    = "python/sglang/srt/configs/model_config.py@001adf5 (_parse_modelopt_quant_config)"
	sglFP4      = "python/sglang/srt/layers/quantization/modelopt/schemes/modelopt_fp4.py@09bd889"
	sglFP8      = "python/sglang/srt/layers/quantization/modelopt/schemes/modelopt_fp8.py@578ca2f"
	sglW4A16    = "python/sglang/srt/layers/quantization/modelopt/schemes/modelopt_w4a16.py@26f34c2"
	sglMixed    = "python/sglang/srt/layers/quantization/modelopt/schemes/modelopt_mixed_precision.py@717e120"
	trtConfig   = "tensorrt_llm/_torch/model_config.py@008e0af (_build_modelopt_quant_config)"
	trtModelopt = "tensorrt_llm/quantization/modelopt_config.py@2edf354"
	trtEnum     = "tensorrt_llm/quantization/mode.py QuantAlgo (a stored version the index names no commit for)"
)

var engines = map[string]*engine{
	"vllm":   vllm,
	"sglang": sglang,
	"trtllm": trtllm,
}

// Engines lists the engines --engine accepts.
func Engines() []string { return sortedKeys(engines) }

var vllm = &engine{
	name: "vllm", version: "main@00155cd",
	normalize: strings.ToUpper, // from_config: quant_method = str(quant_method).upper()
	algo: func(a string) support {
		switch a {
		case "FP8", "FP8_PER_CHANNEL_PER_TOKEN", "FP8_PB_WO", "NVFP4", "W4A16_NVFP4", "MXFP8", mixedPrecision:
			return support{loads: LoadsYes, source: vllmModelopt}
		}
		return support{loads: LoadsNo, source: vllmModelopt,
			why: "not in vLLM's ModelOpt QUANT_ALGOS (FP8, FP8_PER_CHANNEL_PER_TOKEN, FP8_PB_WO, NVFP4, W4A16_NVFP4, MXFP8, MIXED_PRECISION): ModelOptQuantConfigBase.from_config raises"}
	},
	mixed: func(a string) support {
		switch strings.ToUpper(a) {
		case "FP8", "NVFP4", "W4A16_NVFP4":
			return support{loads: LoadsYes, source: vllmModelopt}
		}
		return support{loads: LoadsNo, source: vllmModelopt,
			why: "ModelOptMixedPrecisionConfig.get_quant_method builds FP8, NVFP4 and W4A16_NVFP4 layers only; any other layer is built unquantized and its packed weight does not fit"}
	},
	kv: func(qc *quantConfig) []Finding {
		if qc.Inline != nil && qc.KV != "" && qc.KV != "FP8" {
			return []Finding{{Severity: Warning, Check: CheckEngine, File: "config.json",
				Message: fmt.Sprintf("vLLM reads config.json's quantization_config when there is one (%s), and its flat reader recognises only kv_cache_scheme {type: float, num_bits: 8}: the %s KV cache config is not picked up (%s)", vllmWeightUtil, qc.KV, vllmModelopt)}}
		}
		return nil
	},
	rules: []func(*analysis, string) []Finding{vllmFieldsRule, vllmShapeRule},
}

// vllmFieldsRule: reading hf_quant_config.json (no quantization_config in config.json),
// NVFP4 and MXFP8 configs must name some fields; reading config.json, vLLM takes the
// top-level group_size or 16.
func vllmFieldsRule(a *analysis, algo string) []Finding {
	qc := a.qc
	var out []Finding
	if qc.Inline == nil {
		var need []string
		switch {
		case strings.Contains(algo, "NVFP4"):
			need = []string{"group_size", "kv_cache_quant_algo", "exclude_modules"}
		case strings.Contains(algo, "MXFP8"):
			need = []string{"kv_cache_quant_algo", "exclude_modules"}
		}
		for _, k := range need {
			if !qc.Keys[k] {
				out = append(out, Finding{Severity: Error, Check: CheckEngine, File: qc.Source,
					Message: fmt.Sprintf("no %q in the quantization config: vLLM's ModelOpt %s loader requires it (%s)", k, algo, vllmModelopt)})
			}
		}
	}
	vgroup := 16
	if g, ok := qc.Inline["group_size"].(float64); ok && qc.Inline != nil {
		vgroup = int(g)
	} else if qc.Inline == nil && qc.Group != 0 {
		vgroup = qc.Group
	}
	for _, m := range a.mods {
		if strings.Contains(m.Format, "nvfp4") && !m.bad && m.Group != vgroup {
			out = append(out, Finding{Severity: Error, Check: CheckEngine, Tensor: m.tensors[roleScale],
				Message: fmt.Sprintf("NVFP4 blocks of %d, but vLLM sizes weight_scale with group_size %d (from the config it reads, default 16) (%s)", m.Group, vgroup, vllmModelopt)})
			break
		}
	}
	return out
}

// vllmShapeRule: the per-format shape checks of vLLM's linear and MoE methods, per
// module at tensor parallel 1 (a larger TP splits the dims further).
func vllmShapeRule(a *analysis, _ string) []Finding {
	var out []Finding
	bmm := false
	for _, m := range a.mods {
		if m.Format == "" || m.bad {
			continue
		}
		if m.BMM {
			bmm = true
			continue
		}
		out0, in := m.Logical[0], m.Logical[1]
		bad := func(format string, args ...any) {
			out = append(out, Finding{Severity: Error, Check: CheckEngine, Tensor: m.Weight,
				Message: fmt.Sprintf(format, args...) + " (" + vllmModelopt + ")"})
		}
		switch {
		case m.Format == "fp8_pb_wo":
			if out0%128 != 0 || in%128 != 0 {
				bad("FP8_PB_WO weight %v: ModelOptFp8PbWoLinearMethod needs out_features and in_features divisible by 128", m.Logical)
			}
			if s := a.c.tensors[m.tensors[roleScale]]; s != nil && len(s.Shape) != 4 && len(s.Shape) != 2 {
				bad("FP8_PB_WO weight_scale %s: vLLM takes the 4-D [out/128, 1, in/128, 1] (or 2-D) block scale only", fmtShape(s.Shape))
			}
		case strings.Contains(m.Format, "nvfp4") && in%16 != 0:
			bad("NVFP4 weight with in_features %d: vLLM needs a multiple of 16", in)
		case m.Format == "mxfp8" && in%32 != 0:
			bad("MXFP8 weight with in_features %d: vLLM needs a multiple of 32", in)
		}
	}
	if bmm {
		out = append(out, Finding{Severity: Note, Check: CheckEngine,
			Message: "unknown: batched-matmul experts ([E, …] experts.gate_up_proj with _weight_scale) are loaded by per-model code in vLLM, not read here"})
	}
	return out
}

var sglang = &engine{
	name: "sglang", version: "main (files at the commits in each reason)",
	normalize: func(s string) string { return s }, // _parse_modelopt_quant_config matches substrings, case-sensitive
	algo: func(a string) support {
		switch {
		case a == mixedPrecision:
			return support{loads: LoadsYes, source: sglRoute + ", " + sglMixed}
		case a == "NVFP4" || a == "FP8":
			return support{loads: LoadsYes, source: sglRoute + ", " + sglFP4 + ", " + sglFP8}
		case strings.Contains(a, "FP4"):
			return support{loads: LoadsNo, source: sglRoute + ", " + sglFP4,
				why: "routed to ModelOptFp4Config (the name contains FP4), whose from_config accepts only FP8 and NVFP4"}
		case a == "FP8_PER_CHANNEL_PER_TOKEN":
			return support{loads: LoadsNo, source: sglRoute + ", " + sglFP8,
				why: "routed to ModelOptFp8Config (the name contains FP8), whose linear method is per-tensor FP8 (one weight_scale per fused shard): a per-channel weight_scale [out] does not fit"}
		case a == "MXFP8":
			return support{loads: LoadsUnknown, source: sglRoute + ", " + sglFP8,
				why: "the routing read sends it to ModelOptFp8Config (per-tensor FP8), which cannot hold E8M0 block scales; a newer ModelOpt table in the index maps MXFP8 to an mxfp8 method not read here"}
		case strings.ToUpper(a) == "W4A16_AWQ":
			return support{loads: LoadsYes, source: sglW4A16}
		}
		return support{loads: LoadsNo, source: sglRoute + ", " + sglFP8,
			why: "matches none of SGLang's ModelOpt routes (MIXED_PRECISION, *FP4*, *FP8*, W4A16_AWQ); the fallback ModelOptFp8Config.from_config raises unless the name contains \"FP8\" (case-sensitive)"}
	},
	mixed: func(a string) support {
		switch strings.ToUpper(a) {
		case "FP8", "NVFP4":
			return support{loads: LoadsYes, source: sglMixed}
		}
		return support{loads: LoadsNo, source: sglMixed,
			why: "ModelOptMixedPrecisionConfig builds FP8 and NVFP4 layers only; others are built unquantized and their packed weights do not fit"}
	},
	kv: func(qc *quantConfig) []Finding { return nil },
	rules: []func(*analysis, string) []Finding{func(a *analysis, algo string) []Finding {
		var out []Finding
		for _, m := range a.mods {
			if m.Format == "" || m.bad {
				continue
			}
			if strings.ToUpper(algo) == "W4A16_AWQ" && (m.BMM || m.Expert >= 0) {
				out = append(out, Finding{Severity: Error, Check: CheckEngine, Tensor: m.Weight,
					Message: "a quantized MoE expert: SGLang's ModelOpt W4A16_AWQ config has no MoE method (Moe=None) and builds experts unquantized (" + sglW4A16 + ")"})
				return out
			}
			if m.BMM {
				out = append(out, Finding{Severity: Note, Check: CheckEngine, Tensor: m.Weight,
					Message: "unknown: batched-matmul experts are loaded by per-model code in SGLang, not read here"})
				return out
			}
			if strings.Contains(m.Format, "nvfp4") && m.Logical[1]%16 != 0 {
				out = append(out, Finding{Severity: Error, Check: CheckEngine, Tensor: m.Weight,
					Message: fmt.Sprintf("NVFP4 weight with in_features %d: SGLang needs a multiple of 16 (%s)", m.Logical[1], sglFP4)})
			}
		}
		return out
	}},
}

var trtllm = &engine{
	name: "trtllm", version: "main@008e0af (PyTorch backend)",
	// QuantAlgo(value) takes the exact enum value; modelopt_config canonicalises the
	// one lower-case name ModelOpt writes that it knows.
	normalize: func(s string) string {
		if s == "fp8_pb_wo" {
			return "FP8_BLOCK_SCALES"
		}
		return s
	},
	algo: trtAlgo,
	mixed: func(a string) support {
		if a == mixedPrecision {
			return support{loads: LoadsNo, source: trtConfig, why: "MIXED_PRECISION inside quantized_layers"}
		}
		return trtAlgo(a)
	},
	kv: func(qc *quantConfig) []Finding {
		switch qc.KV {
		case "", "FP8", "NVFP4", "INT8":
			return nil
		}
		return []Finding{{Severity: Error, Check: CheckEngine, File: qc.Source,
			Message: fmt.Sprintf("kv_cache_quant_algo %q is not in TensorRT-LLM's KV_CACHE_QUANT_ALGO_LIST (FP8, INT8, NVFP4) (%s)", qc.KV, trtEnum)}}
	},
	rules: []func(*analysis, string) []Finding{func(a *analysis, _ string) []Finding {
		if a.qc.Inline != nil && a.qc.Source != "hf_quant_config.json" {
			return []Finding{{Severity: Note, Check: CheckEngine, File: "config.json",
				Message: "no hf_quant_config.json: TensorRT-LLM's PyTorch backend then reads config.json's quantization_config (" + trtConfig + ", load_hf_quant_config)"}}
		}
		return []Finding{{Severity: Note, Check: CheckEngine,
			Message: "TensorRT-LLM's per-format shape rules are not in this table: only its quant_algo and KV-cache parsing are checked"}}
	}},
}

func trtAlgo(a string) support {
	switch a {
	case "NVFP4", "W4A16_NVFP4", "MXFP8", "FP8_BLOCK_SCALES", mixedPrecision, "W4A8_MXFP4_FP8", "W4A16_MXFP4", "W4A8_MXFP4_MXFP8":
		return support{loads: LoadsYes, source: trtConfig}
	case "FP8", "FP8_PER_CHANNEL_PER_TOKEN", "W4A16_AWQ", "W4A8_AWQ", "W8A16", "W8A8_SQ_PER_CHANNEL", "W4A8_NVFP4_FP8", "W4A16":
		return support{loads: LoadsYes, source: trtEnum}
	case "NVFP4_AWQ", "NVFP4_SVD":
		return support{loads: LoadsUnknown, source: trtEnum, why: "not in the QuantAlgo enum read; a newer enum may have it"}
	}
	return support{loads: LoadsNo, source: trtConfig + ", " + trtEnum,
		why: "not a QuantAlgo value: _build_modelopt_quant_config calls QuantAlgo(quant_algo), which takes the exact (upper-case) enum values"}
}

// unknownPrefix starts the note of a question the rules cannot answer; it makes the
// verdict unknown unless there is a refusal.
const unknownPrefix = "unknown: "

// judge applies an engine's rules to an analysed checkpoint.
func (e *engine) judge(a *analysis) EngineVerdict {
	v := EngineVerdict{Engine: e.name, Version: e.version}
	add := func(f Finding) { v.Reasons = append(v.Reasons, f) }
	qc := a.qc
	if qc == nil || (qc.Algo == "" && qc.KV == "") {
		add(Finding{Severity: Note, Check: CheckEngine, Message: "not quantized: loads through the engine's plain path"})
		v.Loads = LoadsYes
		return v
	}
	if qc.Algo != "" {
		algo := e.normalize(qc.Algo)
		s := e.algo(algo)
		said := qc.Algo
		if algo != qc.Algo {
			said = fmt.Sprintf("%s (read as %s)", qc.Algo, algo)
		}
		switch s.loads {
		case LoadsNo:
			add(Finding{Severity: Error, Check: CheckEngine, File: qc.Source, Message: fmt.Sprintf("quant_algo %s: %s (%s)", said, s.why, s.source)})
		case LoadsUnknown:
			add(Finding{Severity: Note, Check: CheckEngine, File: qc.Source, Message: fmt.Sprintf("unknown: quant_algo %s: %s (%s)", said, s.why, s.source)})
		}
		if algo == mixedPrecision {
			seen := map[string]bool{}
			for _, n := range sortedKeys(qc.Layers) {
				la := qc.Layers[n].Algo
				if seen[la] {
					continue
				}
				seen[la] = true
				if s := e.mixed(e.normalize(la)); s.loads != LoadsYes {
					sev := Error
					if s.loads == LoadsUnknown {
						sev = Note
					}
					msg := fmt.Sprintf("quantized_layers quant_algo %s: %s (%s)", la, s.why, s.source)
					if sev == Note {
						msg = "unknown: " + msg
					}
					add(Finding{Severity: sev, Check: CheckEngine, Tensor: n, File: qc.Source, Message: msg})
				}
			}
		}
		if s.loads != LoadsNo {
			for _, r := range e.rules {
				for _, f := range r(a, algo) {
					add(f)
				}
			}
		}
	}
	for _, f := range e.kv(qc) {
		add(f)
	}
	v.Loads = LoadsYes
	for _, f := range v.Reasons {
		switch {
		case f.Severity == Error:
			v.Loads = LoadsNo
		case f.Severity == Note && strings.HasPrefix(f.Message, unknownPrefix) && v.Loads == LoadsYes:
			v.Loads = LoadsUnknown
		}
	}
	rank := map[Severity]int{Error: 0, Warning: 1, Note: 2}
	slices.SortStableFunc(v.Reasons, func(x, y Finding) int { return rank[x.Severity] - rank[y.Severity] })
	return v
}

// JudgeHeaders judges a checkpoint described by headers and configs alone (a planned
// conversion's outputs, its hf_quant_config.json and config.json) by an engine's
// ModelOpt-loader rules, reading no data. convert and plan call it for --engine so
// that a checkpoint the engine cannot load is refused before anything is read.
func JudgeHeaders(name string, tensors []quantstream.TensorInfo, hfQuantConfig, configJSON []byte) (EngineVerdict, error) {
	e, ok := engines[name]
	if !ok {
		return EngineVerdict{}, fmt.Errorf("verify: unknown engine %q (known: %s)", name, strings.Join(Engines(), ", "))
	}
	c := fromHeaders(tensors, configJSON, hfQuantConfig)
	var r Report
	qc := parseQuantConfig(c, &r)
	a := analyze(c, qc, nil, &r)
	return e.judge(a), nil
}
