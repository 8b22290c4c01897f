package parity

import (
	"strings"
	"testing"
)

// TestGoldenArch converts every case of the 20-architecture golden set in each of its
// input forms (data-free, calibration state, saved checkpoint) and compares the
// output with ModelOpt's export, as `quantstream parity testdata/golden-arch` does.
func TestGoldenArch(t *testing.T) {
	m, err := Load("../testdata/golden-arch")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	n, arches := 0, map[string]bool{}
	for _, e := range m.E2E {
		arches[strings.SplitN(strings.TrimPrefix(e.ID, "e2e/"), "-", 2)[0]] = true
		for _, v := range e.Variants() {
			n++
			t.Run(strings.TrimPrefix(e.ID, "e2e/")+"@"+string(v), func(t *testing.T) {
				if err := RunE2E(t.Context(), e, v, t.TempDir()); err != nil {
					t.Fatal(err)
				}
			})
		}
	}
	// 84 cases, 40 of them calibrated with a saved checkpoint: 124 runs, 20 families.
	if n != 124 || len(arches) != 20 {
		t.Fatalf("%d runs of %d families, want 124 of 20", n, len(arches))
	}
}
