package arrowio

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/quantstream/quantstream"
)

// resumeCase is a checkpoint of several shards with its data, and a provenance.
type resumeCase struct {
	infos []quantstream.TensorInfo
	data  map[string][]byte
	opts  WriteOptions
}

func newResumeCase(fp string) resumeCase {
	infos, data := randomTensors(11)
	prov := NewProvenance("test", "1", "b", map[string]string{"k": fp}, []InputFile{{Name: "in.safetensors", Size: 1}})
	return resumeCase{infos: infos, data: data, opts: WriteOptions{
		PlanOptions: PlanOptions{MaxShardSize: 40},
		Fingerprint: prov.Fingerprint,
		Provenance:  prov,
		SideFiles:   []SideFile{{Name: "config.json", Data: []byte("{}\n")}},
	}}
}

// write writes every tensor the writer wants; stopAfter > 0 stops after that many
// shards were completed (counted by OnShard).
func (c resumeCase) write(t *testing.T, w *Writer) {
	t.Helper()
	for _, ti := range c.infos {
		if !w.Wants(ti.Name) {
			continue
		}
		if err := w.WriteTensor(ti.Name, c.data[ti.Name]); err != nil {
			t.Fatal(err)
		}
	}
}

// reference writes the case in one go into a fresh directory and returns it.
func (c resumeCase) reference(t *testing.T) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "ref")
	w, err := Create(out, c.infos, c.opts)
	if err != nil {
		t.Fatal(err)
	}
	c.write(t, w)
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
	return out
}

func treeOf(t *testing.T, root string) map[string][]byte {
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

func sameTree(t *testing.T, got, want string) {
	t.Helper()
	g, w := treeOf(t, got), treeOf(t, want)
	if len(w) == 0 {
		t.Fatalf("%s is empty", want)
	}
	for name, wb := range w {
		if gb, ok := g[name]; !ok || !bytes.Equal(gb, wb) {
			t.Errorf("%s: %s differs from %s (present %v)", got, name, want, ok)
		}
	}
	for name := range g {
		if _, ok := w[name]; !ok {
			t.Errorf("%s: %s is not in %s", got, name, want)
		}
	}
}

// onlyOutput: beside out there is nothing but out (no work directory, no lock).
func onlyOutput(t *testing.T, out string) {
	t.Helper()
	ents, _ := os.ReadDir(filepath.Dir(out))
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if !slices.Equal(names, []string{filepath.Base(out)}) {
		t.Errorf("beside the output: %v, want only %s", names, filepath.Base(out))
	}
}

func TestResume(t *testing.T) {
	c := newResumeCase("a")
	ref := c.reference(t)
	out := filepath.Join(t.TempDir(), "out")

	// A first writer completes two shards and is interrupted.
	w, err := Create(out, c.infos, c.opts)
	if err != nil {
		t.Fatal(err)
	}
	nShards := len(w.Plan().Shards)
	if nShards < 4 {
		t.Fatalf("%d shards: want several", nShards)
	}
	first := map[string]bool{}
	for _, s := range w.Plan().Shards[:2] {
		for _, th := range s.Tensors {
			first[th.Name] = true
			if err := w.WriteTensor(th.Name, c.data[th.Name]); err != nil {
				t.Fatal(err)
			}
		}
	}
	// And half of a third.
	third := w.Plan().Shards[2].Tensors
	if err := w.WriteTensor(third[0].Name, c.data[third[0].Name]); err != nil {
		t.Fatal(err)
	}
	if kept := w.Release(); kept != 2 {
		t.Fatalf("Release kept %d shards, want 2", kept)
	}
	if _, err := os.Stat(out); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("output published by an interrupted writer: %v", err)
	}

	// The same fingerprint resumes: the two shards are kept, the rest written.
	w, err = Create(out, c.infos, c.opts)
	if err != nil {
		t.Fatal(err)
	}
	if st := w.Status(); st.Kept != 2 || st.Mine != nShards || st.Created {
		t.Fatalf("status %+v: want 2 of %d shards kept from the work directory", st, nShards)
	}
	for _, ti := range c.infos {
		if w.Wants(ti.Name) == first[ti.Name] {
			t.Fatalf("Wants(%s) = %v after resuming", ti.Name, w.Wants(ti.Name))
		}
	}
	if err := w.WriteTensor(slices.Collect(mapKeys(first))[0], []byte{1}); !errors.Is(err, ErrWrite) {
		t.Fatalf("writing a kept shard's tensor: %v, want ErrWrite", err)
	}
	c.write(t, w)
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
	sameTree(t, out, ref)
	onlyOutput(t, out)

	// Once published, the same fingerprint has nothing to do; overwrite redoes it.
	if _, err := Create(out, c.infos, c.opts); !errors.Is(err, ErrComplete) {
		t.Fatalf("Create over the complete output: %v, want ErrComplete", err)
	}
	o := c.opts
	o.Overwrite = true
	w, err = Create(out, c.infos, o)
	if err != nil {
		t.Fatal(err)
	}
	if st := w.Status(); st.Kept != 0 {
		t.Fatalf("overwrite kept %d shards", st.Kept)
	}
	c.write(t, w)
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
	sameTree(t, out, ref)
	onlyOutput(t, out)
}

