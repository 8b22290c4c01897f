package convert

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/quantstream/quantstream/arrowio"
	"github.com/quantstream/quantstream/quant"
)

// readQuantConfig returns hf_quant_config.json's quantization and config.json's
// quantization_config of an export.
func readQuantConfig(t *testing.T, dir string) (hq, qc map[string]any) {
	t.Helper()
	var h struct {
		Q map[string]any `json:"quantization"`
	}
	var c struct {
		Q map[string]any `json:"quantization_config"`
	}
	for _, f := range []struct {
		name string
		v    any
	}{{"hf_quant_config.json", &h}, {"config.json", &c}} {
		b, err := os.ReadFile(filepath.Join(dir, f.name))
		if err != nil {
			t.Fatal(err)
		}
		if err := json.Unmarshal(b, f.v); err != nil {
			t.Fatal(err)
		}
	}
	return h.Q, c.Q
}

// TestKVCastModes: the KV-cache cast presets (hf_ptq's default --kv_cache_qformat
// fp8_cast, and nvfp4_cast) need no data. What ModelOpt exports for them follows
// from its code: use_constant_amax registers no _amax on *[kv]_bmm_quantizer
// (TensorQuantizer.set_from_attribute_config; model_calib.finish_stats_collection
// skips it), so postprocess_state_dict, which makes k_proj.k_scale / v_proj.v_scale
// from k_bmm_quantizer._amax / v_bmm_quantizer._amax, writes none; get_kv_cache_dtype
// still reads the format from num_bits (FP8, NVFP4), which hf_quant_config's
// kv_cache_quant_algo and convert_hf_quant_config_format's kv_cache_scheme carry.
// The weights are exactly the recipe's without a KV cache.
func TestKVCastModes(t *testing.T) {
	tmp := t.TempDir()
	plain := filepath.Join(tmp, "plain")
	if _, err := Run(t.Context(), Options{Inputs: []string{tinyLlama}, Out: plain, Recipe: "W4A16_NVFP4_CFG"}); err != nil {
		t.Fatal(err)
	}
	want, err := arrowio.ReadAllTensors(plain)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		kv, algo string
		scheme   any
	}{
		{"fp8_cast", "FP8", map[string]any{"dynamic": false, "num_bits": 8.0, "type": "float"}},
		{"nvfp4_cast", "NVFP4", "NVFP4"},
	} {
		t.Run(tc.kv, func(t *testing.T) {
			out := filepath.Join(tmp, tc.kv)
			s, err := Run(t.Context(), Options{Inputs: []string{tinyLlama}, Out: out, Recipe: "W4A16_NVFP4_CFG", KVCache: tc.kv})
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(s.Mode, tc.kv) {
				t.Errorf("mode %q", s.Mode)
			}
			got, err := arrowio.ReadAllTensors(out)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(want) {
				t.Errorf("%d tensors, %d without the KV cache", len(got), len(want))
			}
			for n, w := range want {
				if g, ok := got[n]; !ok || string(g.Data) != string(w.Data) {
					t.Errorf("tensor %s differs from the export without a KV cache", n)
				}
			}
			for n := range got {
				if strings.HasSuffix(n, "k_scale") || strings.HasSuffix(n, "v_scale") {
					t.Errorf("cast mode exported %s", n)
				}
			}
			hq, qc := readQuantConfig(t, out)
			if hq["kv_cache_quant_algo"] != tc.algo {
				t.Errorf("kv_cache_quant_algo %v, want %s", hq["kv_cache_quant_algo"], tc.algo)
			}
			if b, w := mustMarshal(qc["kv_cache_scheme"]), mustMarshal(tc.scheme); b != w {
				t.Errorf("kv_cache_scheme %s, want %s", b, w)
			}
		})
	}
}

func mustMarshal(v any) string { b, _ := json.Marshal(v); return string(b) }

// TestConstantAmax: constant_amax on input quantizers is data-free and exported as
// the configured value: the setter stores torch.tensor(float(v)) (float32) in _amax,
// calibration skips it, and _export_quantized_weight turns it into input_scale like a
// calibrated amax — for NVFP4 amax / (6·448), so 2688 gives exactly 1.0, as the
// recipe nvfp4_experts_only_input_scale1-kv_fp8_cast intends; for FP8
// amax / 448 (get_activation_scaling_factor through export_amax). The same recipe
// without the constant is refused as needing calibration.
func TestConstantAmax(t *testing.T) {
	tmp := t.TempDir()
	recipe := func(name, num string, constant string) string {
		p := filepath.Join(tmp, name+".yaml")
		y := `imports:
  base_disable_all: configs/ptq/units/base_disable_all
  default_disabled_quantizers: configs/ptq/units/default_disabled_quantizers
  num: configs/numerics/` + num + `
  kv_fp8_cast: configs/ptq/units/kv_fp8_cast
metadata:
  recipe_type: ptq
quantize:
  algorithm:
    method: max
    layerwise: {enable: false}
    skip_forward_without_activation_calib: true
  quant_cfg:
    - $import: base_disable_all
    - quantizer_name: '*mlp*weight_quantizer'
      cfg:
        $import: num
    - quantizer_name: '*mlp*input_quantizer'
      cfg:
        $import: num
` + constant + `    - $import: kv_fp8_cast
    - $import: default_disabled_quantizers
`
		if err := os.WriteFile(p, []byte(y), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, tc := range []struct {
		name, num, constant string
		want                float32
	}{
		{"nvfp4", "nvfp4", "        constant_amax: 2688.0\n", 1},
		{"fp8", "fp8", "        constant_amax: 224.0\n", 0.5},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := filepath.Join(tmp, tc.name)
			if _, err := Run(t.Context(), Options{Inputs: []string{tinyLlama}, Out: out, Recipe: recipe(tc.name, tc.num, tc.constant)}); err != nil {
				t.Fatal(err)
			}
			got, err := arrowio.ReadAllTensors(out)
			if err != nil {
				t.Fatal(err)
			}
			n := 0
			for name, v := range got {
				if !strings.HasSuffix(name, "input_scale") {
					continue
				}
				n++
				if !strings.Contains(name, ".mlp.") {
					t.Errorf("%s: only the MLP inputs are quantized", name)
				}
				if s, err := quant.Scalar(v); err != nil || s != tc.want || v.DType != quant.F32 {
					t.Errorf("%s = %v %v, want F32 %v", name, v.DType, s, tc.want)
				}
			}
			if n != 3*3 {
				t.Errorf("%d input scales, want one per MLP linear (9)", n)
			}
			hq, _ := readQuantConfig(t, out)
			if hq["kv_cache_quant_algo"] != "FP8" {
				t.Errorf("kv_cache_quant_algo %v", hq["kv_cache_quant_algo"])
			}
		})
	}
	_, err := Run(t.Context(), Options{Inputs: []string{tinyLlama}, Out: filepath.Join(tmp, "x"), Recipe: recipe("calib", "nvfp4", "")})
	if err == nil || !strings.Contains(err.Error(), "needs calibration") {
		t.Errorf("without constant_amax: %v, want needs calibration", err)
	}
}
