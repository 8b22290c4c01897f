// Package testgen writes synthetic, deterministic Hugging Face checkpoints for tests
// and benchmarks: the tiny committed ones under testdata/ (see cmd/gentestdata) and
// large Llama-shaped ones generated on the fly for throughput benchmarks.
//
// Tensor data is a pure function of (seed, tensor name), so output bytes do not
// depend on the order or concurrency of the writes, and it is streamed: no tensor
// is ever held whole in memory.
package testgen

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"hash/fnv"
	"io"
	"math"
	"math/rand/v2"
	"sort"
	"strings"

	"github.com/quantstream/quantstream"
	"github.com/quantstream/quantstream/arrowio"
	"github.com/quantstream/quantstream/quant"
)

// LlamaConfig is the shape of a Llama-style decoder.
type LlamaConfig struct {
	Layers, Hidden, Intermediate, Heads, KVHeads, Vocab int
}

// HeadDim is Hidden / Heads.
func (c LlamaConfig) HeadDim() int { return c.Hidden / c.Heads }

// MoEConfig is the shape of a Qwen3-MoE-style decoder: every layer's MLP is a
// router (mlp.gate) and Experts experts of MoEIntermediate width.
type MoEConfig struct {
	LlamaConfig
	Experts, MoEIntermediate, TopK int
}

func bf16(name string, shape ...int) quantstream.TensorInfo {
	s := make([]int64, len(shape))
	for i, d := range shape {
		s[i] = int64(d)
	}
	return quantstream.TensorInfo{Name: name, DType: quant.BF16, Shape: s}
}

func attention(p string, c LlamaConfig, qkNorm bool) []quantstream.TensorInfo {
	hd := c.HeadDim()
	out := []quantstream.TensorInfo{
		bf16(p+"self_attn.q_proj.weight", c.Heads*hd, c.Hidden),
		bf16(p+"self_attn.k_proj.weight", c.KVHeads*hd, c.Hidden),
		bf16(p+"self_attn.v_proj.weight", c.KVHeads*hd, c.Hidden),
		bf16(p+"self_attn.o_proj.weight", c.Hidden, c.Heads*hd),
	}
	if qkNorm {
		out = append(out, bf16(p+"self_attn.q_norm.weight", hd), bf16(p+"self_attn.k_norm.weight", hd))
	}
	return out
}

// LlamaTensors lists a LlamaForCausalLM state dict (untied lm_head) in
// state-dict order, the order save_pretrained shards in.
func LlamaTensors(c LlamaConfig) []quantstream.TensorInfo {
	out := []quantstream.TensorInfo{bf16("model.embed_tokens.weight", c.Vocab, c.Hidden)}
	for l := range c.Layers {
		p := fmt.Sprintf("model.layers.%d.", l)
		out = append(out, attention(p, c, false)...)
		out = append(out,
			bf16(p+"mlp.gate_proj.weight", c.Intermediate, c.Hidden),
			bf16(p+"mlp.up_proj.weight", c.Intermediate, c.Hidden),
			bf16(p+"mlp.down_proj.weight", c.Hidden, c.Intermediate),
			bf16(p+"input_layernorm.weight", c.Hidden),
			bf16(p+"post_attention_layernorm.weight", c.Hidden),
		)
	}
	return append(out, bf16("model.norm.weight", c.Hidden), bf16("lm_head.weight", c.Vocab, c.Hidden))
}

// MoETensors lists a Qwen3MoeForCausalLM state dict with per-expert weights
// (mlp.experts.N.{gate,up,down}_proj.weight) and the router mlp.gate.weight.
func MoETensors(c MoEConfig) []quantstream.TensorInfo {
	out := []quantstream.TensorInfo{bf16("model.embed_tokens.weight", c.Vocab, c.Hidden)}
	for l := range c.Layers {
		p := fmt.Sprintf("model.layers.%d.", l)
		out = append(out, attention(p, c.LlamaConfig, true)...)
		out = append(out, bf16(p+"mlp.gate.weight", c.Experts, c.Hidden))
		for e := range c.Experts {
			q := fmt.Sprintf("%smlp.experts.%d.", p, e)
			out = append(out,
				bf16(q+"gate_proj.weight", c.MoEIntermediate, c.Hidden),
				bf16(q+"up_proj.weight", c.MoEIntermediate, c.Hidden),
				bf16(q+"down_proj.weight", c.Hidden, c.MoEIntermediate),
			)
		}
		out = append(out, bf16(p+"input_layernorm.weight", c.Hidden), bf16(p+"post_attention_layernorm.weight", c.Hidden))
	}
	return append(out, bf16("model.norm.weight", c.Hidden), bf16("lm_head.weight", c.Vocab, c.Hidden))
}

