package testgen

import (
	"fmt"
	"strings"

	"github.com/quantstream/quantstream"
	"github.com/quantstream/quantstream/arrowio"
	"github.com/quantstream/quantstream/quant"
)

// DeepSeekConfig is the shape of a DeepSeek-V3-style decoder stored as block FP8
// (128×128 weight_scale_inv) the way the hub checkpoint is: MLA attention, every
// layer a MoE of Experts routed experts of MoEIntermediate width plus one shared
// expert, the router with its F32 e_score_correction_bias.
type DeepSeekConfig struct {
	Layers, Hidden, Heads, QLoRA, KVLoRA, Nope, Rope, V int
	Experts, MoEIntermediate, Vocab                     int
}

// DeepSeekV3Shape is DeepSeek-V3's own layer shape (hidden 7168, 128 heads, 256
// experts of 2048) with the given number of layers and experts: one such MoE layer
// is 11.3 GB of FP8 experts.
func DeepSeekV3Shape(layers, experts int) DeepSeekConfig {
	return DeepSeekConfig{Layers: layers, Hidden: 7168, Heads: 128, QLoRA: 1536, KVLoRA: 512, Nope: 128, Rope: 64, V: 128,
		Experts: experts, MoEIntermediate: 2048, Vocab: 129280}
}

func fp8w(name string, rows, cols int) []quantstream.TensorInfo {
	return []quantstream.TensorInfo{
		{Name: name, DType: quant.F8E4M3, Shape: []int64{int64(rows), int64(cols)}},
		{Name: name + "_scale_inv", DType: quant.F32, Shape: []int64{int64((rows + 127) / 128), int64((cols + 127) / 128)}},
	}
}

// DeepSeekFP8Tensors lists the checkpoint's tensors in state-dict order.
func DeepSeekFP8Tensors(c DeepSeekConfig) []quantstream.TensorInfo {
	out := []quantstream.TensorInfo{bf16("model.embed_tokens.weight", c.Vocab, c.Hidden)}
	for l := range c.Layers {
		p := fmt.Sprintf("model.layers.%d.", l)
		a := p + "self_attn."
		out = append(out, fp8w(a+"q_a_proj.weight", c.QLoRA, c.Hidden)...)
		out = append(out, bf16(a+"q_a_layernorm.weight", c.QLoRA))
		out = append(out, fp8w(a+"q_b_proj.weight", c.Heads*(c.Nope+c.Rope), c.QLoRA)...)
		out = append(out, fp8w(a+"kv_a_proj_with_mqa.weight", c.KVLoRA+c.Rope, c.Hidden)...)
		out = append(out, bf16(a+"kv_a_layernorm.weight", c.KVLoRA))
		out = append(out, fp8w(a+"kv_b_proj.weight", c.Heads*(c.Nope+c.V), c.KVLoRA)...)
		out = append(out, fp8w(a+"o_proj.weight", c.Hidden, c.Heads*c.V)...)
		out = append(out, bf16(p+"mlp.gate.weight", c.Experts, c.Hidden),
			quantstream.TensorInfo{Name: p + "mlp.gate.e_score_correction_bias", DType: quant.F32, Shape: []int64{int64(c.Experts)}})
		for _, q := range append(expertPrefixes(p, c.Experts), p+"mlp.shared_experts.") {
			out = append(out, fp8w(q+"gate_proj.weight", c.MoEIntermediate, c.Hidden)...)
			out = append(out, fp8w(q+"up_proj.weight", c.MoEIntermediate, c.Hidden)...)
			out = append(out, fp8w(q+"down_proj.weight", c.Hidden, c.MoEIntermediate)...)
		}
		out = append(out, bf16(p+"input_layernorm.weight", c.Hidden), bf16(p+"post_attention_layernorm.weight", c.Hidden))
	}
	return append(out, bf16("model.norm.weight", c.Hidden), bf16("lm_head.weight", c.Vocab, c.Hidden))
}

