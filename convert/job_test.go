package convert

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/quantstream/quantstream"
	"github.com/quantstream/quantstream/arrowio"
	"github.com/quantstream/quantstream/modelopt"
	"github.com/quantstream/quantstream/quant"
)

// spy is a pass-through stage that records the dtype of one tensor in every layer
// it plans and processes.
type spy struct {
	name, tensor string
	mu           sync.Mutex
	planned      []quant.DType
	seen         []quant.DType
}

func (s *spy) Name() string { return s.name }

func (s *spy) Plan(in quantstream.LayerInfo) ([]quantstream.TensorInfo, error) {
	for _, t := range in.Tensors {
		if t.Name == s.tensor {
			s.mu.Lock()
			s.planned = append(s.planned, t.DType)
			s.mu.Unlock()
		}
	}
	return in.Tensors, nil
}

func (s *spy) Process(_ context.Context, l *quantstream.Layer) (*quantstream.Layer, error) {
	if t, ok := l.Lookup(s.tensor); ok {
		s.mu.Lock()
		s.seen = append(s.seen, t.DType)
		s.mu.Unlock()
	}
	return l, nil
}

// TestJobStagesGoWhereAsked: stages inserted before and after the export see the
// layer before and after quantization, and the output is what convert.Run writes
// (they pass layers through).
func TestJobStagesGoWhereAsked(t *testing.T) {
	dir := t.TempDir()
	want := filepath.Join(dir, "run")
	if _, err := Run(t.Context(), Options{Inputs: []string{tinyLlama}, Out: want, Recipe: "W4A16_NVFP4_CFG"}); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "job")
	j, err := Prepare(t.Context(), Options{Inputs: []string{tinyLlama}, Out: out, Recipe: "W4A16_NVFP4_CFG", Workers: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	const w = "model.layers.0.mlp.down_proj.weight"
	first, before, after, last := &spy{name: "first", tensor: w}, &spy{name: "before", tensor: w}, &spy{name: "after", tensor: w}, &spy{name: "last", tensor: w}
	for _, err := range []error{
		j.InsertBefore("export", before),
		j.InsertAfter("export", after),
		j.InsertBefore("calibrate", first),
		j.Append(last),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	var names []string
	for _, s := range j.Stages() {
		names = append(names, s.Name())
	}
	if got := strings.Join(names, " "); got != "first calibrate before export after last" {
		t.Fatalf("chain %q", got)
	}
	if err := j.InsertAfter("nope", &spy{name: "x"}); err == nil || !strings.Contains(err.Error(), `"nope"`) {
		t.Fatalf("unknown stage: %v", err)
	}
	if _, err := j.Plan(); err != nil {
		t.Fatal(err)
	}
	if _, err := j.Run(t.Context()); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		s    *spy
		want quant.DType
	}{{first, quant.BF16}, {before, quant.BF16}, {after, quant.U8}, {last, quant.U8}} {
		if len(tc.s.seen) != 1 || tc.s.seen[0] != tc.want || !slices.Contains(tc.s.planned, tc.want) {
			t.Errorf("stage %s saw %v (planned %v), want %v", tc.s.name, tc.s.seen, tc.s.planned, tc.want)
		}
	}
	// The same bytes; the provenance differs, and says why: the chain.
	sameDir(t, out, want, arrowio.ProvenanceName)
	p, err := arrowio.ReadProvenance(out)
	if err != nil || p.Conversion["stages"] != "first,calibrate,before,export,after,last" || p.Conversion["caller_stages"] != "4" {
		t.Errorf("provenance of a chain with the caller's stages: %+v, %v", p, err)
	}
	if _, err := j.Run(t.Context()); !errors.Is(err, ErrJobDone) {
		t.Errorf("a second Run: %v", err)
	}
	if err := j.Append(last); !errors.Is(err, ErrJobDone) {
		t.Errorf("Append after Run: %v", err)
	}
}

// TestJobGuards: what Run refuses, Prepare refuses, before reading anything.
func TestJobGuards(t *testing.T) {
	if _, err := Prepare(t.Context(), Options{Inputs: []string{tinyLlama}, Out: filepath.Join(tinyLlama, "out")}); !errors.Is(err, ErrOutputOverlapsInput) {
		t.Errorf("output inside the input: %v", err)
	}
	if _, err := Prepare(t.Context(), Options{Inputs: []string{tinyLlama}, Recipe: "FP8_DEFAULT_CFG"}); err == nil || !strings.Contains(err.Error(), "calibration") {
		t.Errorf("a recipe that needs calibration: %v", err)
	}
	off := false
	if _, err := Prepare(t.Context(), Options{Inputs: []string{tinyLlama}, Rules: []modelopt.Rule{{QuantizerName: "*", Enable: &off}}}); err == nil {
		t.Error("rules without a recipe accepted")
	}
	j, err := Prepare(t.Context(), Options{Inputs: []string{tinyLlama}})
	if err != nil {
		t.Fatal(err)
	}
	if j.Mode() != "passthrough" || len(j.Stages()) != 0 {
		t.Errorf("mode %q, %d stages", j.Mode(), len(j.Stages()))
	}
	if _, err := j.Run(t.Context()); !errors.Is(err, ErrNoOutput) {
		t.Errorf("Run without Out: %v", err)
	}
	j.Close()
	if _, err := j.Plan(); !errors.Is(err, ErrJobDone) {
		t.Errorf("Plan after Close: %v", err)
	}
}

// sameDir: got holds the files of want with the same bytes, except those of skip,
// which must be there.
func sameDir(t *testing.T, got, want string, skip ...string) {
	t.Helper()
	ents, err := os.ReadDir(want)
	if err != nil {
		t.Fatal(err)
	}
	gotEnts, err := os.ReadDir(got)
	if err != nil || len(gotEnts) != len(ents) {
		t.Fatalf("%s: %d files (%v), %s has %d", got, len(gotEnts), err, want, len(ents))
	}
	for _, e := range ents {
		if slices.Contains(skip, e.Name()) {
			continue
		}
		w, _ := os.ReadFile(filepath.Join(want, e.Name()))
		g, err := os.ReadFile(filepath.Join(got, e.Name()))
		if err != nil || string(g) != string(w) {
			t.Errorf("%s differs: %v", e.Name(), err)
		}
	}
}