// TensorData returns a reader of n bytes of deterministic BF16 data for a tensor:
// norm weights are 1 + small noise, everything else small signed values of
// magnitude 2^-9..2^-5, like initialised weights. F8_E4M3 weights get random finite
// codes, the F32 block scales of FP8 weights positive values of magnitude
// 2^-14..2^-9. Other dtypes get random bytes.
func TensorData(seed uint64, t quantstream.TensorInfo, n int64) io.Reader {
	h := fnv.New64a()
	h.Write([]byte(t.Name))
	return &dataReader{
		rng:   rand.NewPCG(seed, h.Sum64()),
		left:  n,
		bf16:  t.DType == quant.BF16,
		norm:  strings.HasSuffix(t.Name, "norm.weight"),
		fp8:   t.DType == quant.F8E4M3,
		scale: isFP8Scale(t),
	}
}

type dataReader struct {
	rng        *rand.PCG
	left       int64
	bf16, norm bool
	fp8, scale bool
	pend       [8]byte
	npend      int
}

func (r *dataReader) Read(p []byte) (int, error) {
	if r.left == 0 {
		return 0, io.EOF
	}
	if int64(len(p)) > r.left {
		p = p[:r.left]
	}
	n := 0
	for n < len(p) {
		if r.npend == 0 {
			binary.LittleEndian.PutUint64(r.pend[:], r.word())
			r.npend = 8
		}
		c := copy(p[n:], r.pend[8-r.npend:])
		r.npend -= c
		n += c
	}
	r.left -= int64(n)
	return n, nil
}

// word returns 8 bytes: four BF16 values, or raw bytes for other dtypes.
func (r *dataReader) word() uint64 {
	x := r.rng.Uint64()
	switch {
	case r.fp8:
		// Every code but the NaNs 0x7F / 0xFF.
		for i := range 8 {
			if c := uint8(x >> (8 * i)); c&0x7F == 0x7F {
				x &^= 1 << (8 * i)
			}
		}
		return x
	case r.scale:
		var w uint64
		for i := range 2 {
			b := uint32(x >> (32 * i))
			w |= uint64((113+b>>23%5)<<23|b&0x7FFFFF) << (32 * i)
		}
		return w
	case !r.bf16:
		return x
	}
	var w uint64
	for i := range 4 {
		b := uint16(x >> (16 * i))
		var v uint16
		if r.norm {
			v = 0x3F80 | b&0x7 // 1 + k/128, k < 8
		} else {
			sign := b & 0x8000
			exp := uint16(118 + (b>>7)&3) // 2^-9 .. 2^-6 scale
			v = sign | exp<<7 | b&0x7F
		}
		w |= uint64(v) << (16 * i)
	}
	return w
}

// WriteCheckpoint writes tensors (in state-dict order) with TensorData contents
// into dir through arrowio's sharded writer, plus side files (name → bytes), and
// commits. Tensor data is streamed.
func WriteCheckpoint(dir string, tensors []quantstream.TensorInfo, seed uint64, opts arrowio.WriteOptions, side map[string][]byte) error {
	w, err := arrowio.Create(dir, tensors, opts)
	if err != nil {
		return err
	}
	for _, t := range tensors {
		_, h, _ := w.Plan().Lookup(t.Name)
		if err := w.WriteTensorFrom(t.Name, TensorData(seed, t, h.Size())); err != nil {
			w.Abort()
			return err
		}
	}
	for name, data := range side {
		if err := w.WriteSideFile(name, data); err != nil {
			w.Abort()
			return err
		}
	}
	return w.Commit()
}

