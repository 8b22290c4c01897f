package parity

import (
	"path/filepath"
	"testing"
)

// flFunctions are the unit-group functions whose handlers live in unit_float.go.
var flFunctions = []string{
	"FP8QTensor.quantize",
	"FP8QTensor.dequantize",
	"MXFP4QTensor.quantize",
	"MXFP8QTensor.get_weights_scaling_factor",
	"MXFP8QTensor.quantize",
	"NVFP4QTensor._cast_fp4",
	"NVFP4QTensor.get_weights_scaling_factor",
	"NVFP4QTensor.get_weights_scaling_factor_from_quantizer",
	"NVFP4QTensor.quantize",
	"nvfp4_tensor._cast_per_block_scale_to_fp8",
	"export_flow.fp8_pc_pt_bmm_experts",
}

// flToQuantizedFormats are the to_quantized_weight formats handled here.
var flToQuantizedFormats = map[string]bool{
	"fp8": true, "fp8_pc_pt": true, "fp8_pb_wo": true, "fp8_pb_real": true, "mxfp8": true,
	"nvfp4": true, "nvfp4_awq": true, "nvfp4_svdquant": true, "w4a16_nvfp4": true,
	"w4a8_nvfp4_fp8": true, "mxfp4": true, "w4a8_mxfp4_fp8": true,
}

// TestUnitFloatGolden runs every golden case of the float-format functions and
// fails once per failing case. A function with no case at all fails too, so a
// renamed manifest function cannot pass silently.
func TestUnitFloatGolden(t *testing.T) {
	m, err := Load(filepath.Join("..", "testdata", "golden"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	mine := map[string]bool{}
	for _, f := range flFunctions {
		mine[f] = true
	}
	const tqw = "quant_utils.to_quantized_weight"
	counts := map[string][2]int{}
	for _, c := range m.Cases {
		key := c.Function
		switch {
		case mine[c.Function]:
		case c.Function == tqw && flToQuantizedFormats[c.Format]:
			key = tqw + "/" + c.Format
		default:
			continue
		}
		n := counts[key]
		if err := RunCase(c); err != nil {
			n[1]++
			t.Errorf("FAIL %s: %v", c.ID, err)
		} else {
			n[0]++
		}
		counts[key] = n
	}
	for _, f := range flFunctions {
		if n := counts[f]; n[0]+n[1] == 0 {
			t.Errorf("%s: no cases in the manifest", f)
		}
	}
	for k, n := range counts {
		t.Logf("%s: %d passed, %d failed", k, n[0], n[1])
	}
}
