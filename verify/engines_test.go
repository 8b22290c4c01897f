package verify

import (
	"strings"
	"testing"

	"github.com/quantstream/quantstream"
	"github.com/quantstream/quantstream/quant"
)

// TestEngineQuantAlgos pins the quant_algo table against what the loaders say
// (engines.go names the file and commit of each rule). The examples: vLLM
// takes FP8, FP8_PER_CHANNEL_PER_TOKEN, FP8_PB_WO, NVFP4, W4A16_NVFP4, MXFP8 and
// MIXED_PRECISION, and none of the three loads ModelOpt's lower-case "mxfp4". The
// issue also says TensorRT-LLM has no W4A16_NVFP4: the QuantAlgo enum version we could
// read lacks it, but model_config.py@008e0af uses QuantAlgo.W4A16_NVFP4 (it picks a
// MoE backend for it), so at that version it is accepted.
func TestEngineQuantAlgos(t *testing.T) {
	for _, tc := range []struct {
		engine, algo string
		want         Loads
	}{
		{"vllm", "FP8", LoadsYes},
		{"vllm", "FP8_PER_CHANNEL_PER_TOKEN", LoadsYes},
		{"vllm", "fp8_pb_wo", LoadsYes}, // upper-cased by the loader
		{"vllm", "NVFP4", LoadsYes},
		{"vllm", "W4A16_NVFP4", LoadsYes},
		{"vllm", "MXFP8", LoadsYes},
		{"vllm", "MIXED_PRECISION", LoadsYes},
		{"vllm", "mxfp4", LoadsNo},
		{"vllm", "W4A16_AWQ", LoadsNo},
		{"vllm", "W8A16", LoadsNo},
		{"sglang", "FP8", LoadsYes},
		{"sglang", "NVFP4", LoadsYes},
		{"sglang", "W4A16_AWQ", LoadsYes},
		{"sglang", "mxfp4", LoadsNo},
		{"sglang", "fp8_pb_wo", LoadsNo}, // no "FP8" in it, case-sensitive
		{"sglang", "FP8_PER_CHANNEL_PER_TOKEN", LoadsNo},
		{"sglang", "W4A16_NVFP4", LoadsNo},
		{"sglang", "MXFP8", LoadsUnknown},
		{"trtllm", "mxfp4", LoadsNo},
		{"trtllm", "fp8_pb_wo", LoadsYes}, // canonicalised to FP8_BLOCK_SCALES
		{"trtllm", "W4A16_NVFP4", LoadsYes},
		{"trtllm", "NVFP4", LoadsYes},
		{"trtllm", "W4A16_AWQ", LoadsYes},
		{"trtllm", "NVFP4_AWQ", LoadsUnknown},
	} {
		e := engines[tc.engine]
		s := e.algo(e.normalize(tc.algo))
		if s.loads != tc.want {
			t.Errorf("%s %s: %s, want %s (%s)", tc.engine, tc.algo, s.loads, tc.want, s.why)
		}
		if s.source == "" || s.loads != LoadsYes && s.why == "" {
			t.Errorf("%s %s: no source or reason", tc.engine, tc.algo)
		}
	}
	for _, tc := range []struct {
		engine, algo string
		want         Loads
	}{
		{"vllm", "FP8", LoadsYes}, {"vllm", "W4A16_NVFP4", LoadsYes}, {"vllm", "W4A16_AWQ", LoadsNo},
		{"sglang", "NVFP4", LoadsYes}, {"sglang", "W4A16_NVFP4", LoadsNo},
	} {
		if s := engines[tc.engine].mixed(tc.algo); s.loads != tc.want {
			t.Errorf("%s MIXED_PRECISION layer %s: %s, want %s", tc.engine, tc.algo, s.loads, tc.want)
		}
	}
}

// TestEngineVerdictMixed: a MIXED_PRECISION checkpoint with a layer vLLM cannot build
// quantized is refused, naming the layer.
func TestEngineVerdictMixed(t *testing.T) {
	hq := []byte(`{"producer": {"name": "modelopt"}, "quantization": {"quant_algo": "MIXED_PRECISION", "kv_cache_quant_algo": null,
		"quantized_layers": {"model.layers.0.mlp.down_proj": {"quant_algo": "W4A16_AWQ", "group_size": 128}}}}`)
	hdrs := []quantstream.TensorInfo{
		{Name: "model.layers.0.mlp.down_proj.weight", DType: quant.U8, Shape: []int64{64, 256}},
	}
	v, err := JudgeHeaders("vllm", hdrs, hq, []byte(`{"model_type": "llama"}`))
	if err != nil {
		t.Fatal(err)
	}
	if v.Loads != LoadsNo {
		t.Fatalf("loads %s, want no: %v", v.Loads, v.Reasons)
	}
	found := false
	for _, f := range v.Reasons {
		found = found || f.Tensor == "model.layers.0.mlp.down_proj" && strings.Contains(f.Message, "W4A16_AWQ")
	}
	if !found {
		t.Errorf("no reason names the W4A16_AWQ layer: %v", v.Reasons)
	}
}