// SyntheticLlama picks a Llama shape whose BF16 checkpoint is close to (at most)
// size bytes with no tensor above maxTensor bytes: the widest hidden size (up to
// 4096) that fits two layers, then as many layers as fit.
func SyntheticLlama(size, maxTensor int64) (LlamaConfig, error) {
	for _, h := range []int{4096, 2048, 1024, 512, 256, 128} {
		c := LlamaConfig{Hidden: h, Intermediate: h * 8 / 3 / 128 * 128, Heads: h / 128, KVHeads: max(1, h/512), Vocab: 32000}
		if c.Heads == 0 {
			c.Heads = 1
		}
		if v := maxTensor / int64(2*h) / 256 * 256; int64(c.Vocab) > v {
			c.Vocab = int(v)
		}
		if c.Vocab == 0 || int64(c.Intermediate)*int64(h)*2 > maxTensor || int64(h)*int64(h)*2 > maxTensor {
			continue
		}
		base := checkpointBytes(LlamaTensors(c))
		c.Layers = 1
		per := checkpointBytes(LlamaTensors(c)) - base
		if base+2*per > size {
			continue
		}
		c.Layers = int((size - base) / per)
		return c, nil
	}
	return LlamaConfig{}, fmt.Errorf("testgen: no Llama shape fits %d bytes with tensors ≤ %d bytes", size, maxTensor)
}

// LlamaShapes are named real Llama shapes (layers left 0: FitLlama picks them)
// for measuring at realistic tensor sizes: TinyLlama-1.1B and Llama-3-8B.
var LlamaShapes = map[string]LlamaConfig{
	"tinyllama": {Hidden: 2048, Intermediate: 5632, Heads: 32, KVHeads: 4, Vocab: 32000},
	"llama3-8b": {Hidden: 4096, Intermediate: 14336, Heads: 32, KVHeads: 8, Vocab: 128256},
}

// FitLlama returns c with as many layers (at least one) as fit a BF16 checkpoint of
// at most size bytes.
func FitLlama(c LlamaConfig, size int64) (LlamaConfig, error) {
	c.Layers = 0
	base := checkpointBytes(LlamaTensors(c))
	c.Layers = 1
	per := checkpointBytes(LlamaTensors(c)) - base
	if base+per > size {
		return LlamaConfig{}, fmt.Errorf("testgen: one layer of %+v needs %d bytes, more than %d", c, base+per, size)
	}
	c.Layers = int((size - base) / per)
	return c, nil
}

// WriteLlama writes the BF16 Llama checkpoint c to dir, streaming.
func WriteLlama(dir string, c LlamaConfig, opts arrowio.WriteOptions) error {
	return WriteCheckpoint(dir, LlamaTensors(c), 1, opts, map[string][]byte{"config.json": LlamaConfigJSON(c)})
}

func checkpointBytes(ts []quantstream.TensorInfo) int64 {
	var n int64
	for _, t := range ts {
		e := int64(2)
		for _, d := range t.Shape {
			e *= d
		}
		n += e
	}
	return n
}

// WriteSyntheticLlama writes a Llama-shaped BF16 checkpoint of about size bytes
// (tensors ≤ maxTensor bytes) to dir, streaming; see SyntheticLlama.
func WriteSyntheticLlama(dir string, size, maxTensor int64, opts arrowio.WriteOptions) (LlamaConfig, error) {
	c, err := SyntheticLlama(size, maxTensor)
	if err != nil {
		return c, err
	}
	return c, WriteCheckpoint(dir, LlamaTensors(c), 1, opts, map[string][]byte{"config.json": LlamaConfigJSON(c)})
}

// LlamaConfigJSON is a transformers config.json for c.
func LlamaConfigJSON(c LlamaConfig) []byte {
	return marshal(map[string]any{
		"architectures":           []string{"LlamaForCausalLM"},
		"model_type":              "llama",
		"attention_bias":          false,
		"bos_token_id":            1,
		"eos_token_id":            2,
		"dtype":                   "bfloat16",
		"head_dim":                c.HeadDim(),
		"hidden_act":              "silu",
		"hidden_size":             c.Hidden,
		"intermediate_size":       c.Intermediate,
		"max_position_embeddings": 256,
		"mlp_bias":                false,
		"num_attention_heads":     c.Heads,
		"num_hidden_layers":       c.Layers,
		"num_key_value_heads":     c.KVHeads,
		"rms_norm_eps":            1e-5,
		"rope_parameters":         map[string]any{"rope_theta": 10000.0, "rope_type": "default"},
		"tie_word_embeddings":     false,
		"vocab_size":              c.Vocab,
	})
}

