package stages

import (
	"encoding/json"
	"fmt"
	"regexp"
	"sort"
	"strings"
)

// FusionRule names modules of one parent that read the same input tensor in the
// Hugging Face forward (ModelOpt finds them with a dummy forward; we know them by name).
// Members are the module names relative to the parent; Norm is the sibling norm
// (relative to the decoder layer) whose output is that input, "" when the input is not
// a norm's output object (routed expert slices, reshaped views).
type FusionRule struct {
	Parent  string   // relative to the layer: "self_attn", "mlp", "mlp.shared_expert", "mlp.experts.*"
	Members []string // e.g. q_proj, k_proj, v_proj
	Norm    string   // e.g. input_layernorm
}

// PrequantRule is one fuse_prequant_to_linear pattern: the pre_quant_scale of Source
// is folded into the output rows of Target (both under Parent). Only for nvfp4_awq.
type PrequantRule struct {
	Parent, Source, Target string
}

// Arch is the name rules of one architecture family.
type Arch struct {
	Family string
	// Names from config.json, for messages.
	Architecture, ModelType string
	Fusion                  []FusionRule
	Prequant                []PrequantRule
	// GateUp is the (gate, up) expert projection pair: sync_moe_gate_up_amax's for
	// experts that are separate modules in memory; gate and up share the per-tensor
	// weight scale (verify checks it).
	GateUp [2]string
	// ExpertsFusedInMemory: transformers ≥ 5 loads the routed experts as one fused
	// module (experts.gate_up_proj [E, 2I, H], experts.down_proj), even from per-expert
	// hub tensors, with one weight quantizer per expert over gate and up together.
	// Gate and up then share a per-tensor amax but keep their own rows of a
	// per-channel or per-block one, and sync_moe_gate_up_amax does not reach them (the
	// experts module is not iterable).
	ExpertsFusedInMemory bool
	// OnePlusNorm: Gemma-style norms that scale by (1 + w).
	OnePlusNorm bool
	// AWQExperts: ModelOpt's get_experts_list knows this family's experts, so AWQ
	// models with per-expert modules can be resmoothed (otherwise it raises).
	AWQExperts bool
	// Renames map in-memory names to hub names (RenameRule), applied to every
	// exported tensor and module name; nil when the two agree.
	Renames []RenameRule

	renamer renamer
}

// ModelConfig is the part of config.json the export reads.
type ModelConfig struct {
	Architectures     []string `json:"architectures"`
	ModelType         string   `json:"model_type"`
	Dtype             string   `json:"dtype"`
	TorchDtype        string   `json:"torch_dtype"`
	QLoraRank         *int     `json:"q_lora_rank"`
	TieWordEmbeddings *bool    `json:"tie_word_embeddings"`
	// NumExperts / NumLocalExperts bound the expert count of fused experts tensors
	// (Qwen-MoE / Mixtral, GPT-OSS names); nil when absent.
	NumExperts      *int64       `json:"num_experts"`
	NumLocalExperts *int64       `json:"num_local_experts"`
	TextConfig      *ModelConfig `json:"text_config"`
}

// tiedEmbeddings reports tie_word_embeddings (text_config's when the top level does
// not say): the output head is the input embedding's weight, so the checkpoint holds
// no lm_head.weight, yet lm_head is a module of its own with quantizers.
func (c *ModelConfig) tiedEmbeddings() bool {
	for ; c != nil; c = c.TextConfig {
		if c.TieWordEmbeddings != nil {
			return *c.TieWordEmbeddings
		}
	}
	return false
}

// ParseModelConfig decodes config.json.
func ParseModelConfig(b []byte) (*ModelConfig, error) {
	var c ModelConfig
	if err := json.Unmarshal(b, &c); err != nil {
		return nil, fmt.Errorf("%w: config.json: %v", ErrConfig, err)
	}
	return &c, nil
}

var llamaAttn = FusionRule{Parent: "self_attn", Members: []string{"q_proj", "k_proj", "v_proj"}, Norm: "input_layernorm"}

