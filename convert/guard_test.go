package convert

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestOutputMustNotOverlapInput(t *testing.T) {
	root := t.TempDir()
	in := filepath.Join(root, "model")
	calib := filepath.Join(in, "calib")
	if err := os.MkdirAll(calib, 0o755); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(root, "link")
	if err := os.Symlink(in, link); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		inputs []string
		out    string
		bad    bool
	}{
		{"same dir", []string{in}, in, true},
		{"output inside input", []string{in}, filepath.Join(in, "q"), true},
		{"input inside output", []string{calib}, in, true},
		{"through a symlink", []string{in}, filepath.Join(link, "new"), true},
		{"relative spelling", []string{in}, in + "/./calib/../", true},
		{"sibling", []string{in}, filepath.Join(root, "model-q"), false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := checkOutputApart(tc.inputs, tc.out)
			if got := errors.Is(err, ErrOutputOverlapsInput); got != tc.bad {
				t.Fatalf("checkOutputApart(%v, %s) = %v", tc.inputs, tc.out, err)
			}
		})
	}
	// The whole conversion refuses before touching anything.
	if _, err := Run(t.Context(), Options{Inputs: []string{tinyLlama}, Out: filepath.Join(tinyLlama, "out")}); !errors.Is(err, ErrOutputOverlapsInput) {
		t.Fatalf("Run into its own input: %v", err)
	}
}