// MoEConfigJSON is a transformers config.json for c (Qwen3-MoE).
func MoEConfigJSON(c MoEConfig) []byte {
	return marshal(map[string]any{
		"architectures":           []string{"Qwen3MoeForCausalLM"},
		"model_type":              "qwen3_moe",
		"attention_bias":          false,
		"decoder_sparse_step":     1,
		"dtype":                   "bfloat16",
		"head_dim":                c.HeadDim(),
		"hidden_act":              "silu",
		"hidden_size":             c.Hidden,
		"intermediate_size":       c.Intermediate,
		"max_position_embeddings": 256,
		"mlp_only_layers":         []int{},
		"moe_intermediate_size":   c.MoEIntermediate,
		"norm_topk_prob":          true,
		"num_attention_heads":     c.Heads,
		"num_experts":             c.Experts,
		"num_experts_per_tok":     c.TopK,
		"num_hidden_layers":       c.Layers,
		"num_key_value_heads":     c.KVHeads,
		"rms_norm_eps":            1e-6,
		"rope_parameters":         map[string]any{"rope_theta": 10000.0, "rope_type": "default"},
		"tie_word_embeddings":     false,
		"vocab_size":              c.Vocab,
	})
}

// GenerationConfigJSON is a minimal generation_config.json.
func GenerationConfigJSON() []byte {
	return marshal(map[string]any{"bos_token_id": 1, "eos_token_id": 2, "do_sample": false})
}

// TokenizerJSON is a tiny word-level tokenizer.json stand-in with vocab entries.
func TokenizerJSON(vocab int) []byte {
	v := map[string]int{"<unk>": 0, "<s>": 1, "</s>": 2}
	for i := 3; i < vocab; i++ {
		v[fmt.Sprintf("t%d", i)] = i
	}
	return marshal(map[string]any{
		"version":        "1.0",
		"added_tokens":   []any{},
		"normalizer":     nil,
		"pre_tokenizer":  map[string]any{"type": "Whitespace"},
		"model":          map[string]any{"type": "WordLevel", "vocab": v, "unk_token": "<unk>"},
		"post_processor": nil,
		"decoder":        nil,
	})
}

func marshal(v any) []byte {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		panic(err) // only fixed, marshalable values reach here
	}
	return append(b, '\n')
}

// TinyLlama and TinyMoE are the shapes of the committed test checkpoints.
var (
	TinyLlama = LlamaConfig{Layers: 3, Hidden: 128, Intermediate: 352, Heads: 4, KVHeads: 2, Vocab: 512}
	TinyMoE   = MoEConfig{
		LlamaConfig: LlamaConfig{Layers: 2, Hidden: 64, Intermediate: 128, Heads: 4, KVHeads: 2, Vocab: 256},
		Experts:     8, MoEIntermediate: 32, TopK: 2,
	}
)

// TinyShardSize splits the tiny checkpoints into two shards.
const TinyShardSize = 800_000

// WriteTinyLlama writes testdata/tiny_llama: TinyLlama in two shards with an
// index, config.json, generation_config.json and a tokenizer.json stand-in.
func WriteTinyLlama(dir string, overwrite bool) error {
	return WriteCheckpoint(dir, LlamaTensors(TinyLlama), 1,
		arrowio.WriteOptions{PlanOptions: arrowio.PlanOptions{MaxShardSize: TinyShardSize}, Overwrite: overwrite},
		map[string][]byte{
			"config.json":            LlamaConfigJSON(TinyLlama),
			"generation_config.json": GenerationConfigJSON(),
			"tokenizer.json":         TokenizerJSON(64),
		})
}

// WriteTinyMoE writes testdata/tiny_moe: TinyMoE in two shards with an index.
func WriteTinyMoE(dir string, overwrite bool) error {
	return WriteCheckpoint(dir, MoETensors(TinyMoE), 2,
		arrowio.WriteOptions{PlanOptions: arrowio.PlanOptions{MaxShardSize: 200_000}, Overwrite: overwrite},
		map[string][]byte{
			"config.json":            MoEConfigJSON(TinyMoE),
			"generation_config.json": GenerationConfigJSON(),
			"tokenizer.json":         TokenizerJSON(64),
		})
}

// Weight and input amaxes of the synthetic calibration state. Weights from
// TensorData stay below 2^-5·2 = 0.0625, so the weight amax covers them (a real
// calibration would give about the same); the input amax is an arbitrary activation
// range. Both are exact in BF16.
const (
	synthWeightAmax = 0.0625
	synthInputAmax  = 4.0
)

