package modelopt

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func writeFiles(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := t.TempDir()
	for name, body := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func recipeJSON(t *testing.T, r *Recipe) any {
	t.Helper()
	b, err := json.Marshal(r)
	if err != nil {
		t.Fatal(err)
	}
	return parseJSONNumbers(t, b)
}

func TestReadRecipeYAMLBuiltinImports(t *testing.T) {
	// The general/ptq layout: metadata, imports of built-in configs, rules under quantize.
	dir := writeFiles(t, map[string]string{"nvfp4_kv.yaml": `
metadata:
  recipe_type: ptq
imports:
  base_disable_all: configs/ptq/units/base_disable_all
  default_disabled_quantizers: configs/ptq/units/default_disabled_quantizers
  w4a4_nvfp4_nvfp4: configs/ptq/units/w4a4_nvfp4_nvfp4
  kv_fp8: configs/ptq/units/kv_fp8
quantize:
  algorithm: max
  quant_cfg:
    - $import: base_disable_all
    - $import: w4a4_nvfp4_nvfp4
    - $import: default_disabled_quantizers
    - $import: kv_fp8
`})
	got, err := ReadRecipeYAML(filepath.Join(dir, "nvfp4_kv.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	want, _ := ResolveRecipe("NVFP4_DEFAULT_CFG", "FP8_KV_CFG")
	got.Name = want.Name
	if d := jsonDiff("$", recipeJSON(t, got), recipeJSON(t, want)); d != "" {
		t.Errorf("YAML recipe differs from the presets: %s", d)
	}
}

func TestReadRecipeYAMLLocalImports(t *testing.T) {
	dir := writeFiles(t, map[string]string{
		"units/mine.yaml": `
imports:
  nv: ../num/nv
---
  - quantizer_name: '*mlp*weight_quantizer'
    cfg:
      $import: nv
  - quantizer_name: '*'
    parent_class: nn.Embedding
    enable: false
`,
		"num/nv.yml": `
num_bits: e2m1
block_sizes:
  -1: 16
  type: dynamic
  scale_bits: e4m3
`,
		"recipe.yaml": `
imports:
  mine: units/mine
  fp8: configs/numerics/fp8
algorithm:
quant_cfg:
  - quantizer_name: '*'
    enable: false
  - quantizer_name: '*weight_quantizer'
    cfg:
      $import: fp8
      axis: 0
  - $import: mine
  - quantizer_name: '*q_proj*'
    cfg:
      - num_bits: 4
        block_sizes: {-1: 128, type: static}
      - num_bits: [4, 3]
`})
	r, err := ReadRecipeYAML(filepath.Join(dir, "recipe.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	want := `{"name": "recipe", "config": {"quant_cfg": [
	  {"quantizer_name": "*", "enable": false},
	  {"quantizer_name": "*weight_quantizer", "cfg": {"num_bits": [4, 3], "axis": 0}},
	  {"quantizer_name": "*mlp*weight_quantizer", "cfg": {"num_bits": [2, 1], "block_sizes": {"-1": 16, "type": "dynamic", "scale_bits": [4, 3]}}},
	  {"quantizer_name": "*", "parent_class": "nn.Embedding", "enable": false},
	  {"quantizer_name": "*q_proj*", "cfg": [{"num_bits": 4, "block_sizes": {"-1": 128, "type": "static"}}, {"num_bits": [4, 3]}]}
	], "algorithm": null}}`
	if d := jsonDiff("$", recipeJSON(t, r), parseJSONNumbers(t, []byte(want))); d != "" {
		t.Errorf("resolved recipe: %s", d)
	}
}

func TestReadRecipeYAMLErrors(t *testing.T) {
	dir := writeFiles(t, map[string]string{
		"unknown.yaml":   "quant_cfg:\n  - $import: nothing\n",
		"badimport.yaml": "imports:\n  x: configs/numerics/nope\nquant_cfg: []\n",
		"a.yaml":         "imports:\n  b: b\nquant_cfg:\n  - $import: b\n",
		"b.yaml":         "imports:\n  a: a\n---\n  - $import: a\n",
		"bits.yaml":      "quant_cfg:\n  - quantizer_name: '*'\n    cfg: {num_bits: fp9}\n",
		"noname.yaml":    "quant_cfg:\n  - enable: false\n",
		"attr.yaml":      "quant_cfg:\n  - quantizer_name: '*'\n    cfg: {num_bitz: 4}\n",
	})
	for name, text := range map[string]string{
		"unknown.yaml": "unknown $import", "badimport.yaml": "neither a file nor a built-in",
		"a.yaml": "nested deeper", "bits.yaml": "num_bits", "noname.yaml": "without quantizer_name",
		"attr.yaml": "num_bitz",
	} {
		_, err := ReadRecipeYAML(filepath.Join(dir, name))
		if !errors.Is(err, ErrRecipe) || !strings.Contains(err.Error(), text) {
			t.Errorf("%s: err = %v, want ErrRecipe mentioning %q", name, err, text)
		}
	}
}

// TestRecipeUnknownKeys: a key no recipe form has is refused, naming it and the key
// it most likely misspells, as ModelOpt's configs (extra="forbid") refuse it; it is
// never ignored (a misspelled algorithm would read as no calibration).
func TestRecipeUnknownKeys(t *testing.T) {
	const rule = "\n    - quantizer_name: '*weight_quantizer'\n      cfg: {num_bits: e2m1, block_sizes: {-1: 16, type: dynamic, scale_bits: e4m3}}\n"
	for _, tc := range []struct {
		name, yaml string
		want       string // "" when the recipe is accepted
	}{
		{"misspelled algorithm", "quantize:\n  algoritm: max\n  quant_cfg:" + rule, `unknown recipe key "quantize.algoritm": did you mean "quantize.algorithm"?`},
		{"misspelled section", "quantise:\n  algorithm: max\n  quant_cfg:" + rule, `unknown recipe key "quantise": did you mean "quantize"?`},
		{"misspelled top-level key", "algorithm: max\nquant_cgf:" + rule, `unknown recipe key "quant_cgf": did you mean "quant_cfg"?`},
		{"metadata", "metadata:\n  recipe_type: ptq\n  descripton: x\nquantize:\n  algorithm: max\n  quant_cfg:" + rule, `unknown recipe key "metadata.descripton": did you mean "metadata.description"?`},
		{"not a PTQ recipe", "metadata:\n  recipe_type: speculative_eagle\nquantize:\n  algorithm: max\n  quant_cfg:" + rule, `only PTQ recipes`},
		{"far from any key", "quantize:\n  algorithm: max\n  frobnicate: 1\n  quant_cfg:" + rule, `unknown recipe key "quantize.frobnicate" (known: algorithm, effective_bits, quant_cfg)`},
		{"misspelled attribute", "algorithm: max\nquant_cfg:\n  - quantizer_name: '*weight_quantizer'\n    cfg: {num_bit: 8}\n", `unknown quantizer attribute "num_bit": did you mean "num_bits"?`},
		{"misspelled rule key", "algorithm: max\nquant_cfg:\n  - quantizer_nam: '*weight_quantizer'\n    enable: false\n", `unknown rule key "quantizer_nam": did you mean "quantizer_name"?`},
		{"general form", "metadata:\n  recipe_type: ptq\n  description: x\nquantize:\n  algorithm: max\n  effective_bits: 4.5\n  quant_cfg:" + rule, ""},
		{"bare form", "algorithm: max\nquant_cfg:" + rule, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := writeFiles(t, map[string]string{"r.yaml": tc.yaml})
			_, err := ReadRecipeYAML(filepath.Join(dir, "r.yaml"))
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				return
			}
			if !errors.Is(err, ErrRecipe) || !strings.Contains(err.Error(), tc.want) || strings.Count(err.Error(), "bad recipe") != 1 {
				t.Fatalf("err = %v, want ErrRecipe once with %q", err, tc.want)
			}
		})
	}
}