func mapKeys(m map[string]bool) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// TestResumeCrashPoints leaves the work directory as a crash at each point of
// completing a shard would, and checks what the next writer keeps.
func TestResumeCrashPoints(t *testing.T) {
	c := newResumeCase("a")
	ref := c.reference(t)
	for _, tc := range []struct {
		name string
		// damage changes the work directory after the first shard was completed.
		damage func(t *testing.T, work, shard string)
		kept   int
	}{
		{"after the record", func(t *testing.T, work, shard string) {}, 1},
		{"while writing the record", func(t *testing.T, work, shard string) {
			// The record is still under its temporary name: not a record.
			rec := filepath.Join(work, journalDir, shard+".json")
			os.Rename(rec, filepath.Join(work, journalDir, "."+shard+".json"+tempMark+"123"))
		}, 0},
		{"a torn record", func(t *testing.T, work, shard string) {
			rec := filepath.Join(work, journalDir, shard+".json")
			b, _ := os.ReadFile(rec)
			os.WriteFile(rec, b[:len(b)/2], 0o644)
		}, 0},
		{"a record of another run", func(t *testing.T, work, shard string) {
			rec := filepath.Join(work, journalDir, shard+".json")
			b, _ := os.ReadFile(rec)
			os.WriteFile(rec, bytes.Replace(b, []byte(`"fingerprint":"`), []byte(`"fingerprint":"x`), 1), 0o644)
		}, 0},
		{"before the record", func(t *testing.T, work, shard string) {
			os.Remove(filepath.Join(work, journalDir, shard+".json"))
		}, 0},
		{"a shard since lost", func(t *testing.T, work, shard string) {
			os.Remove(filepath.Join(work, stageDir, shard))
		}, 0},
		{"a shard since truncated", func(t *testing.T, work, shard string) {
			os.Truncate(filepath.Join(work, stageDir, shard), 10)
		}, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "out")
			o := c.opts
			completed := make(chan string, 16)
			o.OnShard = func(name string) { completed <- name }
			w, err := Create(out, c.infos, o)
			if err != nil {
				t.Fatal(err)
			}
			s := w.Plan().Shards[0]
			for _, th := range s.Tensors {
				if err := w.WriteTensor(th.Name, c.data[th.Name]); err != nil {
					t.Fatal(err)
				}
			}
			if got := <-completed; got != s.Name {
				t.Fatalf("completed %s first, want %s", got, s.Name)
			}
			// A shard in progress, as a crash leaves it.
			th := w.Plan().Shards[1].Tensors[0]
			w.WriteTensor(th.Name, c.data[th.Name])
			w.drain()
			w.closeFiles()
			w.lock.f.Close() // as the kernel does for a killed process: the lock file stays
			tc.damage(t, out+PartialSuffix, s.Name)

			w, err = Create(out, c.infos, c.opts)
			if err != nil {
				t.Fatal(err)
			}
			if st := w.Status(); st.Kept != tc.kept {
				t.Fatalf("kept %d shards, want %d (%+v)", st.Kept, tc.kept, st)
			}
			c.write(t, w)
			if err := w.Commit(); err != nil {
				t.Fatal(err)
			}
			sameTree(t, out, ref)
			onlyOutput(t, out)
		})
	}
}

