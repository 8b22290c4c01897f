package verify_test

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/quantstream/quantstream/arrowio"
	"github.com/quantstream/quantstream/convert"
	"github.com/quantstream/quantstream/internal/testgen"
	"github.com/quantstream/quantstream/verify"
)

// The data-free recipes quantstream converts the tiny models with (README).
var dataFreeRecipes = []string{"W4A16_NVFP4_CFG", "INT8_WEIGHT_ONLY_CFG", "INT4_BLOCKWISE_WEIGHT_ONLY_CFG",
	"FP8_2D_BLOCKWISE_WEIGHT_ONLY_CFG", "FP8_PER_CHANNEL_PER_TOKEN_CFG", "MXFP4_DEFAULT_CFG", "MXFP8_DEFAULT_CFG"}

// TestTinyOutputsSound: quantstream's own outputs of the tiny models, for every
// data-free recipe it converts, verify clean and dequantize to within their format's
// SNR floor of the input.
func TestTinyOutputsSound(t *testing.T) {
	for _, model := range []string{"../testdata/tiny_llama", "../testdata/tiny_moe"} {
		for _, recipe := range dataFreeRecipes {
			t.Run(filepath.Base(model)+"/"+recipe, func(t *testing.T) {
				out := filepath.Join(t.TempDir(), "out")
				_, err := convert.Run(t.Context(), convert.Options{Inputs: []string{model}, Out: out, Recipe: recipe})
				if errors.Is(err, convert.ErrPlan) {
					t.Skipf("refused from the plan, as ModelOpt refuses it: %v", err) // INT4 of 352 columns, INT4 MoE
				}
				if err != nil {
					t.Fatal(err)
				}
				r, err := verify.Verify(t.Context(), out, verify.Options{Against: model})
				if err != nil {
					t.Fatal(err)
				}
				assertSound(t, r)
				if len(r.SNR) == 0 {
					t.Fatal("no module compared against the source")
				}
				low := r.SNR[0]
				for _, s := range r.SNR {
					if s.DB < low.DB {
						low = s
					}
				}
				t.Logf("%d modules, lowest SNR %.2f dB (%s, floor %.0f)", len(r.SNR), low.DB, low.Module, low.Floor)
			})
		}
	}
}

// TestEngineOnMXFP4Export: quantstream's data-free MXFP4 export is refused by each
// engine's loader (ModelOpt writes quant_algo "mxfp4" in lower case), and the report
// says why.
func TestEngineOnMXFP4Export(t *testing.T) {
	out := filepath.Join(t.TempDir(), "out")
	if _, err := convert.Run(t.Context(), convert.Options{Inputs: []string{"../testdata/tiny_llama"}, Out: out, Recipe: "MXFP4_DEFAULT_CFG"}); err != nil {
		t.Fatal(err)
	}
	r, err := verify.Verify(t.Context(), out, verify.Options{Engines: verify.Engines()})
	if err != nil {
		t.Fatal(err)
	}
	if r.OK {
		t.Fatal("an MXFP4 export verified sound for every engine")
	}
	for _, v := range r.Engines {
		if v.Loads != verify.LoadsNo {
			t.Errorf("%s loads %s", v.Engine, v.Loads)
		}
		found := false
		for _, f := range v.Reasons {
			found = found || f.Severity == verify.Error && strings.Contains(f.Message, "quant_algo mxfp4")
		}
		if !found {
			t.Errorf("%s: no reason names quant_algo mxfp4: %v", v.Engine, v.Reasons)
		}
	}
	// Without --engine the export itself is sound: only the engines refuse it.
	r, err = verify.Verify(t.Context(), out, verify.Options{})
	if err != nil {
		t.Fatal(err)
	}
	assertSound(t, r)
}

// TestBenchOutputsSound: the conversions the benchmarks run (convert's
// BenchmarkConvert: calibrated NVFP4 and FP8, data-free recipes, on a generated Llama
// and a generated Qwen3-MoE), at a small size, verify clean against their input.
func TestBenchOutputsSound(t *testing.T) {
	if testing.Short() {
		t.Skip("generates and converts two models")
	}
	dir := t.TempDir()
	model, moe := filepath.Join(dir, "model"), filepath.Join(dir, "moe")
	const size, maxTensor = 6 << 20, 1 << 20
	c, err := testgen.WriteSyntheticLlama(model, size, maxTensor, arrowio.WriteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	mc, err := testgen.WriteSyntheticMoE(moe, size, maxTensor, arrowio.WriteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	calib := map[string]string{}
	for _, f := range testgen.CalibFormats {
		calib[f], calib["moe-"+f] = filepath.Join(dir, "calib-"+f), filepath.Join(dir, "calib-moe-"+f)
		if err := testgen.WriteSyntheticCalib(calib[f], c, f, false); err != nil {
			t.Fatal(err)
		}
		every := func(int, int) (float32, bool) { return 4, true }
		if err := testgen.WriteSyntheticMoECalib(calib["moe-"+f], mc, f, every, false); err != nil {
			t.Fatal(err)
		}
	}
	for _, bc := range []struct {
		name   string
		opt    convert.Options
		source string
	}{
		{"nvfp4", convert.Options{Inputs: []string{model, calib["nvfp4"]}}, model},
		{"fp8", convert.Options{Inputs: []string{model, calib["fp8"]}}, model},
		{"datafree_w4a16_nvfp4", convert.Options{Inputs: []string{model}, Recipe: "W4A16_NVFP4_CFG"}, model},
		{"datafree_int4", convert.Options{Inputs: []string{model}, Recipe: "INT4_BLOCKWISE_WEIGHT_ONLY_CFG"}, model},
		{"datafree_mxfp4", convert.Options{Inputs: []string{model}, Recipe: "MXFP4_DEFAULT_CFG"}, model},
		{"moe_nvfp4", convert.Options{Inputs: []string{moe, calib["moe-nvfp4"]}}, moe},
		{"moe_fp8", convert.Options{Inputs: []string{moe, calib["moe-fp8"]}}, moe},
		{"moe_datafree_w4a16_nvfp4", convert.Options{Inputs: []string{moe}, Recipe: "W4A16_NVFP4_CFG"}, moe},
		{"moe_datafree_mxfp4", convert.Options{Inputs: []string{moe}, Recipe: "MXFP4_DEFAULT_CFG"}, moe},
		{"moe_datafree_int8_wo", convert.Options{Inputs: []string{moe}, Recipe: "INT8_WEIGHT_ONLY_CFG"}, moe},
	} {
		t.Run(bc.name, func(t *testing.T) {
			opt := bc.opt
			opt.Out = filepath.Join(t.TempDir(), "out")
			if _, err := convert.Run(t.Context(), opt); err != nil {
				t.Fatal(err)
			}
			r, err := verify.Verify(t.Context(), opt.Out, verify.Options{Against: bc.source})
			if err != nil {
				t.Fatal(err)
			}
			assertSound(t, r)
			if len(r.SNR) == 0 {
				t.Error("nothing compared")
			}
		})
	}
}
