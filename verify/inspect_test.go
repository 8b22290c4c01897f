package verify_test

import (
	"bytes"
	"strings"
	"testing"

	"github.com/quantstream/quantstream/verify"
)

func TestInspect(t *testing.T) {
	inv, err := verify.Inspect("../testdata/golden/e2e/moe_nvfp4/expected")
	if err != nil {
		t.Fatal(err)
	}
	if q := inv.QuantConfig; q == nil || q.QuantAlgo != "NVFP4" || q.GroupSize != 16 || q.Source != "hf_quant_config.json" {
		t.Errorf("quantization = %+v", inv.QuantConfig)
	}
	// 1 layer: q/k/v/o + 4 experts × 3 projections.
	if len(inv.Formats) != 1 || inv.Formats[0].Format != "nvfp4" || inv.Formats[0].Modules != 16 {
		t.Errorf("formats = %+v, want 16 nvfp4 modules", inv.Formats)
	}
	var patterns []string
	for _, p := range inv.Unquantized {
		patterns = append(patterns, p.Pattern)
	}
	if got := strings.Join(patterns, " "); got != "lm_head model.layers.*.mlp.gate" {
		t.Errorf("unquantized patterns = %q", got)
	}
	dtypes := map[string]bool{}
	for _, d := range inv.DTypes {
		dtypes[d.DType] = true
	}
	for _, d := range []string{"BF16", "F32", "F8_E4M3", "U8"} {
		if !dtypes[d] {
			t.Errorf("no %s in %+v", d, inv.DTypes)
		}
	}
	if len(inv.Shards) != 1 || inv.Shards[0].Name != "model.safetensors" || len(inv.Problems) != 0 {
		t.Errorf("shards %+v, problems %v", inv.Shards, inv.Problems)
	}
	var b bytes.Buffer
	inv.WriteText(&b)
	for _, want := range []string{"quant_algo NVFP4", "nvfp4", "model.layers.*.mlp.gate", "model.safetensors"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("text lacks %q:\n%s", want, b.String())
		}
	}
}