func TestResumeOtherFingerprint(t *testing.T) {
	a, b := newResumeCase("a"), newResumeCase("b")
	out := filepath.Join(t.TempDir(), "out")
	w, err := Create(out, a.infos, a.opts)
	if err != nil {
		t.Fatal(err)
	}
	s := w.Plan().Shards[0]
	for _, th := range s.Tensors {
		w.WriteTensor(th.Name, a.data[th.Name])
	}
	if w.Release() != 1 {
		t.Fatal("no shard kept")
	}

	// A share of another conversion cannot join, and leaves it alone.
	sb := b.opts
	sb.Share = Share{Index: 0, Count: 2}
	_, err = Create(out, b.infos, sb)
	if !errors.Is(err, ErrForeignWork) || !strings.Contains(err.Error(), a.opts.Fingerprint) || !strings.Contains(err.Error(), b.opts.Fingerprint) {
		t.Fatalf("share of another fingerprint: %v, want ErrForeignWork naming both fingerprints", err)
	}
	// The whole output of another conversion replaces it, saying so, and reuses nothing.
	w, err = Create(out, b.infos, b.opts)
	if err != nil {
		t.Fatal(err)
	}
	st := w.Status()
	if st.Kept != 0 || len(st.Removed) != 1 || !strings.Contains(st.Removed[0], a.opts.Fingerprint) || !strings.Contains(st.Removed[0], "1 of") {
		t.Fatalf("status %+v: want nothing kept and the old work reported removed", st)
	}
	b.write(t, w)
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
	sameTree(t, out, b.reference(t))
}

// TestForeignDirectory: a <out>.partial that is not a work directory is refused, not
// removed.
func TestForeignDirectory(t *testing.T) {
	c := newResumeCase("a")
	out := filepath.Join(t.TempDir(), "out")
	os.MkdirAll(out+PartialSuffix, 0o755)
	os.WriteFile(filepath.Join(out+PartialSuffix, "mine.txt"), []byte("x"), 0o644)
	for _, s := range []Share{{}, {Index: 1, Count: 2}} {
		o := c.opts
		o.Share = s
		if _, err := Create(out, c.infos, o); !errors.Is(err, ErrForeignWork) || !strings.Contains(err.Error(), "not a quantstream work directory") {
			t.Fatalf("share %v: %v, want ErrForeignWork", s, err)
		}
	}
	if _, err := os.Stat(filepath.Join(out+PartialSuffix, "mine.txt")); err != nil {
		t.Fatal("a directory that is not ours was touched")
	}
}

func TestSharesAndMerge(t *testing.T) {
	c := newResumeCase("a")
	ref := c.reference(t)
	out := filepath.Join(t.TempDir(), "out")
	const n = 3
	share := func(i int) *Writer {
		t.Helper()
		o := c.opts
		o.Share = Share{Index: i, Count: n}
		w, err := Create(out, c.infos, o)
		if err != nil {
			t.Fatalf("share %d: %v", i, err)
		}
		return w
	}
	// Two shares at once: their shared locks do not exclude each other, and they
	// exclude a writer of the whole output and a merge.
	w2, w0 := share(2), share(0)
	if _, err := Create(out, c.infos, c.opts); !errors.Is(err, ErrBusy) {
		t.Fatalf("whole output while shares write: %v, want ErrBusy", err)
	}
	if _, err := Merge(out); !errors.Is(err, ErrBusy) {
		t.Fatalf("merge while shares write: %v, want ErrBusy", err)
	}
	if w2.Status().Mine == 0 || w0.Status().Mine == 0 {
		t.Fatalf("empty shares: %+v %+v", w2.Status(), w0.Status())
	}
	for _, w := range []*Writer{w2, w0} {
		c.write(t, w)
		if err := w.Finish(); err != nil {
			t.Fatal(err)
		}
	}
	// Share 1 missing: refused, naming it.
	_, err := Merge(out)
	if !errors.Is(err, ErrIncomplete) || !strings.Contains(err.Error(), "share 1/3 is missing") || strings.Contains(err.Error(), "share 0/3") || !strings.Contains(err.Error(), "no writer of it has started") {
		t.Fatalf("merge without share 1: %v", err)
	}
	// Share 1 starts and stops half way: still missing, and said so.
	w1 := share(1)
	w1.Release()
	if _, err := Merge(out); !errors.Is(err, ErrIncomplete) || !strings.Contains(err.Error(), "share 1/3 is missing") || !strings.Contains(err.Error(), "started and has not finished") {
		t.Fatalf("merge with share 1 unfinished: %v", err)
	}
	// Share 0 again (a retried worker): nothing to write, harmless.
	w0 = share(0)
	if st := w0.Status(); st.Kept != st.Mine {
		t.Fatalf("a retried share rewrites shards: %+v", st)
	}
	if err := w0.Finish(); err != nil {
		t.Fatal(err)
	}
	w1 = share(1)
	c.write(t, w1)
	if err := w1.Finish(); err != nil {
		t.Fatal(err)
	}
	ms, err := Merge(out)
	if err != nil || ms.AlreadyDone || ms.Fingerprint != c.opts.Fingerprint {
		t.Fatalf("merge: %+v, %v", ms, err)
	}
	sameTree(t, out, ref)
	onlyOutput(t, out)
	// Idempotent.
	if ms, err := Merge(out); err != nil || !ms.AlreadyDone {
		t.Fatalf("second merge: %+v, %v", ms, err)
	}
	sameTree(t, out, ref)
	// A share of the published conversion has nothing to do.
	o := c.opts
	o.Share = Share{Index: 1, Count: n}
	if _, err := Create(out, c.infos, o); !errors.Is(err, ErrComplete) {
		t.Fatalf("share after the merge: %v, want ErrComplete", err)
	}
	onlyOutput(t, out)
}

