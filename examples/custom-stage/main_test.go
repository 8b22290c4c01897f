package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/quantstream/quantstream"
	"github.com/quantstream/quantstream/arrowio"
	"github.com/quantstream/quantstream/quant"
)

const tiny = "../../testdata/tiny_llama"

// TestKeepLayer: the example writes a whole exported checkpoint (the side files
// convert writes, no more); a kept layer keeps its weights byte for byte and is
// excluded in hf_quant_config.json; the others are quantized; the report is in
// layer order.
func TestKeepLayer(t *testing.T) {
	out := filepath.Join(t.TempDir(), "out")
	var report bytes.Buffer
	if err := run(t.Context(), &report, tiny, out, "INT8_WEIGHT_ONLY_CFG", map[int]bool{1: true}, 2); err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir(out)
	if err != nil {
		t.Fatal(err)
	}
	var files []string
	for _, e := range ents {
		files = append(files, e.Name())
	}
	if got := strings.Join(files, " "); got != "config.json generation_config.json hf_quant_config.json model.safetensors quantstream_provenance.json tokenizer.json" {
		t.Errorf("output files: %s", got)
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

// excluded reads exclude_modules back from hf_quant_config.json.
func excluded(hq []byte) []string {
	var c struct {
		Quantization struct {
			ExcludeModules []string `json:"exclude_modules"`
		} `json:"quantization"`
	}
	if json.Unmarshal(hq, &c) != nil {
		return nil
	}
	return c.Quantization.ExcludeModules
}
