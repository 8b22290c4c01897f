package parity

import (
	"path/filepath"
	"testing"
)

// goldenDir is the golden set committed with the repository.
var goldenDir = filepath.Join("..", "testdata", "golden")

// intRunFunctions runs every manifest case whose function is in fns (and, when
// formats is non-empty, whose format is in it) and fails on each failing case. It
// fails when no case matched, so a renamed function cannot pass silently.
func intRunFunctions(t *testing.T, fns []string, formats []string) {
	t.Helper()
	m, err := Load(goldenDir)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	want := map[string]bool{}
	for _, f := range fns {
		want[f] = true
	}
	fmtOK := map[string]bool{}
	for _, f := range formats {
		fmtOK[f] = true
	}
	counts := map[string][2]int{}
	for _, c := range m.Cases {
		if !want[c.Function] || (len(formats) > 0 && !fmtOK[c.Format]) {
			continue
		}
		n := counts[c.Function]
		if err := RunCase(c); err != nil {
			n[1]++
			t.Errorf("FAIL %s: %v", c.ID, err)
		} else {
			n[0]++
		}
		counts[c.Function] = n
	}
	for _, f := range fns {
		n := counts[f]
		if n[0]+n[1] == 0 {
			t.Errorf("%s: no cases in the manifest", f)
		}
		t.Logf("%s: %d passed, %d failed", f, n[0], n[1])
	}
}

func TestUnitIntGolden(t *testing.T) {
	intRunFunctions(t, []string{
		"quant_utils.get_scaling_factor_from_weight",
		"quant_utils.pack_int4_in_uint8",
		"quant_utils.resmooth_and_get_scale",
		"quant_utils.maybe_transpose_expert_weight_dimensions",
		"quant_utils.from_quantized_weight",
	}, nil)
}

func TestUnitIntToQuantizedWeightGolden(t *testing.T) {
	intRunFunctions(t, []string{"quant_utils.to_quantized_weight"}, []string{"int8_sq", "int8_wo", "int4_awq", "w4a8_awq"})
}

func TestModulesQuantGolden(t *testing.T) {
	intRunFunctions(t, []string{
		"quant_utils.get_*_scaling_factor",
		"unified_export_hf._export_quantized_weight",
		"quant_utils.get_kv_cache_scaling_factor",
	}, nil)
}
