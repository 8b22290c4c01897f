package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/quantstream/quantstream"
	"github.com/quantstream/quantstream/arrowio"
	"github.com/quantstream/quantstream/convert"
	"github.com/quantstream/quantstream/quant"
)

const tiny = "../../testdata/tiny_llama"

// TestSameAsConvertRun: without kept layers the hand-built pipeline writes exactly
// what convert.Run writes, at any parallelism.
func TestSameAsConvertRun(t *testing.T) {
	dir := t.TempDir()
	want := filepath.Join(dir, "run")
	if _, err := convert.Run(t.Context(), convert.Options{Inputs: []string{tiny}, Out: want, Recipe: "W4A16_NVFP4_CFG"}); err != nil {
		t.Fatal(err)
	}
	for _, workers := range []int{1, 4} {
		got := filepath.Join(dir, "custom", string(rune('0'+workers)))
		os.MkdirAll(filepath.Dir(got), 0o755)
		var report bytes.Buffer
		if err := run(t.Context(), &report, tiny, got, "W4A16_NVFP4_CFG", nil, workers); err != nil {
			t.Fatal(err)
		}
		sameDirs(t, got, want)
	}
}

// TestKeepLayer: a kept layer keeps its weights byte for byte and is excluded in
// hf_quant_config.json; the others are quantized; the report is in layer order.
func TestKeepLayer(t *testing.T) {
	out := filepath.Join(t.TempDir(), "out")
	var report bytes.Buffer
	if err := run(t.Context(), &report, tiny, out, "INT8_WEIGHT_ONLY_CFG", map[int]bool{1: true}, 2); err != nil {
		t.Fatal(err)
	}
	in, err := arrowio.ReadAllTensors(tiny)
	if err != nil {
		t.Fatal(err)
	}
	got, err := arrowio.ReadAllTensors(out)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"model.layers.1.mlp.down_proj.weight", "model.layers.1.self_attn.q_proj.weight"} {
		if !bytes.Equal(got[name].Data, in[name].Data) || got[name].DType != in[name].DType {
			t.Errorf("%s changed in a kept layer", name)
		}
		if _, ok := got[strings.TrimSuffix(name, "weight")+"weight_scale"]; ok {
			t.Errorf("%s has a scale in a kept layer", name)
		}
	}
	if q := got["model.layers.0.mlp.down_proj.weight"]; q.DType.String() != "I8" {
		t.Errorf("layer 0 down_proj is %v, want I8", q.DType)
	}
	hq, err := os.ReadFile(filepath.Join(out, "hf_quant_config.json"))
	if err != nil {
		t.Fatal(err)
	}
	if ex := excluded(hq); strings.Join(ex, ",") != "lm_head,model.embed_tokens,model.layers.1*" {
		t.Errorf("exclude_modules %q", ex)
	}
	r := report.String()
	i0, i1, i2 := strings.Index(r, `layer 0 "`), strings.Index(r, `layer 1 "`), strings.Index(r, `layer -1 ""`)
	if i0 < 0 || i1 < i0 || i2 < i1 {
		t.Errorf("report not in layer order:\n%s", r)
	}
	if !strings.Contains(r, "mlp.down_proj.weight         [128 352]   amax 0.0311279") {
		t.Errorf("report lacks down_proj stats:\n%s", r)
	}
}

// TestKeepCheck: the guard refuses, from headers, a kept layer that would be quantized.
func TestKeepCheck(t *testing.T) {
	k := keepCheck{keep: map[int]bool{1: true}}
	quantized := []quantstream.TensorInfo{
		{Name: "model.layers.1.mlp.down_proj.weight", DType: quant.I8, Shape: []int64{4, 4}},
		{Name: "model.layers.1.mlp.down_proj.weight_scale", DType: quant.BF16, Shape: []int64{4}},
	}
	for _, tc := range []struct {
		name    string
		layer   int
		in      []quantstream.TensorInfo
		wantErr string
	}{
		{"other layer", 0, quantized, ""},
		{"scale", 1, quantized[1:], "weight_scale"},
		{"dtype", 1, quantized[:1], "as I8"},
		{"plain", 1, []quantstream.TensorInfo{{Name: "model.layers.1.mlp.down_proj.weight", DType: quant.BF16, Shape: []int64{4, 4}}}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := k.Plan(quantstream.LayerInfo{Index: tc.layer, Prefix: "model.layers." + strconv.Itoa(tc.layer) + ".", Tensors: tc.in})
			if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)) {
				t.Fatalf("Plan: %v, want error containing %q", err, tc.wantErr)
			}
		})
	}
}

func TestRunErrors(t *testing.T) {
	err := run(t.Context(), &bytes.Buffer{}, tiny, filepath.Join(t.TempDir(), "out"), "NVFP4_DEFAULT_CFG", nil, 1)
	if err == nil || !strings.Contains(err.Error(), "calibration") {
		t.Fatalf("NVFP4_DEFAULT_CFG: %v, want a calibration error", err)
	}
	if _, err := parseLayers("1,x"); err == nil {
		t.Fatal("parseLayers accepted x")
	}
}

func sameDirs(t *testing.T, got, want string) {
	t.Helper()
	ents, err := os.ReadDir(want)
	if err != nil {
		t.Fatal(err)
	}
	gotEnts, err := os.ReadDir(got)
	if err != nil {
		t.Fatal(err)
	}
	if len(gotEnts) != len(ents) {
		t.Fatalf("%s has %d files, %s has %d", got, len(gotEnts), want, len(ents))
	}
	for _, e := range ents {
		w, err := os.ReadFile(filepath.Join(want, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		g, err := os.ReadFile(filepath.Join(got, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(g, w) {
			t.Errorf("%s differs from convert.Run's", e.Name())
		}
	}
}
