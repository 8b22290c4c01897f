package modelopt

import (
	"path/filepath"
	"testing"

	"github.com/quantstream/quantstream/quant"
)

func TestLoadQuantizersJSON(t *testing.T) {
	tab, err := LoadQuantizersJSON(filepath.Join("..", "testdata", "golden", "e2e", "w4a8_awq", "input", "quantizers.json"))
	if err != nil {
		t.Fatal(err)
	}
	seq, ok := tab.Get("model.layers.0.self_attn.q_proj.weight_quantizer")
	if !ok || len(seq.Sequential) != 2 {
		t.Fatalf("q_proj weight quantizer: %+v, want a chain of 2", seq)
	}
	if seq.Sequential[0].NumBits != quant.BitsInt4 || seq.Sequential[1].NumBits != quant.BitsE4M3 {
		t.Errorf("chain bits %v %v", seq.Sequential[0].NumBits, seq.Sequential[1].NumBits)
	}
	if seq.Sequential[0].BlockSizes.Last() != 128 || seq.Sequential[0].BlockSizes.Type != "static" {
		t.Errorf("block sizes %+v", seq.Sequential[0].BlockSizes)
	}
	in, ok := tab.Get("model.layers.0.self_attn.q_proj.input_quantizer")
	if !ok || !in.Enabled || in.NumBits != quant.BitsE4M3 {
		t.Errorf("input quantizer %+v", in)
	}
}
