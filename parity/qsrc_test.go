package parity

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
)

// pendingArch are golden-qsrc cases known to fail with the given difference until a
// fix lands; the test fails as soon as one passes, so that the entry is removed. None
// today: issue 8's data-free fixes (per-channel gate/up rows of experts fused in
// memory, batched-matmul experts kept fused) made the last ones pass.
var pendingArch = map[string]string{}

// TestGoldenQsrc runs every list of the quantized-sources set through convert, as
// `quantstream parity testdata/golden-qsrc` does: the e2e cases (data-free on the
// quantized source, calibration state overlaid on it, the MXFP4 → NVFP4 cast), the
// dequantize cases and the expect_error cases (refused with a recipe and with
// --dequantize).
func TestGoldenQsrc(t *testing.T) {
	m, err := Load("../testdata/golden-qsrc")
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	out := Run(t.Context(), m, Options{Group: "e2e", TempDir: t.TempDir()}, nil)
	if want := len(m.E2E) + len(m.Dequantize) + 2*len(m.ExpectError); len(out) != want || len(m.Dequantize) == 0 || len(m.ExpectError) == 0 {
		t.Fatalf("%d outcomes for %d e2e, %d dequantize and %d expect_error cases", len(out), len(m.E2E), len(m.Dequantize), len(m.ExpectError))
	}
	for _, o := range out {
		pending, isPending := pendingArch[o.ID]
		switch {
		case isPending && o.Err == nil:
			t.Errorf("%s passes now: remove it from pendingArch", o.ID)
		case isPending && !strings.Contains(o.Err.Error(), pending):
			t.Errorf("%s fails differently from what issue 8 explains: %v", o.ID, o.Err)
		case isPending:
			t.Logf("pending issue 8 (branch arch): %s", o.ID)
		case o.Err != nil:
			t.Errorf("%v", o)
		}
	}
}

// TestRunRefusal: an expect_error case fails unless the conversion is refused, with
// a message naming the source's quantization, and writes nothing.
func TestRunRefusal(t *testing.T) {
	m, err := Load("../testdata/golden-qsrc")
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	e := m.ExpectError[0]
	defer SetE2ERunner(ConvertE2E)
	for _, tc := range []struct {
		name   string
		runner E2ERunner
		want   string // "" : the case passes
	}{
		{"refused", func(context.Context, *E2ECase, Variant, string) error {
			return errors.New("convert: the source is quantized (compressed-tensors)")
		}, ""},
		{"converted", func(context.Context, *E2ECase, Variant, string) error { return nil }, "succeeded"},
		{"message without the quantization", func(context.Context, *E2ECase, Variant, string) error {
			return errors.New("no module found")
		}, "does not name"},
		{"output left behind", func(_ context.Context, _ *E2ECase, _ Variant, out string) error {
			os.MkdirAll(out, 0o755)
			return errors.New("compressed-tensors")
		}, "exists"},
	} {
		SetE2ERunner(tc.runner)
		err := RunRefusal(t.Context(), e, VariantCLI, t.TempDir())
		if (tc.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
}
