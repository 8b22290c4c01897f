package convert

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/quantstream/quantstream"
	"github.com/quantstream/quantstream/arrowio"
	"github.com/quantstream/quantstream/modelopt"
	"github.com/quantstream/quantstream/quant"
)

// shardedTiny is the tiny Llama converted into 5 shards of at most 150 kB.
func shardedTiny(out string) Options {
	return Options{Inputs: []string{tinyLlama}, Out: out, Recipe: "W4A16_NVFP4_CFG", MaxShardSize: 150_000}
}

func readTree(t *testing.T, root string) map[string][]byte {
	t.Helper()
	files := map[string][]byte{}
	err := filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(root, p)
		files[rel], err = os.ReadFile(p)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

// sameTree: got holds exactly want's files, byte for byte.
func sameTree(t *testing.T, got, want string) {
	t.Helper()
	g, w := readTree(t, got), readTree(t, want)
	if len(w) == 0 {
		t.Fatalf("%s is empty", want)
	}
	for name, wb := range w {
		if gb, ok := g[name]; !ok || !bytes.Equal(gb, wb) {
			t.Errorf("%s: %s differs from %s (present: %v)", got, name, want, ok)
		}
	}
	for name := range g {
		if _, ok := w[name]; !ok {
			t.Errorf("%s: %s is not in %s", got, name, want)
		}
	}
}

// aloneBeside: nothing is beside out but out (no work directory, no lock).
func aloneBeside(t *testing.T, out string) {
	t.Helper()
	ents, _ := os.ReadDir(filepath.Dir(out))
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if !slices.Equal(names, []string{filepath.Base(out)}) {
		t.Errorf("beside %s: %v", out, names)
	}
}

func reference(t *testing.T, opt func(out string) Options) string {
	t.Helper()
	ref := filepath.Join(t.TempDir(), "ref")
	s, err := Run(t.Context(), opt(ref))
	if err != nil {
		t.Fatal(err)
	}
	if s.Shards < 4 || s.ShardsWritten != s.Shards || s.ShardsKept != 0 {
		t.Fatalf("reference: %+v", s)
	}
	return ref
}

// TestResumeAfterInterruption interrupts a conversion after k shards are complete,
// then runs it again: the k shards are kept, the rest written, reading less input,
// and the output is that of a run never interrupted.
func TestResumeAfterInterruption(t *testing.T) {
	ref := reference(t, shardedTiny)
	full, err := os.ReadFile(filepath.Join(ref, arrowio.ProvenanceName))
	if err != nil {
		t.Fatal(err)
	}
	for k := 1; k <= 3; k++ {
		out := filepath.Join(t.TempDir(), "out")
		ctx, cancel := context.WithCancel(t.Context())
		var n atomic.Int32
		opt := shardedTiny(out)
		opt.Workers = 1
		opt.OnShardDone = func(string) {
			if int(n.Add(1)) == k {
				cancel()
			}
		}
		_, err := Run(ctx, opt)
		cancel()
		var ie *IncompleteError
		if !errors.As(err, &ie) || !errors.Is(err, context.Canceled) || ie.Kept < k || ie.WorkDir != out+arrowio.PartialSuffix {
			t.Fatalf("k=%d: interrupted run: %v, want an IncompleteError keeping at least %d shards", k, err, k)
		}
		if _, err := os.Stat(out); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("k=%d: output published by an interrupted run", k)
		}

		opt.OnShardDone = nil
		s, err := Run(t.Context(), opt)
		if err != nil {
			t.Fatal(err)
		}
		if s.ShardsKept != ie.Kept || s.ShardsWritten != s.Shards-ie.Kept || s.BytesIn >= 1369856 {
			t.Errorf("k=%d: rerun %+v: want %d shards kept and less than the whole input read", k, s, ie.Kept)
		}
		sameTree(t, out, ref)
		aloneBeside(t, out)
		if p, _ := os.ReadFile(filepath.Join(out, arrowio.ProvenanceName)); !bytes.Equal(p, full) {
			t.Errorf("k=%d: provenance differs from the uninterrupted run's", k)
		}
	}
}

