package convert

import (
	"path/filepath"
	"testing"
)

// TestRowExportIndependentOfWorkers extends TestExportOutputIndependentOfWorkers to
// every format the export quantizes by row ranges, MoE experts included: 1 worker
// with the default pieces and 4 workers with pieces of a few rows give the same
// bytes.
func TestRowExportIndependentOfWorkers(t *testing.T) {
	golden := filepath.Join("..", "testdata", "golden", "e2e")
	llama, moe := filepath.Join(golden, "base_llama"), filepath.Join(golden, "base_moe")
	state := func(base, c string) Options {
		return Options{Inputs: []string{base, filepath.Join(golden, c, "input")}}
	}
	cases := []struct {
		name string
		opt  Options
	}{
		{"int4_awq", state(llama, "int4_awq")},
		{"w4a8_awq", state(llama, "w4a8_awq")},
		{"fp8_pc_pt", state(llama, "fp8_pc_pt")},
		{"fp8_pb_wo", state(llama, "fp8_pb_wo")},
		{"mxfp8", state(llama, "mxfp8")},
		{"nvfp4_awq", state(llama, "nvfp4_awq_synth")},
		{"moe_nvfp4", state(moe, "moe_nvfp4")},
		{"moe_fp8", state(moe, "moe_fp8")},
		{"datafree_int8_wo", Options{Inputs: []string{tinyLlama}, Recipe: "INT8_WEIGHT_ONLY_CFG"}},
		{"datafree_mxfp4", Options{Inputs: []string{tinyLlama}, Recipe: "MXFP4_DEFAULT_CFG"}},
		{"datafree_moe_w4a16_nvfp4", Options{Inputs: []string{moe}, Recipe: "W4A16_NVFP4_CFG"}},
		{"datafree_moe_mxfp4", Options{Inputs: []string{moe}, Recipe: "MXFP4_DEFAULT_CFG"}},
		{"datafree_int4", Options{Inputs: []string{llama}, Recipe: "INT4_BLOCKWISE_WEIGHT_ONLY_CFG"}},
		{"datafree_moe_int8_wo", Options{Inputs: []string{moe}, Recipe: "INT8_WEIGHT_ONLY_CFG"}},
		{"datafree_moe_fp8_pc_pt", Options{Inputs: []string{moe}, Recipe: "FP8_PER_CHANNEL_PER_TOKEN_CFG"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) { assertWorkersIndependent(t, tc.opt) })
	}
}