// families maps model_type to its rules. Keep the comments on why a group exists: the
// rules stand in for ModelOpt's "same input tensor object" discovery.
var families = map[string]func(c *ModelConfig) *Arch{
	"llama":   denseLlama("post_attention_layernorm", false, true),
	"mistral": denseLlama("post_attention_layernorm", false, false),
	"qwen2":   denseLlama("post_attention_layernorm", false, false),
	// Qwen3 is in fuse_prequant_to_linear's class table (Qwen3Attention, Qwen3MLP).
	"qwen3": denseLlama("post_attention_layernorm", false, true),
	"gemma": denseLlama("post_attention_layernorm", true, false),
	// Gemma 2/3 feed the MLP from pre_feedforward_layernorm.
	"gemma2":      denseLlama("pre_feedforward_layernorm", true, false),
	"gemma3_text": denseLlama("pre_feedforward_layernorm", true, false),
	"gemma3": withRenames(denseLlama("pre_feedforward_layernorm", true, false),
		// Gemma3ForConditionalGeneration: transformers 5 loads the hub's
		// language_model.model.* / vision_tower.* / multi_modal_projector.* as
		// model.language_model.* / model.vision_tower.* / model.multi_modal_projector.*.
		RenameRule{`^model\.language_model\.`, "language_model.model."},
		RenameRule{`^model\.(vision_tower|multi_modal_projector)\.`, "${1}."}),
	"mixtral": func(c *ModelConfig) *Arch {
		// Experts receive a routed slice of the norm output, so no norm fold.
		return &Arch{Family: "mixtral", Fusion: []FusionRule{llamaAttn,
			{Parent: "block_sparse_moe.experts.*", Members: []string{"w1", "w3"}},
			{Parent: "mlp.experts.*", Members: []string{"gate_proj", "up_proj"}}},
			GateUp: [2]string{"w1", "w3"}, AWQExperts: true, ExpertsFusedInMemory: true,
			// transformers 5 loads block_sparse_moe.experts.N.w1/w3/w2 as
			// mlp.experts.gate_up_proj / down_proj (which the export cuts back into
			// experts.N.gate_proj/up_proj/down_proj) and block_sparse_moe.gate as mlp.gate.
			Renames: []RenameRule{
				{`(\.experts\.\d+\.)gate_proj\b`, "${1}w1"},
				{`(\.experts\.\d+\.)up_proj\b`, "${1}w3"},
				{`(\.experts\.\d+\.)down_proj\b`, "${1}w2"},
				{`\.mlp\.(experts|gate)\.`, ".block_sparse_moe.${1}."},
			}}
	},
	// GPT-OSS: batched-matmul experts (bmm.go) behind mlp.router; attention as Llama.
	"gpt_oss": func(c *ModelConfig) *Arch {
		return &Arch{Family: "gpt_oss", Fusion: []FusionRule{llamaAttn}}
	},
	"llama4":      llama4,
	"llama4_text": llama4,
	"qwen2_moe":   qwenMoE(false),
	"qwen3_moe":   qwenMoE(true),
	"deepseek_v3": func(c *ModelConfig) *Arch {
		a := []string{"q_a_proj", "kv_a_proj_with_mqa"}
		if c.QLoraRank == nil {
			a = []string{"q_proj", "kv_a_proj_with_mqa"}
		}
		return &Arch{Family: "deepseek_v3", Fusion: []FusionRule{
			{Parent: "self_attn", Members: a, Norm: "input_layernorm"},
			{Parent: "mlp", Members: []string{"gate_proj", "up_proj"}, Norm: "post_attention_layernorm"},
			{Parent: "mlp.experts.*", Members: []string{"gate_proj", "up_proj"}},
			// DeepseekV3MoE hands the un-reshaped norm output to the shared experts.
			{Parent: "mlp.shared_experts", Members: []string{"gate_proj", "up_proj"}, Norm: "post_attention_layernorm"},
		}, GateUp: [2]string{"gate_proj", "up_proj"}, ExpertsFusedInMemory: true}
	},
}

// llama4: dense layers feed the MLP from post_attention_layernorm; MoE layers reshape
// the norm output before the shared expert (no norm fold) and hold batched-matmul
// experts.
func llama4(c *ModelConfig) *Arch {
	return &Arch{Family: "llama4", Fusion: []FusionRule{llamaAttn,
		{Parent: "feed_forward", Members: []string{"gate_proj", "up_proj"}, Norm: "post_attention_layernorm"},
		{Parent: "feed_forward.shared_expert", Members: []string{"gate_proj", "up_proj"}},
	}}
}

// withRenames adds in-memory -> hub rename rules to a family's entry.
func withRenames(f func(*ModelConfig) *Arch, rules ...RenameRule) func(*ModelConfig) *Arch {
	return func(c *ModelConfig) *Arch {
		a := f(c)
		a.Renames = append(a.Renames, rules...)
		return a
	}
}

func denseLlama(mlpNorm string, onePlus, prequant bool) func(*ModelConfig) *Arch {
	return func(c *ModelConfig) *Arch {
		a := &Arch{Family: "llama", OnePlusNorm: onePlus, Fusion: []FusionRule{llamaAttn,
			{Parent: "mlp", Members: []string{"gate_proj", "up_proj"}, Norm: mlpNorm}}}
		if prequant {
			a.Prequant = []PrequantRule{{"self_attn", "o_proj", "v_proj"}, {"mlp", "down_proj", "up_proj"}}
		}
		return a
	}
}

