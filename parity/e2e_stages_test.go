package parity

import (
	"strings"
	"testing"
)

func loadGolden(t *testing.T) *Manifest {
	t.Helper()
	m, err := Load("../testdata/golden")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// TestE2EState converts every calibrated end-to-end case (base weights + quant state
// + quantizers.json) and compares the output directory with ModelOpt's.
func TestE2EState(t *testing.T) {
	m := loadGolden(t)
	n := 0
	for _, e := range m.E2E {
		if e.DataFree {
			continue
		}
		n++
		t.Run(strings.TrimPrefix(e.ID, "e2e/"), func(t *testing.T) {
			if err := RunE2E(t.Context(), e, VariantState, t.TempDir()); err != nil {
				t.Fatal(err)
			}
		})
	}
	if n == 0 {
		t.Fatal("no calibrated e2e cases in the manifest")
	}
}
