package convert

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/quantstream/quantstream/quantsrc"
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

// TestRecipeOnExportedCheckpointRefused: a recipe on a checkpoint ModelOpt already
// exported (F8_E4M3 weights, quantization_config.quant_method "modelopt") is refused
// from headers, in one problem that names the quant_method, not one per weight; and
// nothing is written.
func TestRecipeOnExportedCheckpointRefused(t *testing.T) {
	fp8 := filepath.Join(t.TempDir(), "fp8")
	if _, err := Run(t.Context(), Options{Inputs: []string{filepath.Join(golden, "base_llama"), filepath.Join(golden, "fp8", "input")}, Out: fp8}); err != nil {
		t.Fatal(err)
	}
	r, err := MakePlan(t.Context(), Options{Inputs: []string{fp8}, Recipe: "W4A16_NVFP4_CFG"})
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Problems) != 1 || !strings.Contains(r.Problems[0], `"modelopt"`) || !strings.Contains(r.Problems[0], "copy it unchanged") {
		t.Fatalf("problems %q, want one naming quant_method modelopt and the remedy", r.Problems)
	}
	out := filepath.Join(t.TempDir(), "x")
	if _, err := Run(t.Context(), Options{Inputs: []string{fp8}, Recipe: "W4A16_NVFP4_CFG", Out: out}); !errors.Is(err, quantsrc.ErrUnsupported) {
		t.Fatalf("convert: %v, want quantsrc.ErrUnsupported", err)
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Fatalf("output exists: %v", err)
	}
	// Copying it unchanged stays possible.
	if _, err := Run(t.Context(), Options{Inputs: []string{fp8}, Out: out}); err != nil {
		t.Fatalf("passthrough: %v", err)
	}
}
