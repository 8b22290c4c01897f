package modelopt

import (
	"bytes"
	"errors"
	"os"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/quantstream/quantstream/arrowio"
)

func TestDataFreeRefuses(t *testing.T) {
	cfg, err := os.ReadFile(goldenE2E("base_llama", "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	m, _ := baseModel(t, "base_llama")
	for _, c := range []struct{ recipe, kv, why string }{
		{"FP8_DEFAULT_CFG", "", "static activation quantizers"},
		{"NVFP4_DEFAULT_CFG", "", "static activation quantizers"},
		{"INT8_DEFAULT_CFG", "", "static activation quantizers"},
		{"W4A8_NVFP4_FP8_CFG", "", "static activation quantizers"},
		{"W4A8_MXFP4_FP8_CFG", "", "static activation quantizers"},
		{"INT4_AWQ_CFG", "", `"awq_lite"`},
		{"NVFP4_AWQ_LITE_CFG", "", `"awq_lite"`},
		{"INT8_SMOOTHQUANT_CFG", "", `"smoothquant"`},
		{"W4A8_AWQ_BETA_CFG", "", `"awq_lite"`},
		{"W4A16_NVFP4_CFG", "FP8_KV_CFG", "k_bmm_quantizer"},
		{"INT8_WEIGHT_ONLY_CFG", "NVFP4_KV_CFG", "k_bmm_quantizer"},
	} {
		t.Run(c.recipe+"+"+c.kv, func(t *testing.T) {
			r, err := ResolveRecipe(c.recipe, c.kv)
			if err != nil {
				t.Fatal(err)
			}
			_, err = DataFree(r, cfg, m.Shapes)
			if !errors.Is(err, ErrNeedsCalibration) || !strings.Contains(err.Error(), c.why) ||
				!strings.Contains(err.Error(), "mto.enable_huggingface_checkpointing()") {
				t.Fatalf("err = %v, want ErrNeedsCalibration naming %s and the remedy", err, c.why)
			}
		})
	}
}

// TestDataFreeWeightAmaxMatchesCalibrated checks the data-free amaxes against the golden
// cases that were calibrated on data with a max-calibrated recipe: ModelOpt calibrates
// weight quantizers on the weights themselves, so their amax buffers must be identical
// (name, dtype, shape, bytes) to what we compute from the base weights.
func TestDataFreeWeightAmaxMatchesCalibrated(t *testing.T) {
	checked := 0
	for _, c := range e2eCases(t) {
		if c.DataFree {
			continue
		}
		name := strings.TrimPrefix(c.ID, "e2e/")
		rpath := goldenE2E(name, "input", "quant_recipe.json")
		r, err := ReadRecipeJSON(rpath)
		if err != nil {
			t.Fatal(err)
		}
		if r.Method() != "max" && r.Method() != "" {
			continue // AWQ rewrote the weights; its amaxes are of other weights
		}
		base := "base_llama"
		if strings.HasPrefix(name, "moe_") {
			base = "base_moe"
		}
		t.Run(name, func(t *testing.T) {
			m, weights := baseModel(t, base)
			q, err := Apply(r, m, ApplyOptions{Forwarded: true})
			if err != nil {
				t.Fatal(err)
			}
			got, err := q.WeightAmax(weights)
			if err != nil {
				t.Fatal(err)
			}
			state, err := arrowio.ReadAllTensors(goldenE2E(name, "input"))
			if err != nil {
				t.Fatal(err)
			}
			var want []string
			for k := range state {
				if strings.HasSuffix(k, "._amax") && strings.Contains(k, "weight_quantizer") {
					want = append(want, k)
				}
			}
			var have []string
			for k := range got {
				have = append(have, k)
			}
			sort.Strings(want)
			sort.Strings(have)
			if strings.Join(want, ",") != strings.Join(have, ",") {
				t.Fatalf("weight amax names differ:\n got %v\nwant %v", have, want)
			}
			for _, k := range want {
				g, w := got[k], state[k]
				if g.DType != w.DType || !slices.Equal(g.Shape, w.Shape) || !bytes.Equal(g.Data, w.Data) {
					t.Errorf("%s: got %v %v, want %v %v (bytes equal %v)", k, g.DType, g.Shape, w.DType, w.Shape, bytes.Equal(g.Data, w.Data))
				}
			}
			checked++
		})
	}
	if checked < 5 {
		t.Errorf("only %d calibrated cases compared", checked)
	}
}

func TestDataFreePresets(t *testing.T) {
	for _, c := range e2eCases(t) {
		if !c.DataFree {
			continue
		}
		t.Run(c.ID, func(t *testing.T) {
			base := strings.TrimPrefix(c.InputDir, "e2e/")
			m, weights := baseModel(t, base)
			cfg, _ := os.ReadFile(goldenE2E(base, "config.json"))
			r, err := Preset(c.Recipe)
			if err != nil {
				t.Fatal(err)
			}
			q, err := DataFree(r, cfg, m.Shapes)
			if err != nil {
				t.Fatal(err)
			}
			compareTable(t, q, goldenE2E("..", c.Quantizers))
			amax, err := q.WeightAmax(weights)
			if err != nil {
				t.Fatal(err)
			}
			for qn, shape := range q.AmaxShapes {
				a, ok := amax[qn+"._amax"]
				if !ok || !slices.Equal(a.Shape, shape) {
					t.Errorf("%s: amax %v (present %v), calibration shape %v", qn, a.Shape, ok, shape)
				}
			}
			if len(amax) != len(q.AmaxShapes) {
				t.Errorf("%d amaxes for %d calibrated quantizers", len(amax), len(q.AmaxShapes))
			}
		})
	}
}