func expertPrefixes(p string, n int) []string {
	out := make([]string, n)
	for e := range n {
		out[e] = fmt.Sprintf("%smlp.experts.%d.", p, e)
	}
	return out
}

// DeepSeekFP8ConfigJSON is the config.json of the checkpoint, with the block-FP8
// quantization_config DeepSeek ships.
func DeepSeekFP8ConfigJSON(c DeepSeekConfig) []byte {
	return marshal(map[string]any{
		"architectures": []string{"DeepseekV3ForCausalLM"}, "model_type": "deepseek_v3", "dtype": "bfloat16",
		"hidden_size": c.Hidden, "num_attention_heads": c.Heads, "num_key_value_heads": c.Heads,
		"q_lora_rank": c.QLoRA, "kv_lora_rank": c.KVLoRA, "qk_nope_head_dim": c.Nope, "qk_rope_head_dim": c.Rope,
		"v_head_dim": c.V, "head_dim": c.Rope, "intermediate_size": 2 * c.MoEIntermediate, "moe_intermediate_size": c.MoEIntermediate,
		"n_routed_experts": c.Experts, "n_shared_experts": 1, "num_experts_per_tok": min(8, c.Experts),
		"n_group": 1, "topk_group": 1, "first_k_dense_replace": 0, "num_hidden_layers": c.Layers,
		"vocab_size": c.Vocab, "tie_word_embeddings": false, "rms_norm_eps": 1e-6, "max_position_embeddings": 4096,
		"bos_token_id": 0, "eos_token_id": 1,
		"quantization_config": map[string]any{"activation_scheme": "dynamic", "fmt": "e4m3", "quant_method": "fp8", "weight_block_size": []int{128, 128}},
	})
}

// WriteDeepSeekFP8 writes the checkpoint to dir, streaming. F8 weights hold every
// finite E4M3 code, scales are positive float32 of magnitude 2^-14..2^-9 (what
// amax/448 of initialised weights gives).
func WriteDeepSeekFP8(dir string, c DeepSeekConfig, opts arrowio.WriteOptions) error {
	return WriteCheckpoint(dir, DeepSeekFP8Tensors(c), 3, opts, map[string][]byte{"config.json": DeepSeekFP8ConfigJSON(c)})
}

// isFP8Scale reports whether a tensor is the block scale of an FP8 weight.
func isFP8Scale(t quantstream.TensorInfo) bool {
	return t.DType == quant.F32 && strings.HasSuffix(t.Name, ".weight_scale_inv")
}

// SyntheticDeepSeekFP8 picks a DeepSeek-shaped block-FP8 checkpoint of about (at
// most) size bytes for benchmarks: hidden 2048, experts of 768 (DeepSeek's ratio to
// the hidden size), as many experts per layer as keep four layers, as many layers
// as fit; the attention has partial edge blocks like DeepSeek-V3's.
func SyntheticDeepSeekFP8(size int64) (DeepSeekConfig, error) {
	c := DeepSeekConfig{Hidden: 2048, Heads: 16, QLoRA: 512, KVLoRA: 256, Nope: 64, Rope: 32, V: 64, MoEIntermediate: 768, Vocab: 8192, Experts: 1}
	layer := func() int64 {
		c.Layers = 1
		defer func() { c.Layers = 0 }()
		return checkpointBytes(DeepSeekFP8Tensors(c))
	}
	base := checkpointBytes(DeepSeekFP8Tensors(c))
	attn := layer() - base
	expert := int64(3 * c.Hidden * c.MoEIntermediate)
	c.Experts = int(min(256, max(1, ((size-base)/4-attn)/expert)))
	per := layer() - base
	if base+2*per > size {
		return c, fmt.Errorf("testgen: no DeepSeek FP8 shape fits %d bytes", size)
	}
	c.Layers = int((size - base) / per)
	return c, nil
}