// CalibFormats are the formats WriteSyntheticCalib knows.
var CalibFormats = []string{"nvfp4", "fp8"}

// WriteSyntheticCalib writes calibration state for the Llama c into dir, as a
// ModelOpt calibration run leaves it: quantizers.json with the attributes of
// ModelOpt's NVFP4_DEFAULT_CFG or FP8_DEFAULT_CFG (the e2e golden inputs are the
// template) and quant_state.safetensors with a per-tensor BF16 amax for every
// decoder linear's weight and input quantizer. embed_tokens and lm_head are listed
// disabled, as the recipes leave them. Overlay dir on the checkpoint
// (`--in MODEL --in dir`) to export it.
func WriteSyntheticCalib(dir string, c LlamaConfig, format string, overwrite bool) error {
	mods := []string{"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"}
	return writeCalib(dir, c.Layers, mods, nil, format, func(int, string) (float32, bool) { return synthInputAmax, true }, overwrite)
}

// WriteSyntheticMoECalib writes calibration state for the MoE c into dir like
// WriteSyntheticCalib, with per-expert quantizers (mlp.experts.E.{gate,up,down}_proj)
// and the router mlp.gate left unquantized, as the recipes leave it. inputAmax gives
// each expert's input amax in a layer (the same for its three projections); ok false
// leaves the expert without one (its quantizer records no buffer), as an expert that
// no calibration token was routed to: the export then fills it
// (layer_utils.set_expert_quantizer_amax).
// Values should be exact in BF16.
func WriteSyntheticMoECalib(dir string, c MoEConfig, format string, inputAmax func(layer, expert int) (v float32, ok bool), overwrite bool) error {
	mods := []string{"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj"}
	for e := range c.Experts {
		for _, p := range []string{"gate_proj", "up_proj", "down_proj"} {
			mods = append(mods, fmt.Sprintf("mlp.experts.%d.%s", e, p))
		}
	}
	return writeCalib(dir, c.Layers, mods, []string{"mlp.gate"}, format, func(l int, m string) (float32, bool) {
		var e int
		if _, err := fmt.Sscanf(m, "mlp.experts.%d.", &e); err != nil {
			return synthInputAmax, true
		}
		return inputAmax(l, e)
	}, overwrite)
}

// writeCalib writes quantizers.json and quant_state.safetensors for the modules mods
// (relative to each decoder layer) with disabled modules off beside them; inputAmax
// gives a module's input amax, none when ok is false.
func writeCalib(dir string, layers int, mods, off []string, format string, inputAmax func(layer int, module string) (float32, bool), overwrite bool) error {
	var numBits any
	var blocks any
	var maxbound float64
	switch format {
	case "nvfp4":
		numBits = []int{2, 1}
		blocks = map[string]any{"-1": 16, "type": "dynamic", "scale_bits": []int{4, 3}}
		maxbound = 6
	case "fp8":
		numBits = []int{4, 3}
		maxbound = 448
	default:
		return fmt.Errorf("testgen: calibration format %q (want one of %v)", format, CalibFormats)
	}
	quantizer := func(class string, enabled bool, bits any, bs any, mb any, amaxShape any) map[string]any {
		return map[string]any{
			"class": class, "enabled": enabled, "num_bits": bits, "axis": nil, "block_sizes": bs,
			"unsigned": false, "narrow_range": false, "fake_quant": true, "maxbound": mb,
			"amax_shape": amaxShape, "has_pre_quant_scale": false,
		}
	}
	disabledOut := quantizer("TensorQuantizer", false, 8, nil, nil, nil)
	table := map[string]any{}
	for _, m := range []string{"model.embed_tokens", "lm_head"} {
		table[m+".weight_quantizer"] = quantizer("TensorQuantizer", false, numBits, blocks, nil, nil)
		in := "TensorQuantizer"
		if m == "model.embed_tokens" {
			in = "HardDisabledTensorQuantizer"
		}
		table[m+".input_quantizer"] = quantizer(in, false, numBits, blocks, nil, nil)
		table[m+".output_quantizer"] = disabledOut
	}
	var amaxes []quantstream.TensorInfo
	values := map[string]float32{}
	for l := range layers {
		p := fmt.Sprintf("model.layers.%d.", l)
		for _, m := range mods {
			for _, q := range []string{"weight_quantizer", "input_quantizer"} {
				name := p + m + "." + q
				v, ok := float32(synthWeightAmax), true
				if q == "input_quantizer" {
					v, ok = inputAmax(l, m)
				}
				if !ok {
					table[name] = quantizer("TensorQuantizer", true, numBits, blocks, maxbound, nil)
					continue
				}
				table[name] = quantizer("TensorQuantizer", true, numBits, blocks, maxbound, []int{})
				amaxes = append(amaxes, bf16(name+"._amax"))
				values[name+"._amax"] = v
			}
			table[p+m+".output_quantizer"] = disabledOut
		}
		for _, m := range off {
			for _, q := range []string{"weight_quantizer", "input_quantizer", "output_quantizer"} {
				table[p+m+"."+q] = quantizer("TensorQuantizer", false, numBits, blocks, nil, nil)
			}
		}
		for _, b := range []string{"q_bmm_quantizer", "k_bmm_quantizer", "v_bmm_quantizer", "p_bmm_quantizer"} {
			table[p+"self_attn."+b] = disabledOut
		}
	}
	sortInfos(amaxes) // name order: the file does not depend on map iteration

	w, err := arrowio.Create(dir, amaxes, arrowio.WriteOptions{Overwrite: overwrite})
	if err != nil {
		return err
	}
	for _, t := range amaxes {
		v := math.Float32bits(values[t.Name])
		b := []byte{byte(v >> 16), byte(v >> 24)} // BF16: the high half, exact here
		if err := w.WriteTensorFrom(t.Name, bytes.NewReader(b)); err != nil {
			w.Abort()
			return err
		}
	}
	if err := w.WriteSideFile("quantizers.json", marshal(table)); err != nil {
		w.Abort()
		return err
	}
	return w.Commit()
}

