package stages

import (
	"math/rand/v2"
	"sort"
	"strconv"

	quantstream "github.com/quantstream/quantstream"
	"github.com/quantstream/quantstream/quant"
)

// table is a Quantizers for tests.
type table map[string]*quant.Quantizer

func (t table) Get(name string) (*quant.Quantizer, bool) {
	if q, ok := t[name]; ok {
		return q, true
	}
	first, ok := t[name+".0"]
	if !ok {
		return nil, false
	}
	seq := &quant.Quantizer{Class: "SequentialQuantizer", Sequential: []*quant.Quantizer{first}, Enabled: first.Enabled}
	for i := 1; ; i++ {
		q, ok := t[name+"."+strconv.Itoa(i)]
		if !ok {
			break
		}
		seq.Sequential = append(seq.Sequential, q)
		seq.Enabled = seq.Enabled || q.Enabled
	}
	return seq, true
}

func (t table) Names() []string {
	out := make([]string, 0, len(t))
	for k := range t {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func nvfp4Q(enabled bool) *quant.Quantizer {
	sb := quant.BitsE4M3
	return &quant.Quantizer{Class: "TensorQuantizer", Enabled: enabled, NumBits: quant.BitsE2M1, FakeQuant: true,
		BlockSizes: &quant.BlockSizes{Dims: map[int]int{-1: 16}, Type: "dynamic", ScaleBits: &sb}}
}

func fp8Q(enabled bool) *quant.Quantizer {
	return &quant.Quantizer{Class: "TensorQuantizer", Enabled: enabled, NumBits: quant.BitsE4M3, FakeQuant: true}
}

func bf16Tensor(shape []int64, v []float32) quant.Tensor {
	t, err := quant.FromFloat32(quant.BF16, shape, v)
	if err != nil {
		panic(err)
	}
	return t
}

func randVals(r *rand.Rand, n int, scale float64) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(r.NormFloat64() * scale)
	}
	return v
}

const tinyLlamaConfig = `{"architectures": ["LlamaForCausalLM"], "model_type": "llama", "dtype": "bfloat16", "rms_norm_eps": 1e-05}`

// tinyLlama is a 2-layer Llama (hidden 32, 2 KV heads of 8, intermediate 64) with
// NVFP4 linears and an FP8 KV cache, made from a fixed seed.
func tinyLlama(layers int) (map[string]quant.Tensor, table) {
	return llama(layers, 32, 16, 64, 48)
}

// llama makes a Llama with hidden H, KV projection size KV, intermediate F, vocab V.
func llama(layers int, H, KV, F, V int64) (map[string]quant.Tensor, table) {
	r := rand.New(rand.NewPCG(1, 2))
	sd := map[string]quant.Tensor{}
	qs := table{}
	add := func(name string, shape []int64, scale float64) {
		sd[name] = bf16Tensor(shape, randVals(r, int(quant.Numel(shape)), scale))
	}
	add("model.embed_tokens.weight", []int64{V, H}, 0.02)
	add("lm_head.weight", []int64{V, H}, 0.02)
	add("model.norm.weight", []int64{H}, 1)
	qs["lm_head.weight_quantizer"] = nvfp4Q(false)
	qs["lm_head.input_quantizer"] = nvfp4Q(false)
	qs["model.embed_tokens.weight_quantizer"] = nvfp4Q(false)
	for l := range layers {
		p := "model.layers." + strconv.Itoa(l) + "."
		add(p+"input_layernorm.weight", []int64{H}, 1)
		add(p+"post_attention_layernorm.weight", []int64{H}, 1)
		for _, lin := range []struct {
			name string
			o, i int64
		}{{"self_attn.q_proj", H, H}, {"self_attn.k_proj", KV, H}, {"self_attn.v_proj", KV, H}, {"self_attn.o_proj", H, H},
			{"mlp.gate_proj", F, H}, {"mlp.up_proj", F, H}, {"mlp.down_proj", H, F}} {
			n := p + lin.name
			add(n+".weight", []int64{lin.o, lin.i}, 0.05)
			w, _ := quant.Float32s(sd[n+".weight"])
			sd[n+".weight_quantizer._amax"] = bf16Tensor([]int64{}, []float32{absMax(w)})
			sd[n+".input_quantizer._amax"] = bf16Tensor([]int64{}, []float32{float32(1 + r.Float64()*4)})
			qs[n+".weight_quantizer"] = nvfp4Q(true)
			qs[n+".input_quantizer"] = nvfp4Q(true)
			qs[n+".output_quantizer"] = &quant.Quantizer{NumBits: quant.BitsInt8}
		}
		qs[p+"self_attn.k_bmm_quantizer"] = fp8Q(true)
		qs[p+"self_attn.v_bmm_quantizer"] = fp8Q(true)
		sd[p+"self_attn.k_bmm_quantizer._amax"] = bf16Tensor([]int64{}, []float32{float32(2 + r.Float64())})
		sd[p+"self_attn.v_bmm_quantizer._amax"] = bf16Tensor([]int64{}, []float32{float32(2 + r.Float64())})
	}
	return sd, qs
}

func infosOf(sd map[string]quant.Tensor) []quantstream.TensorInfo {
	names := make([]string, 0, len(sd))
	for n := range sd {
		names = append(names, n)
	}
	sort.Strings(names)
	out := make([]quantstream.TensorInfo, len(names))
	for i, n := range names {
		out[i] = quantstream.TensorInfo{Name: n, DType: sd[n].DType, Shape: sd[n].Shape}
	}
	return out
}
