package modelopt

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// goldenRecipeFiles lists every full resolved recipe of the golden e2e cases.
func goldenRecipeFiles(t *testing.T) []string {
	t.Helper()
	a, _ := filepath.Glob(goldenE2E("*", "quant_recipe.json"))
	b, _ := filepath.Glob(goldenE2E("*", "input", "quant_recipe.json"))
	files := append(a, b...)
	if len(files) < 15 {
		t.Fatalf("only %d golden recipes found", len(files))
	}
	return files
}

func TestPresetsMatchGoldenRecipes(t *testing.T) {
	checked := map[string]bool{}
	for _, f := range goldenRecipeFiles(t) {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		var head struct{ Name string }
		if err := json.Unmarshal(raw, &head); err != nil {
			t.Fatal(err)
		}
		parts := strings.Split(head.Name, " + ")
		if strings.Contains(head.Name, "synthetic") {
			// nvfp4_awq_synth: NVFP4_DEFAULT_CFG with pre_quant_scales added by hand.
			parts = parts[:1]
			var m map[string]any
			json.Unmarshal(raw, &m)
			m["name"] = parts[0]
			raw, _ = json.Marshal(m)
		}
		rel, _ := filepath.Rel(goldenE2E(), f)
		t.Run(rel, func(t *testing.T) {
			r, err := Preset(parts[0])
			if err != nil {
				t.Fatal(err)
			}
			if len(parts) == 2 {
				kv, err := Preset(parts[1])
				if err != nil {
					t.Fatal(err)
				}
				r = Combine(r, kv)
			}
			got, err := json.Marshal(r)
			if err != nil {
				t.Fatal(err)
			}
			if d := jsonDiff("$", parseJSONNumbers(t, got), parseJSONNumbers(t, raw)); d != "" {
				t.Errorf("preset differs from %s: %s", f, d)
			}
			// The file read back gives the same recipe.
			back, err := ReadRecipeJSON(f)
			if err != nil {
				t.Fatal(err)
			}
			back.Name = r.Name
			again, _ := json.Marshal(back)
			if d := jsonDiff("$", parseJSONNumbers(t, again), parseJSONNumbers(t, got)); d != "" {
				t.Errorf("ReadRecipeJSON(%s) round trip: %s", f, d)
			}
			for _, p := range parts {
				checked[p] = true
			}
		})
	}
	for _, want := range []string{"FP8_DEFAULT_CFG", "FP8_PER_CHANNEL_PER_TOKEN_CFG", "FP8_2D_BLOCKWISE_WEIGHT_ONLY_CFG",
		"INT8_WEIGHT_ONLY_CFG", "INT4_AWQ_CFG", "INT4_BLOCKWISE_WEIGHT_ONLY_CFG", "W4A8_AWQ_BETA_CFG", "NVFP4_DEFAULT_CFG",
		"W4A16_NVFP4_CFG", "MXFP4_DEFAULT_CFG", "MXFP8_DEFAULT_CFG", "FP8_KV_CFG"} {
		if !checked[want] {
			t.Errorf("preset %s not checked against a golden recipe", want)
		}
	}
}