func sortInfos(ts []quantstream.TensorInfo) {
	sort.Slice(ts, func(i, j int) bool { return ts[i].Name < ts[j].Name })
}

// SyntheticMoE picks a Qwen3-MoE shape whose BF16 checkpoint is close to (at most)
// size bytes with no tensor above maxTensor bytes, mostly experts as in real MoE
// models: hidden 1024 (or less when a layer does not fit twice), experts of width
// hidden/2, as many experts per layer as keep four layers, and as many layers as fit.
func SyntheticMoE(size, maxTensor int64) (MoEConfig, error) {
	for _, h := range []int{1024, 512, 256, 128} {
		c := MoEConfig{
			LlamaConfig:     LlamaConfig{Hidden: h, Intermediate: h * 8 / 3 / 128 * 128, Heads: h / 128, KVHeads: max(1, h/512), Vocab: 32000},
			MoEIntermediate: h / 2, TopK: 2,
		}
		if v := maxTensor / int64(2*h) / 256 * 256; int64(c.Vocab) > v {
			c.Vocab = int(v)
		}
		if c.Vocab == 0 || int64(h)*int64(h)*2 > maxTensor {
			continue
		}
		layerBytes := func() int64 {
			c.Layers = 1
			defer func() { c.Layers = 0 }()
			return checkpointBytes(MoETensors(c))
		}
		c.Experts = 1
		base := checkpointBytes(MoETensors(c))
		attn := layerBytes() - base
		expert := int64(3 * h * c.MoEIntermediate * 2)
		c.Experts = int(min(128, max(1, ((size-base)/4-attn)/expert)))
		per := layerBytes() - base
		if base+2*per > size {
			continue
		}
		c.Layers = int((size - base) / per)
		return c, nil
	}
	return MoEConfig{}, fmt.Errorf("testgen: no MoE shape fits %d bytes with tensors ≤ %d bytes", size, maxTensor)
}

// WriteSyntheticMoE writes a Qwen3-MoE-shaped BF16 checkpoint of about size bytes
// (tensors ≤ maxTensor bytes) to dir, streaming; see SyntheticMoE.
func WriteSyntheticMoE(dir string, size, maxTensor int64, opts arrowio.WriteOptions) (MoEConfig, error) {
	c, err := SyntheticMoE(size, maxTensor)
	if err != nil {
		return c, err
	}
	return c, WriteCheckpoint(dir, MoETensors(c), 1, opts, map[string][]byte{"config.json": MoEConfigJSON(c)})
}