// TestMergeRefusesOtherRecords: a journal record of another fingerprint does not
// count as the shard (it cannot be there unless something else wrote it).
func TestMergeRefusesOtherRecords(t *testing.T) {
	c := newResumeCase("a")
	out := filepath.Join(t.TempDir(), "out")
	o := c.opts
	o.Share = Share{Index: 0, Count: 1}
	w, err := Create(out, c.infos, o)
	if err != nil {
		t.Fatal(err)
	}
	c.write(t, w)
	if err := w.Finish(); err != nil {
		t.Fatal(err)
	}
	name := w.Plan().Shards[1].Name
	rec := filepath.Join(out+PartialSuffix, journalDir, name+".json")
	b, _ := os.ReadFile(rec)
	os.WriteFile(rec, bytes.Replace(b, []byte(c.opts.Fingerprint), []byte(strings.Repeat("0", 64)), 1), 0o644)
	if _, err := Merge(out); !errors.Is(err, ErrIncomplete) || !strings.Contains(err.Error(), name) || !strings.Contains(err.Error(), "share 0/1") {
		t.Fatalf("merge with a record of another run: %v", err)
	}
}

func TestMergeNothing(t *testing.T) {
	out := filepath.Join(t.TempDir(), "out")
	if _, err := Merge(out); !errors.Is(err, ErrIncomplete) || !strings.Contains(err.Error(), "nothing to merge") {
		t.Fatalf("merge of nothing: %v", err)
	}
	onlyOutputOrNothing(t, out)
}

func onlyOutputOrNothing(t *testing.T, out string) {
	t.Helper()
	if ents, _ := os.ReadDir(filepath.Dir(out)); len(ents) != 0 {
		t.Errorf("left beside the output: %v", ents)
	}
}

func TestLock(t *testing.T) {
	c := newResumeCase("a")
	out := filepath.Join(t.TempDir(), "out")
	w, err := Create(out, c.infos, c.opts)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []Share{{}, {Index: 0, Count: 2}} {
		o := c.opts
		o.Share = s
		_, err := Create(out, c.infos, o)
		if !errors.Is(err, ErrBusy) || !strings.Contains(err.Error(), out+LockSuffix) {
			t.Fatalf("second writer (share %v) while the whole output is written: %v, want ErrBusy naming the lock", s, err)
		}
	}
	w.Abort()
	onlyOutputOrNothing(t, out)
}

func TestProvenanceFile(t *testing.T) {
	c := newResumeCase("a")
	out := c.reference(t)
	p, err := ReadProvenance(out)
	if err != nil {
		t.Fatal(err)
	}
	if p.Fingerprint != c.opts.Fingerprint || !p.complete(out) {
		t.Fatalf("provenance %+v", p)
	}
	var names []string
	for _, f := range p.Files {
		names = append(names, f.Name)
		sum, n, err := fileSHA256(filepath.Join(out, f.Name))
		if err != nil || sum != f.SHA256 || n != f.Size {
			t.Errorf("%s: provenance says %d bytes sha256 %s, the file has %d bytes sha256 %s", f.Name, f.Size, f.SHA256, n, sum)
		}
	}
	if !slices.IsSorted(names) || !slices.Contains(names, "config.json") || !slices.Contains(names, IndexName) {
		t.Errorf("files %v: want every file, sorted", names)
	}
	// Deterministic: no time, host or path.
	b, _ := os.ReadFile(filepath.Join(out, ProvenanceName))
	if !bytes.Equal(b, p.Marshal()) || bytes.Contains(b, []byte(out)) {
		t.Errorf("provenance does not round-trip or names the output path:\n%s", b)
	}
	// A fingerprint that does not match its fields is refused.
	os.WriteFile(filepath.Join(out, ProvenanceName), bytes.Replace(b, []byte(`"k": "a"`), []byte(`"k": "b"`), 1), 0o644)
	if _, err := ReadProvenance(out); !errors.Is(err, ErrBadProvenance) {
		t.Errorf("edited provenance: %v, want ErrBadProvenance", err)
	}
}

