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

// TestE2E converts every end-to-end case of the golden set in each of its input
// forms (calibration state, saved ModelOpt checkpoint, data-free recipe) through
// convert.Run and compares the output directory with ModelOpt's.
func TestE2E(t *testing.T) {
	m := loadGolden(t)
	n := 0
	for _, e := range m.E2E {
		for _, v := range e.Variants() {
			n++
			t.Run(strings.TrimPrefix(e.ID, "e2e/")+"@"+string(v), func(t *testing.T) {
				if err := RunE2E(t.Context(), e, v, t.TempDir()); err != nil {
					t.Fatal(err)
				}
			})
		}
	}
	if n < len(m.E2E) {
		t.Fatalf("%d runs for %d cases", n, len(m.E2E))
	}
}
