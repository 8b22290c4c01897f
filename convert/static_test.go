package convert

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/quantstream/quantstream/arrowio"
	"github.com/quantstream/quantstream/modelopt"
)

const qsrcE2E = "../testdata/golden-qsrc/e2e"

// TestDataFreeStaticNVFP4: a max-calibrated static NVFP4 recipe (numerics
// nvfp4_static) is data-free: per-block _amax from the weight's blocks and, from
// promote_static_block_weight_quantizers with SharedWeightGlobalAmaxState, a
// _global_amax that is the maximum over the q/k/v siblings (o_proj alone). On the
// gpt-oss source, with only the attention quantized, every attention tensor equals
// ModelOpt's export in the cast_w4a16_nvfp4 case, where the same quantizers were
// calibrated that way.
func TestDataFreeStaticNVFP4(t *testing.T) {
	tmp := t.TempDir()
	recipe := filepath.Join(tmp, "static_attention.yaml")
	if err := os.WriteFile(recipe, []byte(`imports:
  base_disable_all: configs/ptq/units/base_disable_all
  default_disabled_quantizers: configs/ptq/units/default_disabled_quantizers
  nvfp4_static: configs/numerics/nvfp4_static
metadata:
  recipe_type: ptq
quantize:
  algorithm: max
  quant_cfg:
    - $import: base_disable_all
    - quantizer_name: '*self_attn*weight_quantizer'
      cfg:
        $import: nvfp4_static
    - $import: default_disabled_quantizers
`), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(tmp, "out")
	if _, err := Run(t.Context(), Options{Inputs: []string{filepath.Join(qsrcE2E, "src_gpt_oss_mxfp4")}, Out: out, Recipe: recipe}); err != nil {
		t.Fatal(err)
	}
	got, err := arrowio.ReadAllTensors(out)
	if err != nil {
		t.Fatal(err)
	}
	want, err := arrowio.ReadAllTensors(filepath.Join(qsrcE2E, "gpt_oss_mxfp4-cast_w4a16_nvfp4", "expected"))
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for name, w := range want {
		if !strings.Contains(name, ".self_attn.") || strings.Contains(name, ".sinks") {
			continue
		}
		n++
		g, ok := got[name]
		if !ok || g.DType != w.DType || !bytes.Equal(g.Data, w.Data) {
			t.Errorf("%s differs from ModelOpt's static export", name)
		}
	}
	if n != 2*4*4 { // 2 layers × q/k/v/o × weight, weight_scale, weight_scale_2, bias
		t.Errorf("compared %d attention tensors, want 32", n)
	}
}

// TestCastFlag: --cast-mxfp4-to-nvfp4 is for a data-free recipe on an MXFP4 source;
// elsewhere it is refused, naming why.
func TestCastFlag(t *testing.T) {
	off := false
	for _, tc := range []struct {
		name string
		opt  Options
		want string
	}{
		{"FP8 source", Options{Inputs: []string{filepath.Join(qsrcE2E, "src_qwen3_fp8")}, Recipe: "W4A16_NVFP4_CFG", CastMXFP4ToNVFP4: true}, "MXFP4 source"},
		{"no recipe", Options{Inputs: []string{filepath.Join(qsrcE2E, "src_gpt_oss_mxfp4")}, CastMXFP4ToNVFP4: true}, "data-free --recipe"},
		{"state", Options{Inputs: []string{filepath.Join(qsrcE2E, "src_gpt_oss_mxfp4"), filepath.Join(qsrcE2E, "gpt_oss_mxfp4-cast_nvfp4", "input")}, CastMXFP4ToNVFP4: true}, "already holds the cast"},
		{"experts not NVFP4", Options{Inputs: []string{filepath.Join(qsrcE2E, "src_gpt_oss_mxfp4")}, Recipe: "W4A16_NVFP4_CFG", CastMXFP4ToNVFP4: true,
			Rules: []modelopt.Rule{{QuantizerName: "*mlp.experts*", Enable: &off}}}, "mlp.experts"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.opt.Out = filepath.Join(t.TempDir(), "out")
			_, err := Run(t.Context(), tc.opt)
			if !errors.Is(err, ErrCast) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want ErrCast naming %q", err, tc.want)
			}
		})
	}
}