func qwenMoE(prequant bool) func(*ModelConfig) *Arch {
	return func(c *ModelConfig) *Arch {
		a := &Arch{Family: "qwen_moe", Fusion: []FusionRule{llamaAttn,
			// dense (mlp_only) layers
			{Parent: "mlp", Members: []string{"gate_proj", "up_proj"}, Norm: "post_attention_layernorm"},
			{Parent: "mlp.experts.*", Members: []string{"gate_proj", "up_proj"}},
			// The MoE block reshapes the norm output before the shared expert: no norm fold.
			{Parent: "mlp.shared_expert", Members: []string{"gate_proj", "up_proj"}},
		}, GateUp: [2]string{"gate_proj", "up_proj"}, AWQExperts: true, ExpertsFusedInMemory: true}
		if prequant {
			a.Prequant = []PrequantRule{{"self_attn", "o_proj", "v_proj"}, {"mlp", "down_proj", "up_proj"}}
		}
		return a
	}
}

// DetectArch picks the family from config.json's model_type (falling back to the
// architectures class names). An unknown family is an error, never a guess.
func DetectArch(c *ModelConfig) (*Arch, error) {
	if c == nil {
		return nil, fmt.Errorf("%w: no config.json", ErrUnknownArch)
	}
	mt := c.ModelType
	if mt == "" && c.TextConfig != nil {
		mt = c.TextConfig.ModelType
	}
	f, ok := families[mt]
	if !ok {
		for _, a := range c.Architectures {
			for k, g := range families {
				if strings.EqualFold(strings.TrimSuffix(strings.TrimSuffix(a, "ForCausalLM"), "ForConditionalGeneration"), strings.ReplaceAll(k, "_", "")) {
					f, ok, mt = g, true, k
				}
			}
		}
	}
	if !ok {
		return nil, fmt.Errorf("%w: model_type %q, architectures %v", ErrUnknownArch, c.ModelType, c.Architectures)
	}
	a := f(c)
	a.ModelType = mt
	var err error
	if a.renamer, err = compileRenames(a.Family, a.Renames); err != nil {
		return nil, err
	}
	if len(c.Architectures) > 0 {
		a.Architecture = c.Architectures[0]
	}
	return a, nil
}

// HubName maps an in-memory tensor name to its hub name (Arch.Renames).
func (a *Arch) HubName(tensor string) string { return a.renamer.tensor(tensor) }

// HubModule maps an in-memory module name or exclude_modules pattern to the hub's.
func (a *Arch) HubModule(module string) (string, error) { return a.renamer.module(module) }

// FusedGroup is one instance of a FusionRule in a decoder layer: the full names of
// the modules that read the same input, in the rule's member order, and the full name
// of the norm whose output that input is ("" when none).
type FusedGroup struct {
	Members []string
	Norm    string
}

// FusedGroups instantiates the family's fusion rules in the decoder layer whose
// tensors start with prefix ("model.layers.3.") over the given module names (full
// names, "model.layers.3.self_attn.q_proj"; names of other layers are ignored): one
// group per rule and parent that has at least two of the names, rules in order and,
// for a wildcard parent ("mlp.experts.*"), parents in registration order.
//
// This is the grouping the export fuses (ModelOpt's requantize_resmooth_fused_llm_layers
// finds it with a dummy forward); verify uses it to check exported checkpoints, so both
// read the same rules.
func (a *Arch) FusedGroups(prefix string, modules []string) []FusedGroup {
	have := make(map[string]bool, len(modules))
	for _, n := range modules {
		have[n] = true
	}
	var out []FusedGroup
	for _, r := range a.Fusion {
		var parents []string
		if strings.HasSuffix(r.Parent, ".*") {
			re := regexp.MustCompile("^" + regexp.QuoteMeta(prefix+strings.TrimSuffix(r.Parent, "*")) + `(\d+)$`)
			seen := map[string]bool{}
			for _, n := range modules {
				parent, _ := splitLast(n)
				if re.MatchString(parent) && !seen[parent] {
					seen[parent] = true
					parents = append(parents, parent)
				}
			}
			sort.Slice(parents, func(i, j int) bool { return moduleLess(parents[i], parents[j]) })
		} else {
			parents = []string{prefix + r.Parent}
		}
		for _, par := range parents {
			var g []string
			for _, mem := range r.Members {
				if have[par+"."+mem] {
					g = append(g, par+"."+mem)
				}
			}
			if len(g) < 2 {
				continue
			}
			norm := ""
			if r.Norm != "" {
				norm = prefix + r.Norm
			}
			out = append(out, FusedGroup{Members: g, Norm: norm})
		}
	}
	return out
}

// SharesFusedScales reports whether the export makes the modules of a fused group of
// this format share their input amax and per-tensor weight amax (so their input_scale
// and weight_scale_2 come out equal): every quantized format but per-tensor FP8 (fp8,
// fp8_pb_real), whose groups the export leaves alone.
func SharesFusedScales(format string) bool {
	return format != "" && format != "fp8" && format != "fp8_pb_real"
}
