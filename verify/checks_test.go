package verify_test

import (
	"encoding/binary"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/quantstream/quantstream/arrowio"
	"github.com/quantstream/quantstream/quant"
	"github.com/quantstream/quantstream/verify"
)

const (
	goldenNVFP4 = "../testdata/golden/e2e/nvfp4/expected"
	goldenW4A16 = "../testdata/golden/e2e/df_w4a16_nvfp4/expected"
)

// run verifies dir and returns the report.
func run(t *testing.T, dir string, opt verify.Options) *verify.Report {
	t.Helper()
	r, err := verify.Verify(t.Context(), dir, opt)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// wantFinding requires a finding of the severity and check about tensor (or file)
// whose message contains every substring.
func wantFinding(t *testing.T, r *verify.Report, sev verify.Severity, check, about string, substr ...string) {
	t.Helper()
	for _, f := range r.Findings {
		if f.Severity != sev || f.Check != check || (f.Tensor != about && f.File != about) {
			continue
		}
		ok := true
		for _, s := range substr {
			ok = ok && strings.Contains(f.Message, s)
		}
		if ok {
			return
		}
	}
	t.Errorf("no %s [%s] about %s saying %q; findings:", sev, check, about, substr)
	for _, f := range r.Findings {
		t.Logf("  %s", f)
	}
}

func (c *ckCopy) add(t *testing.T, name string, tt quant.Tensor) {
	t.Helper()
	c.rewrite(t, c.shards()[len(c.shards())-1], func(ts map[string]quant.Tensor) { ts[name] = tt })
}

func f32Scalar(v float32) quant.Tensor {
	return quant.Tensor{DType: quant.F32, Shape: []int64{}, Data: binary.LittleEndian.AppendUint32(nil, math.Float32bits(v))}
}

func (c *ckCopy) editJSON(t *testing.T, file string, fn func(m map[string]any)) {
	t.Helper()
	p := filepath.Join(c.dir, file)
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	fn(m)
	if b, err = json.Marshal(m); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestConfigs(t *testing.T) {
	t.Run("disagree", func(t *testing.T) {
		ck := copyCheckpoint(t, goldenNVFP4)
		ck.editJSON(t, "config.json", func(m map[string]any) { m["quantization_config"].(map[string]any)["quant_algo"] = "FP8" })
		wantFinding(t, run(t, ck.dir, verify.Options{}), verify.Error, verify.CheckConfig, "config.json", "disagrees", "quant_algo")
	})
	t.Run("config.json alone", func(t *testing.T) {
		ck := copyCheckpoint(t, goldenNVFP4)
		if err := os.Remove(filepath.Join(ck.dir, "hf_quant_config.json")); err != nil {
			t.Fatal(err)
		}
		assertSound(t, run(t, ck.dir, verify.Options{}))
	})
	t.Run("not ModelOpt", func(t *testing.T) {
		r := run(t, "../testdata/golden-qsrc/e2e/src_qwen3_fp8", verify.Options{})
		wantFinding(t, r, verify.Error, verify.CheckConfig, "config.json", `quant_method is "fp8"`, "not a ModelOpt checkpoint")
	})
	t.Run("unknown quant_algo", func(t *testing.T) {
		ck := copyCheckpoint(t, goldenNVFP4)
		for _, f := range []string{"hf_quant_config.json", "config.json"} {
			ck.editJSON(t, f, func(m map[string]any) {
				q, _ := m["quantization"].(map[string]any)
				if q == nil {
					q = m["quantization_config"].(map[string]any)
				}
				q["quant_algo"] = "NVFP8"
			})
		}
		wantFinding(t, run(t, ck.dir, verify.Options{}), verify.Error, verify.CheckConfig, "hf_quant_config.json", `"NVFP8" is not a quant_algo`)
	})
	t.Run("invalid JSON", func(t *testing.T) {
		ck := copyCheckpoint(t, goldenNVFP4)
		if err := os.WriteFile(filepath.Join(ck.dir, "generation_config.json"), []byte("{"), 0o644); err != nil {
			t.Fatal(err)
		}
		wantFinding(t, run(t, ck.dir, verify.Options{}), verify.Error, verify.CheckFiles, "generation_config.json", "not valid JSON")
	})
}

func TestFiles(t *testing.T) {
	t.Run("stray tensor and total_size", func(t *testing.T) {
		ck := copyCheckpoint(t, goldenNVFP4)
		ck.shard(t)
		ck.add(t, "model.extra.weight", quant.Tensor{DType: quant.BF16, Shape: []int64{2}, Data: make([]byte, 4)})
		ix := ck.index(t)
		ix.Metadata["total_size"] += 12
		if err := os.WriteFile(filepath.Join(ck.dir, arrowio.IndexName), ix.Marshal(), 0o644); err != nil {
			t.Fatal(err)
		}
		r := run(t, ck.dir, verify.Options{})
		wantFinding(t, r, verify.Error, verify.CheckFiles, "model.extra.weight", "stray tensor")
		wantFinding(t, r, verify.Error, verify.CheckFiles, arrowio.IndexName, "total_size")
	})
	t.Run("stray shard and duplicate", func(t *testing.T) {
		ck := copyCheckpoint(t, goldenNVFP4)
		shards := ck.shard(t)
		name := slices.Sorted(mapsKeys(ck.index(t).WeightMap))[0]
		b := ck.read(t, name)
		h := ck.header(name)
		writeShard(t, filepath.Join(ck.dir, "extra.safetensors"), map[string]quant.Tensor{name: {DType: h.DType, Shape: h.Shape, Data: b}}, nil)
		r := run(t, ck.dir, verify.Options{})
		wantFinding(t, r, verify.Error, verify.CheckFiles, "extra.safetensors", "stray shard")
		_ = shards
	})
	t.Run("no index, tensor in two files", func(t *testing.T) {
		ck := copyCheckpoint(t, goldenNVFP4)
		name := ck.names()[0]
		h := ck.header(name)
		writeShard(t, filepath.Join(ck.dir, "extra.safetensors"), map[string]quant.Tensor{name: {DType: h.DType, Shape: h.Shape, Data: ck.read(t, name)}}, nil)
		wantFinding(t, run(t, ck.dir, verify.Options{}), verify.Error, verify.CheckFiles, name, "stored once")
	})
	t.Run("corrupt header", func(t *testing.T) {
		ck := copyCheckpoint(t, goldenNVFP4)
		p := filepath.Join(ck.dir, "model.safetensors")
		if err := os.Truncate(p, 100); err != nil {
			t.Fatal(err)
		}
		wantFinding(t, run(t, ck.dir, verify.Options{}), verify.Error, verify.CheckFiles, "model.safetensors", "corrupt")
	})
}

func TestLayoutAndCoverage(t *testing.T) {
	const q = "model.layers.0.self_attn.q_proj"
	t.Run("wrong block scale shape", func(t *testing.T) {
		ck := copyCheckpoint(t, goldenNVFP4)
		ck.remove(t, q+".weight_scale")
		ck.add(t, q+".weight_scale", quant.Tensor{DType: quant.F8E4M3, Shape: []int64{256, 8}, Data: slices.Repeat([]byte{0x38}, 256*8)})
		wantFinding(t, run(t, ck.dir, verify.Options{}), verify.Error, verify.CheckLayout, q+".weight_scale", "shape [256 8]", "needs [256 16]")
	})
	t.Run("scale not part of the format", func(t *testing.T) {
		ck := copyCheckpoint(t, goldenW4A16)
		ck.add(t, q+".input_scale", f32Scalar(0.01))
		wantFinding(t, run(t, ck.dir, verify.Options{}), verify.Error, verify.CheckLayout, q+".input_scale", "not part of format w4a16_nvfp4")
	})
	t.Run("calibration buffer left", func(t *testing.T) {
		ck := copyCheckpoint(t, goldenNVFP4)
		ck.add(t, q+".weight_quantizer._amax", f32Scalar(1))
		wantFinding(t, run(t, ck.dir, verify.Options{}), verify.Error, verify.CheckLayout, q+".weight_quantizer._amax", "calibration buffer")
	})
	t.Run("quantized but excluded", func(t *testing.T) {
		ck := copyCheckpoint(t, goldenNVFP4)
		ck.setExcluded(t, append(ck.excluded(t), "model.layers.0.self_attn*"))
		wantFinding(t, run(t, ck.dir, verify.Options{}), verify.Error, verify.CheckCoverage, q+".weight", `"model.layers.0.self_attn*" covers it`)
	})
	t.Run("KV scale without a KV algorithm", func(t *testing.T) {
		ck := copyCheckpoint(t, goldenNVFP4)
		ck.add(t, "model.layers.0.self_attn.k_proj.k_scale", f32Scalar(0.1))
		wantFinding(t, run(t, ck.dir, verify.Options{}), verify.Error, verify.CheckKV, "model.layers.0.self_attn.k_proj.k_scale", "kv_cache_quant_algo is null")
	})
}

// TestAllZeroWeightQuirk: ModelOpt exports an all-zero NVFP4 weight with
// weight_scale_2 = 0, every block scale NaN and every element code 7 (the golden
// README documents it): a warning that says so, not an error. A zero weight_scale_2
// without that pattern is an error.
func TestAllZeroWeightQuirk(t *testing.T) {
	const o = "model.layers.0.self_attn.o_proj" // o_proj is fused with nothing
	ck := copyCheckpoint(t, goldenNVFP4)
	ck.patch(t, o+".weight_scale_2", 0, make([]byte, 4))
	wantFinding(t, run(t, ck.dir, verify.Options{}), verify.Error, verify.CheckScales, o+".weight", "weight_scale_2 is 0")

	ck.patch(t, o+".weight_scale", 0, slices.Repeat([]byte{0xFF}, int(ck.header(o+".weight_scale").Size())))
	ck.patch(t, o+".weight", 0, slices.Repeat([]byte{0x77}, int(ck.header(o+".weight").Size())))
	r := run(t, ck.dir, verify.Options{})
	assertSound(t, r)
	wantFinding(t, r, verify.Warning, verify.CheckScales, o+".weight_scale", "ModelOpt's export of an all-zero weight", "golden README")
}

// TestSaturatedBlocks: a weight_scale_2 far too small leaves blocks at the 448 clamp
// with every element at ±6.
func TestSaturatedBlocks(t *testing.T) {
	const o = "model.layers.0.self_attn.o_proj"
	ck := copyCheckpoint(t, goldenNVFP4)
	ck.patch(t, o+".weight_scale", 0, slices.Repeat([]byte{0x7E}, 8))
	ck.patch(t, o+".weight", 0, slices.Repeat([]byte{0xF7}, 8))
	wantFinding(t, run(t, ck.dir, verify.Options{}), verify.Error, verify.CheckScales, o+".weight_scale", "saturated")
}

func TestHeadersOnlySkipsData(t *testing.T) {
	ck := copyCheckpoint(t, goldenNVFP4)
	ck.patch(t, "model.layers.0.self_attn.o_proj.input_scale", 0, []byte{0, 0, 0xC0, 0x7F})
	r := run(t, ck.dir, verify.Options{HeadersOnly: true})
	if r.DataChecked || !r.OK {
		t.Errorf("headers only: DataChecked %v, OK %v", r.DataChecked, r.OK)
	}
	if r := run(t, ck.dir, verify.Options{}); r.OK {
		t.Error("the NaN input_scale was not found with data checks on")
	}
}

// TestAgainstNonFinite: a NaN block scale makes the dequantized module NaN; --against
// says so (and the JSON report stays encodable).
func TestAgainstNonFinite(t *testing.T) {
	const o = "model.layers.0.self_attn.o_proj"
	ck := copyCheckpoint(t, goldenNVFP4)
	ck.patch(t, o+".weight_scale", 0, []byte{0x7F})
	r := run(t, ck.dir, verify.Options{Against: "../testdata/golden/e2e/base_llama"})
	wantFinding(t, r, verify.Error, verify.CheckAgainst, o+".weight", "NaN or Inf")
	if _, err := json.Marshal(r); err != nil {
		t.Fatal(err)
	}
}

// TestMixedPrecision: a MIXED_PRECISION config (quantized_layers, no
// exclude_modules) made from an NVFP4 export verifies clean; a quantized module left
// out of quantized_layers is an error, and vLLM refuses a layer algorithm it cannot
// build.
func TestMixedPrecision(t *testing.T) {
	ck := copyCheckpoint(t, goldenNVFP4)
	layers := map[string]any{}
	for _, n := range ck.names() {
		if m, ok := strings.CutSuffix(n, ".weight_scale_2"); ok {
			layers[m] = map[string]any{"quant_algo": "NVFP4", "group_size": 16}
		}
	}
	set := func(layers map[string]any) {
		ck.editJSON(t, "hf_quant_config.json", func(m map[string]any) {
			q := m["quantization"].(map[string]any)
			q["quant_algo"], q["quantized_layers"] = "MIXED_PRECISION", layers
			delete(q, "exclude_modules")
			delete(q, "group_size")
		})
		ck.editJSON(t, "config.json", func(m map[string]any) {
			q := m["quantization_config"].(map[string]any)
			q["quant_algo"], q["quantized_layers"], q["ignore"] = "MIXED_PRECISION", layers, []any{}
		})
	}
	set(layers)
	r := run(t, ck.dir, verify.Options{Engines: []string{"vllm"}})
	assertSound(t, r)
	if r.Summary.Modules["nvfp4"] != len(layers) {
		t.Errorf("modules %v, want %d nvfp4", r.Summary.Modules, len(layers))
	}

	const q = "model.layers.0.self_attn.q_proj"
	delete(layers, q)
	layers["model.layers.0.self_attn.o_proj"] = map[string]any{"quant_algo": "W4A16_AWQ", "group_size": 128}
	set(layers)
	r = run(t, ck.dir, verify.Options{Engines: []string{"vllm"}})
	wantFinding(t, r, verify.Error, verify.CheckCoverage, q+".weight", "quantized_layers does not list it")
	wantFinding(t, r, verify.Error, verify.CheckEngine, "model.layers.0.self_attn.o_proj", "W4A16_AWQ")
}

// TestExpertLeftBF16AndRouter: an expert left BF16 (its scales gone) and a router
// dropped from exclude_modules are both unquantized linears an engine would build
// quantized.
func TestExpertLeftBF16AndRouter(t *testing.T) {
	const e = "model.layers.0.mlp.experts.1.gate_proj"
	ck := copyCheckpoint(t, "../testdata/golden/e2e/moe_nvfp4/expected")
	for _, role := range []string{"weight", "weight_scale", "weight_scale_2", "input_scale"} {
		ck.remove(t, e+"."+role)
	}
	ck.add(t, e+".weight", quant.Tensor{DType: quant.BF16, Shape: []int64{128, 256}, Data: make([]byte, 128*256*2)})
	ck.setExcluded(t, slices.DeleteFunc(ck.excluded(t), func(s string) bool { return s == "model.layers.0.mlp.gate" }))
	r := run(t, ck.dir, verify.Options{})
	wantFinding(t, r, verify.Error, verify.CheckCoverage, e+".weight", "not covered by exclude_modules")
	wantFinding(t, r, verify.Error, verify.CheckCoverage, "model.layers.0.mlp.gate.weight", "not covered by exclude_modules")
}
