package modelopt

import (
	"encoding/json"
	"os"
	"slices"
	"testing"

	"github.com/quantstream/quantstream/arrowio"
	"github.com/quantstream/quantstream/quant"
)

// baseModel reads a golden base checkpoint's config.json and tensor shapes.
func baseModel(t *testing.T, base string) (*Model, map[string]quant.Tensor) {
	t.Helper()
	cfg, err := os.ReadFile(goldenE2E(base, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	tensors, err := arrowio.ReadAllTensors(goldenE2E(base))
	if err != nil {
		t.Fatal(err)
	}
	shapes := map[string][]int64{}
	for n, tt := range tensors {
		shapes[n] = tt.Shape
	}
	m, err := NewModel(cfg, shapes)
	if err != nil {
		t.Fatal(err)
	}
	return m, tensors
}

type e2eCase struct {
	ID         string `json:"id"`
	Recipe     string `json:"recipe"`
	InputDir   string `json:"input_dir"`
	DataFree   bool   `json:"data_free"`
	Quantizers string `json:"quantizers_file"`
	RecipeFile string `json:"recipe_file"`
}

func e2eCases(t *testing.T) []e2eCase {
	t.Helper()
	b, err := os.ReadFile(goldenE2E("..", "manifest.json"))
	if err != nil {
		t.Fatal(err)
	}
	var m struct {
		E2E []e2eCase `json:"e2e"`
	}
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m.E2E
}

// compareTable checks a derived table against a golden quantizers.json: same key set,
// same attributes (class included), and the same amax buffer shape for every quantizer
// the derivation calibrates.
func compareTable(t *testing.T, q *Quantized, qpath string) {
	t.Helper()
	want, err := LoadQuantizersJSON(qpath)
	if err != nil {
		t.Fatal(err)
	}
	raw := rawQuantizers(t, qpath)
	if g, w := q.Table.Names(), want.Names(); !slices.Equal(g, w) {
		t.Fatalf("quantizer names differ:\n got %v\nwant %v", g, w)
	}
	for _, name := range want.Names() {
		if d := quantizerDiff(q.Table[name], want[name], true); d != "" {
			t.Errorf("%s: %s", name, d)
		}
		got, has := q.AmaxShapes[name]
		if w := raw[name].AmaxShape; has != (w != nil) || !slices.Equal(got, w) {
			t.Errorf("%s: amax shape %v (%v), want %v", name, got, has, w)
		}
	}
}

func TestApplyPresetsMatchQuantizersJSON(t *testing.T) {
	n := 0
	for _, c := range e2eCases(t) {
		base := "base_llama"
		if c.DataFree && c.InputDir == "e2e/base_moe" || !c.DataFree && len(c.ID) > 8 && c.ID[:8] == "e2e/moe_" {
			base = "base_moe"
		}
		qpath := goldenE2E("..", c.Quantizers)
		rpath := goldenE2E("..", c.RecipeFile)
		if !c.DataFree {
			qpath = goldenE2E("..", c.InputDir, "quantizers.json")
			rpath = goldenE2E("..", c.InputDir, "quant_recipe.json")
		}
		t.Run(c.ID, func(t *testing.T) {
			m, _ := baseModel(t, base)
			r, err := ReadRecipeJSON(rpath)
			if err != nil {
				t.Fatal(err)
			}
			q, err := Apply(r, m, ApplyOptions{Forwarded: !c.DataFree})
			if err != nil {
				t.Fatal(err)
			}
			compareTable(t, q, qpath)
			n++
		})
	}
	if n < 20 {
		t.Errorf("only %d cases compared", n)
	}
}