func TestSplitShares(t *testing.T) {
	for _, tc := range []struct {
		costs []int64
		n     int
		want  []int
	}{
		{[]int64{1, 1, 1, 1}, 4, []int{0, 1, 2, 3, 4}},
		{[]int64{1, 1, 1, 1}, 2, []int{0, 2, 4}},
		{[]int64{10, 1, 1, 1, 1}, 2, []int{0, 1, 5}},
		{[]int64{1, 1}, 4, []int{0, 0, 1, 1, 2}}, // fewer shards than shares
		{[]int64{5}, 1, []int{0, 1}},
		{nil, 3, []int{0, 0, 0, 0}},
		{[]int64{1, 2, 3, 4, 5, 6}, 3, []int{0, 3, 5, 6}}, // 7 of 21: cuts at 6 (|6−7|) and 15 (|15−14|)
	} {
		if got := SplitShares(tc.costs, tc.n); !slices.Equal(got, tc.want) {
			t.Errorf("SplitShares(%v, %d) = %v, want %v", tc.costs, tc.n, got, tc.want)
		}
	}
	// Any costs: contiguous and covering, each share within one shard of its ideal.
	rng := rand.New(rand.NewPCG(1, 2))
	for range 1000 {
		costs := make([]int64, rng.IntN(40))
		var total, most int64
		for i := range costs {
			costs[i] = rng.Int64N(1 << 40)
			total += costs[i]
			most = max(most, costs[i])
		}
		n := 1 + rng.IntN(12)
		cut := SplitShares(costs, n)
		if len(cut) != n+1 || cut[0] != 0 || cut[n] != len(costs) || !slices.IsSorted(cut) {
			t.Fatalf("SplitShares(%v, %d) = %v", costs, n, cut)
		}
		for i := range n {
			var sum int64
			for _, c := range costs[cut[i]:cut[i+1]] {
				sum += c
			}
			if d := sum - total/int64(n); d > 2*most+1 {
				t.Fatalf("share %d of %d: %d, ideal %d, largest shard %d (%v → %v)", i, n, sum, total/int64(n), most, costs, cut)
			}
		}
	}
}

func TestParseShare(t *testing.T) {
	if s, err := ParseShare("3/4"); err != nil || s != (Share{3, 4}) || s.String() != "3/4" {
		t.Fatalf("ParseShare(3/4) = %v, %v", s, err)
	}
	for _, bad := range []string{"", "4/4", "-1/4", "1/0", "a/b", "1", "1/4/5", fmt.Sprintf("0/%d", MaxShares+1)} {
		if _, err := ParseShare(bad); !errors.Is(err, ErrShare) {
			t.Errorf("ParseShare(%q): %v, want ErrShare", bad, err)
		}
	}
}

// TestLeftoversReported: what interrupted writers left is removed (work of another
// fingerprint, work directories being created, files being written) or, for the
// temporary directories of earlier versions (<out>.tmp-*), reported and kept.
func TestLeftoversReported(t *testing.T) {
	c := newResumeCase("a")
	out := filepath.Join(t.TempDir(), "out")
	old := out + ".tmp-1234"
	os.MkdirAll(old, 0o755)
	creating := out + PartialSuffix + newMark + "99"
	os.MkdirAll(creating, 0o755)
	w, err := Create(out, c.infos, c.opts)
	if err != nil {
		t.Fatal(err)
	}
	st := w.Status()
	if len(st.Warnings) != 1 || !strings.Contains(st.Warnings[0], old) || !strings.Contains(st.Warnings[0], "earlier quantstream") {
		t.Errorf("warnings %q: want %s reported", st.Warnings, old)
	}
	if len(st.Removed) != 1 || !strings.Contains(st.Removed[0], creating) {
		t.Errorf("removed %q: want %s", st.Removed, creating)
	}
	c.write(t, w)
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(old); err != nil {
		t.Errorf("%s removed: %v", old, err)
	}
	if _, err := os.Stat(creating); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s kept", creating)
	}
}
