package convert

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const golden = "../testdata/golden/e2e"

// TestRecipeOnCalibratedStateRefused: --recipe with an input that carries calibration
// state is refused up front (it used to end in a "duplicate tensor …_amax" plan
// mismatch), and nothing is written.
func TestRecipeOnCalibratedStateRefused(t *testing.T) {
	out := filepath.Join(t.TempDir(), "out")
	_, err := Run(t.Context(), Options{Inputs: []string{filepath.Join(golden, "base_llama"), filepath.Join(golden, "fp8", "input")},
		Out: out, Recipe: "W4A16_NVFP4_CFG"})
	if !errors.Is(err, ErrRecipeWithState) || !strings.Contains(err.Error(), "quantizers.json") {
		t.Fatalf("got %v, want ErrRecipeWithState naming quantizers.json", err)
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Fatalf("output exists: %v", err)
	}
}

// TestPlanFindsUncalibratableWeights: a recipe on weights that are already quantized
// (F8_E4M3) is a plan problem per weight, found from headers.
func TestPlanFindsUncalibratableWeights(t *testing.T) {
	fp8 := filepath.Join(t.TempDir(), "fp8")
	if _, err := Run(t.Context(), Options{Inputs: []string{filepath.Join(golden, "base_llama"), filepath.Join(golden, "fp8", "input")}, Out: fp8}); err != nil {
		t.Fatal(err)
	}
	r, err := MakePlan(t.Context(), Options{Inputs: []string{fp8}, Recipe: "W4A16_NVFP4_CFG"})
	if err == nil && len(r.Problems) == 0 {
		t.Fatal("plan found no problem")
	}
	if len(r.Problems) != 14 {
		t.Fatalf("%d problems, want one per linear (14): %q", len(r.Problems), r.Problems)
	}
	if p := r.Problems[0]; !strings.Contains(p, "F8_E4M3") || !strings.Contains(p, "model.layers.0.mlp.down_proj.weight") {
		t.Fatalf("problem %q does not name the weight and dtype", p)
	}
	if _, err := Run(t.Context(), Options{Inputs: []string{fp8}, Recipe: "W4A16_NVFP4_CFG", Out: filepath.Join(t.TempDir(), "x")}); !errors.Is(err, ErrPlan) {
		t.Fatalf("convert: %v, want ErrPlan", err)
	}
}
