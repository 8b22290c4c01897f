package convert

import (
	"encoding/binary"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/quantstream/quantstream/arrowio"
	"github.com/quantstream/quantstream/quant"
)

// TestZeroInputAmax: an FP8 input quantizer whose amax is 0 is exported as ModelOpt
// exports it (export_amax turns 0 into maxbound: input_scale 1.0), and the summary
// says so, naming the buffer. A NaN amax stays refused (a failed calibration).
func TestZeroInputAmax(t *testing.T) {
	golden := filepath.Join("..", "testdata", "golden", "e2e")
	calib := filepath.Join(t.TempDir(), "calib")
	if err := os.CopyFS(calib, os.DirFS(filepath.Join(golden, "fp8", "input"))); err != nil {
		t.Fatal(err)
	}
	const amax = "model.layers.1.mlp.down_proj.input_quantizer._amax"
	setScalar(t, filepath.Join(calib, "quant_state.safetensors"), amax, 0)
	out := filepath.Join(t.TempDir(), "out")
	s, err := Run(t.Context(), Options{Inputs: []string{filepath.Join(golden, "base_llama"), calib}, Out: out})
	if err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(s.Warnings, func(w string) bool { return strings.Contains(w, amax+" is 0") })
	if i < 0 || !strings.Contains(s.Warnings[i], "as ModelOpt's export_amax does") {
		t.Fatalf("warnings %q: want one naming %s", s.Warnings, amax)
	}
	got, err := arrowio.ReadAllTensors(out)
	if err != nil {
		t.Fatal(err)
	}
	v, err := quant.Float32s(got["model.layers.1.mlp.down_proj.input_scale"])
	if err != nil || len(v) != 1 || v[0] != 1 {
		t.Fatalf("input_scale %v (%v), want 1.0 (maxbound/maxbound)", v, err)
	}

	setScalar(t, filepath.Join(calib, "quant_state.safetensors"), amax, float32(math.NaN()))
	if _, err := Run(t.Context(), Options{Inputs: []string{filepath.Join(golden, "base_llama"), calib}, Out: filepath.Join(t.TempDir(), "nan")}); err == nil || !strings.Contains(err.Error(), amax) {
		t.Fatalf("a NaN amax: %v, want a refusal naming it", err)
	}
}

// setScalar rewrites the F32 or BF16 scalar tensor name of a safetensors file in
// place (v truncated to BF16: exact for 0 and NaN).
func setScalar(t *testing.T, path, name string, v float32) {
	t.Helper()
	f, err := arrowio.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	h, ok := f.Header.Lookup(name)
	off := f.Header.DataOff
	f.Close()
	if !ok || (h.DType != quant.F32 && h.DType != quant.BF16) || h.Size() > 4 {
		t.Fatalf("%s: no F32 or BF16 scalar %s (%v)", path, name, h)
	}
	fh, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	var b [4]byte
	binary.LittleEndian.PutUint32(b[:], math.Float32bits(v))
	if h.DType == quant.BF16 {
		b[0], b[1] = b[2], b[3]
	}
	if _, err := fh.WriteAt(b[:h.Size()], off+h.Begin); err != nil {
		t.Fatal(err)
	}
}