// TestUpToDate: a rerun of a complete conversion does nothing; Overwrite redoes it;
// another conversion into it is refused as before.
func TestUpToDate(t *testing.T) {
	out := filepath.Join(t.TempDir(), "out")
	if _, err := Run(t.Context(), shardedTiny(out)); err != nil {
		t.Fatal(err)
	}
	before, _ := os.Stat(filepath.Join(out, "model-00001-of-00005.safetensors"))
	s, err := Run(t.Context(), shardedTiny(out))
	if err != nil || !s.UpToDate || s.ShardsWritten != 0 || s.BytesIn != 0 {
		t.Fatalf("rerun: %+v, %v: want UpToDate", s, err)
	}
	after, _ := os.Stat(filepath.Join(out, "model-00001-of-00005.safetensors"))
	if !os.SameFile(before, after) || !before.ModTime().Equal(after.ModTime()) {
		t.Error("an up-to-date rerun touched the output")
	}
	opt := shardedTiny(out)
	opt.Overwrite = true
	if s, err := Run(t.Context(), opt); err != nil || s.UpToDate || s.ShardsWritten != s.Shards {
		t.Fatalf("overwrite: %+v, %v", s, err)
	}
	opt = shardedTiny(out)
	opt.Recipe = "INT8_WEIGHT_ONLY_CFG"
	if _, err := Run(t.Context(), opt); !errors.Is(err, arrowio.ErrExists) {
		t.Fatalf("another conversion into a complete output: %v, want ErrExists", err)
	}
	aloneBeside(t, out)
}

// TestSharesMergeToSingleRun: shares 0..3 of 4 in any order, one of them twice,
// then Merge: the output of one process, byte for byte.
func TestSharesMergeToSingleRun(t *testing.T) {
	ref := reference(t, shardedTiny)
	out := filepath.Join(t.TempDir(), "out")
	written := 0
	for _, i := range []int{2, 0, 3, 0, 1} {
		opt := shardedTiny(out)
		opt.Share = arrowio.Share{Index: i, Count: 4}
		s, err := Run(t.Context(), opt)
		if err != nil {
			t.Fatalf("share %d/4: %v", i, err)
		}
		if s.Share != opt.Share.String() || s.ShardsWritten+s.ShardsKept == 0 {
			t.Errorf("share %d/4: %+v: every share of 5 shards has one", i, s)
		}
		written += s.ShardsWritten
		if _, err := os.Stat(out); !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("share %d published the output", i)
		}
	}
	if written != 5 {
		t.Errorf("the shares wrote %d shards, want 5 (the retried share none)", written)
	}
	if _, err := arrowio.Merge(out); err != nil {
		t.Fatal(err)
	}
	sameTree(t, out, ref)
	aloneBeside(t, out)
}

// TestShareOfAnotherConversion: a share whose fingerprint differs from the work
// directory's is refused, naming both, and the other conversion's work is kept.
func TestShareOfAnotherConversion(t *testing.T) {
	out := filepath.Join(t.TempDir(), "out")
	opt := shardedTiny(out)
	opt.Share = arrowio.Share{Index: 0, Count: 4}
	a, err := Run(t.Context(), opt)
	if err != nil {
		t.Fatal(err)
	}
	for _, change := range []func(*Options){
		func(o *Options) { o.MaxShardSize = 200_000 },
		func(o *Options) { o.Recipe = "INT8_WEIGHT_ONLY_CFG" },
		func(o *Options) { o.DivMode = quant.DivCUDA },
	} {
		o := shardedTiny(out)
		o.Share = arrowio.Share{Index: 1, Count: 4}
		change(&o)
		_, err := Run(t.Context(), o)
		if !errors.Is(err, arrowio.ErrForeignWork) || !strings.Contains(err.Error(), a.Fingerprint) {
			t.Fatalf("share of another conversion: %v, want ErrForeignWork naming %s", err, a.Fingerprint)
		}
	}
	_, err = arrowio.Merge(out)
	if !errors.Is(err, arrowio.ErrIncomplete) || !strings.Contains(err.Error(), "share 1/4 is missing") || !strings.Contains(err.Error(), "share 3/4 is missing") || strings.Contains(err.Error(), "share 0/4") {
		t.Fatalf("merge with only share 0: %v", err)
	}
}

// fingerprintOf is the fingerprint a conversion would record.
func fingerprintOf(t *testing.T, opt Options, stages ...quantstream.Stage) string {
	t.Helper()
	j, err := Prepare(t.Context(), opt)
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	if len(stages) > 0 {
		if err := j.Append(stages...); err != nil {
			t.Fatal(err)
		}
	}
	p, err := j.provenance()
	if err != nil {
		t.Fatal(err)
	}
	return p.Fingerprint
}

// TestFingerprint: every setting that changes the output's bytes changes the
// fingerprint, and nothing else does.
func TestFingerprint(t *testing.T) {
	base := Options{Inputs: []string{tinyLlama}, Recipe: "W4A16_NVFP4_CFG"}
	want := fingerprintOf(t, base)
	off := false
	for _, tc := range []struct {
		name   string
		change func(*Options)
		same   bool
	}{
		{"workers", func(o *Options) { o.Workers = 3 }, true},
		{"max memory", func(o *Options) { o.MaxMemory = 8 << 20 }, true},
		{"output path", func(o *Options) { o.Out = "/elsewhere"; o.Overwrite = true }, true},
		{"share", func(o *Options) { o.Share = arrowio.Share{Index: 1, Count: 3} }, true},
		{"recipe", func(o *Options) { o.Recipe = "INT8_WEIGHT_ONLY_CFG" }, false},
		{"rules", func(o *Options) { o.Rules = []modelopt.Rule{{QuantizerName: "*layers.1.*", Enable: &off}} }, false},
		{"div mode", func(o *Options) { o.DivMode = quant.DivCUDA }, false},
		{"max shard size", func(o *Options) { o.MaxShardSize = 1 << 20 }, false},
	} {
		o := base
		tc.change(&o)
		if got := fingerprintOf(t, o); (got == want) != tc.same {
			t.Errorf("%s: fingerprint %s, base %s: want same=%v", tc.name, got, want, tc.same)
		}
	}
	if fingerprintOf(t, base, &spy{name: "mine"}) == want {
		t.Error("a caller's stage does not change the fingerprint")
	}

	// The inputs: a side file's content, and a tensor's data where the header is the
	// same (a new revision of the same shapes) change it; a copy does not.
	copyOf := func(t *testing.T) string {
		t.Helper()
		in := filepath.Join(t.TempDir(), "in")
		if err := os.CopyFS(in, os.DirFS(tinyLlama)); err != nil {
			t.Fatal(err)
		}
		return in
	}
	in := copyOf(t)
	if fingerprintOf(t, Options{Inputs: []string{in}, Recipe: base.Recipe}) != want {
		t.Error("a copy of the input has another fingerprint")
	}
	os.WriteFile(filepath.Join(in, "tokenizer.json"), []byte(`{"x": 1}`), 0o644)
	if fingerprintOf(t, Options{Inputs: []string{in}, Recipe: base.Recipe}) == want {
		t.Error("a changed side file does not change the fingerprint")
	}
	in = copyOf(t)
	f, err := arrowio.Open(filepath.Join(in, "model-00001-of-00002.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	off64 := f.Header.DataOff // the first byte of data: in the sample
	f.Close()
	fh, _ := os.OpenFile(filepath.Join(in, "model-00001-of-00002.safetensors"), os.O_RDWR, 0)
	fh.WriteAt([]byte{0x55}, off64)
	fh.Close()
	if fingerprintOf(t, Options{Inputs: []string{in}, Recipe: base.Recipe}) == want {
		t.Error("changed tensor data under the same header does not change the fingerprint")
	}
}

// TestFingerprintCoversOptions: every field of Options is either in the
// provenance (and so the fingerprint) or known not to change the output's bytes.
// A new field fails here until it is put on one side or the other.
func TestFingerprintCoversOptions(t *testing.T) {
	fingerprinted := map[string]bool{
		"Inputs": true, "MaxShardSize": true, "Recipe": true, "KVCache": true, "Rules": true, "DivMode": true,
		"Dequantize": true, "CastMXFP4ToNVFP4": true, "Arch": true,
	}
	bytesIndependent := map[string]string{
		"Out":         "where the output goes",
		"Overwrite":   "whether an existing output may be replaced",
		"Workers":     "output bytes do not depend on parallelism",
		"MaxMemory":   "groups are cut to fit, with the same output",
		"Share":       "any split gives the same bytes",
		"Allocator":   "memory, not content",
		"Progress":    "a callback",
		"OnShardDone": "a callback",
		"Engine":      "refuses an output an engine would not load; changes no byte",
	}
	ty := reflect.TypeFor[Options]()
	for i := range ty.NumField() {
		name := ty.Field(i).Name
		if !fingerprinted[name] && bytesIndependent[name] == "" {
			t.Errorf("Options.%s: neither fingerprinted (provenance) nor known not to change the output bytes", name)
		}
	}
}

// TestBudgetErrorNamesTheFlagAndTheMinimum: a budget too small is refused before
// anything is written, naming --max-memory and the smallest budget that works,
// which does work.
func TestBudgetErrorNamesTheFlagAndTheMinimum(t *testing.T) {
	parent := t.TempDir()
	out := filepath.Join(parent, "out")
	opt := shardedTiny(out)
	opt.MaxMemory = 64 << 10
	_, err := Run(t.Context(), opt)
	if err == nil || strings.Contains(err.Error(), "MaxMemory") || !strings.Contains(err.Error(), "--max-memory 113KiB") {
		t.Fatalf("err = %v: want the smallest --max-memory that works, not the Go field", err)
	}
	if left, _ := os.ReadDir(parent); len(left) != 0 {
		t.Fatalf("left behind: %v", left)
	}
	opt.MaxMemory = 113 << 10
	if _, err := Run(t.Context(), opt); err != nil {
		t.Fatalf("the budget the error names: %v", err)
	}
}

// TestMinMemoryWorks: the smallest budget plan states for a MoE model (whose
// layers are cut into expert groups to fit) runs, and a budget just below it is
// refused.
func TestMinMemoryWorks(t *testing.T) {
	opt := Options{Inputs: []string{"../testdata/tiny_moe"}, Recipe: "W4A16_NVFP4_CFG", MaxMemory: 1 << 10}
	p, err := MakePlan(t.Context(), opt)
	if err != nil || len(p.Problems) != 1 {
		t.Fatalf("plan under 1 KiB: %v, %v", p.Problems, err)
	}
	whole, err := MakePlan(t.Context(), Options{Inputs: opt.Inputs, Recipe: opt.Recipe})
	if err != nil {
		t.Fatal(err)
	}
	var largest int64 // the largest layer, whole
	for _, lp := range whole.Layers {
		largest = max(largest, lp.Charge[0])
	}
	min := p.MinMemory
	if min <= 0 || min >= largest {
		t.Fatalf("smallest budget %d, the largest whole layer needs %d: cutting into expert groups should need less", min, largest)
	}
	opt.MaxMemory, opt.Out = min, filepath.Join(t.TempDir(), "out")
	if _, err := Run(t.Context(), opt); err != nil {
		t.Fatalf("at the stated minimum %d: %v", min, err)
	}
	opt.MaxMemory, opt.Out = min-min/1000-1, filepath.Join(t.TempDir(), "out")
	if _, err := Run(t.Context(), opt); err == nil {
		t.Errorf("0.1%% below the stated minimum %d ran: it is not the minimum", min)
	}
}
