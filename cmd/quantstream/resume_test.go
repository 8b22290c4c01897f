package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/quantstream/quantstream/arrowio"
	"github.com/quantstream/quantstream/internal/testgen"
)

// The model the process tests convert: generated once per test binary (~60 MB, 7
// decoder layers), converted to W4A16_NVFP4 in ~12 shards of at most 1.5 MB.
var (
	modelOnce sync.Once
	modelDir  string
	modelErr  error
)

func resumeModel(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("writes a 60 MB model")
	}
	modelOnce.Do(func() {
		dir, err := os.MkdirTemp("", "quantstream-resume-model-")
		if err != nil {
			modelErr = err
			return
		}
		modelDir = filepath.Join(dir, "model")
		_, modelErr = testgen.WriteSyntheticLlama(modelDir, 60_000_000, 4_000_000, arrowio.WriteOptions{})
	})
	if modelErr != nil {
		t.Fatal(modelErr)
	}
	return modelDir
}

// convertArgs is the conversion the process tests run.
func convertArgs(model, out string, extra ...string) []string {
	return append([]string{"convert", "--quiet", "--in", model, "--out", out, "--recipe", "W4A16_NVFP4_CFG",
		"--max-shard-size", "1500KB", "--workers", "2"}, extra...)
}

// child runs this test binary as the quantstream command with env added.
func child(t *testing.T, env []string, args ...string) *exec.Cmd {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), os.Args[0], args...)
	cmd.Env = append(append(os.Environ(), "QUANTSTREAM_TEST_MAIN=1"), env...)
	return cmd
}

// runIn runs the command in this process and returns its exit code and output.
func runIn(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	code := run(t.Context(), args, &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

type report struct {
	Shards        int    `json:"shards"`
	ShardsWritten int    `json:"shards_written"`
	ShardsKept    int    `json:"shards_kept"`
	BytesIn       int64  `json:"bytes_in"`
	UpToDate      bool   `json:"up_to_date"`
	Fingerprint   string `json:"fingerprint"`
	Share         string `json:"share"`
}

func readReport(t *testing.T, path string) report {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var r report
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	return r
}

func tree(t *testing.T, root string) map[string][]byte {
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
	g, w := tree(t, got), tree(t, want)
	if len(w) == 0 {
		t.Fatalf("%s is empty", want)
	}
	for name, wb := range w {
		if gb, ok := g[name]; !ok || !bytes.Equal(gb, wb) {
			t.Errorf("%s: %s differs from the uninterrupted run (present: %v)", got, name, ok)
		}
	}
	for name := range g {
		if _, ok := w[name]; !ok {
			t.Errorf("%s: %s is not in the uninterrupted run", got, name)
		}
	}
}

// onlyOutput: the output's parent holds nothing else of it (no DIR.partial, no
// DIR.lock, no DIR.tmp-*).
func onlyOutput(t *testing.T, out string) {
	t.Helper()
	ents, _ := os.ReadDir(filepath.Dir(out))
	for _, e := range ents {
		if e.Name() != filepath.Base(out) && strings.HasPrefix(e.Name(), filepath.Base(out)) {
			t.Errorf("left beside the output: %s", e.Name())
		}
	}
}

var (
	refOnce sync.Once
	refDir  string
	refRep  report
)

// reference is the uninterrupted conversion, once per test binary.
func reference(t *testing.T, model string) (string, report) {
	t.Helper()
	refOnce.Do(func() {
		dir, _ := os.MkdirTemp("", "quantstream-resume-ref-")
		refDir = filepath.Join(dir, "ref")
		rep := filepath.Join(dir, "ref.json")
		if code, _, stderr := runIn(t, convertArgs(model, refDir, "--report", rep)...); code != 0 {
			t.Fatalf("reference conversion: exit %d: %s", code, stderr)
		}
		refRep = readReport(t, rep)
	})
	if refRep.Shards < 8 {
		t.Fatalf("reference conversion: %+v: want several shards", refRep)
	}
	return refDir, refRep
}

// TestKillAfterShards kills the conversion (SIGKILL) right after its K-th shard
// is recorded, for several K, then runs the same command again: it completes,
// keeps exactly the K shards, reads less input than a full run, and the output is
// byte for byte the uninterrupted one, with nothing left beside it.
func TestKillAfterShards(t *testing.T) {
	model := resumeModel(t)
	ref, full := reference(t, model)
	for _, k := range []int{1, full.Shards / 2, full.Shards - 1} {
		t.Run(fmt.Sprint("K=", k), func(t *testing.T) {
			dir := t.TempDir()
			out := filepath.Join(dir, "out")
			cmd := child(t, []string{"QUANTSTREAM_TEST_KILL_AFTER_SHARDS=" + strconv.Itoa(k)}, convertArgs(model, out)...)
			b, err := cmd.CombinedOutput()
			if ee := (*exec.ExitError)(nil); !errors.As(err, &ee) || ee.ProcessState.Sys().(interface{ Signaled() bool }).Signaled() == false {
				t.Fatalf("child not killed: %v\n%s", err, b)
			}
			if _, err := os.Stat(out); !errors.Is(err, os.ErrNotExist) {
				t.Fatal("output published by a killed run")
			}
			rep := filepath.Join(dir, "rep.json")
			code, stdout, stderr := runIn(t, convertArgs(model, out, "--report", rep)...)
			if code != 0 {
				t.Fatalf("rerun: exit %d\n%s%s", code, stdout, stderr)
			}
			r := readReport(t, rep)
			if r.ShardsKept != k || r.ShardsWritten != full.Shards-k || r.BytesIn >= full.BytesIn || r.Fingerprint != full.Fingerprint {
				t.Errorf("rerun report %+v: want %d shards kept, %d written, fewer than %d bytes read", r, k, full.Shards-k, full.BytesIn)
			}
			if !strings.Contains(stdout, fmt.Sprintf("resumed: %d of %d shards kept", k, full.Shards)) {
				t.Errorf("stdout does not say it resumed:\n%s", stdout)
			}
			sameTree(t, out, ref)
			onlyOutput(t, out)
		})
	}
}

// TestKillAtRandomTimes kills the conversion with SIGKILL at random moments, three
// times in a row (each rerun killed again), then lets it finish: the output is the
// uninterrupted one. The seed is logged; QUANTSTREAM_TEST_KILL_SEED replays it.
func TestKillAtRandomTimes(t *testing.T) {
	model := resumeModel(t)
	ref, _ := reference(t, model)
	// How long a whole run of a child takes here, to spread the kills over it.
	start := time.Now()
	if b, err := child(t, nil, convertArgs(model, filepath.Join(t.TempDir(), "timing"))...).CombinedOutput(); err != nil {
		t.Fatalf("%v\n%s", err, b)
	}
	whole := time.Since(start)
	seed := uint64(time.Now().UnixNano())
	if s, err := strconv.ParseUint(os.Getenv("QUANTSTREAM_TEST_KILL_SEED"), 10, 64); err == nil {
		seed = s
	}
	t.Logf("seed %d (QUANTSTREAM_TEST_KILL_SEED), a whole run takes %v", seed, whole.Round(time.Millisecond))
	rng := rand.New(rand.NewPCG(seed, 0))
	out := filepath.Join(t.TempDir(), "out")
	for i := range 3 {
		cmd := child(t, nil, convertArgs(model, out)...)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		d := time.Duration(rng.Int64N(int64(whole)))
		time.Sleep(d)
		cmd.Process.Kill() // SIGKILL
		err := cmd.Wait()
		partial, _ := os.ReadDir(filepath.Join(out+arrowio.PartialSuffix, "journal"))
		t.Logf("kill %d after %v: %v; %d shard records in the journal", i, d.Round(time.Millisecond), err, len(partial))
		if err == nil {
			break // it finished first
		}
	}
	code, stdout, stderr := runIn(t, convertArgs(model, out)...)
	if code != 0 {
		t.Fatalf("final run: exit %d\n%s%s", code, stdout, stderr)
	}
	sameTree(t, out, ref)
	onlyOutput(t, out)
}

// TestSecondWriterRefused: while a conversion holds the output (it is stopped
// after its first shard), a second conversion of the same output is refused at
// once, naming the lock, and writes nothing; shares of one conversion do not
// block each other.
func TestSecondWriterRefused(t *testing.T) {
	model := resumeModel(t)
	ref, _ := reference(t, model)
	out := filepath.Join(t.TempDir(), "out")
	holder := startHeld(t, convertArgs(model, out)...)

	start := time.Now()
	code, _, stderr := runIn(t, convertArgs(model, out)...)
	if code != 1 || !strings.Contains(stderr, "output is being written by another process") || !strings.Contains(stderr, out+".lock") {
		t.Fatalf("second writer: exit %d, stderr %q: want a refusal naming the lock", code, stderr)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("refused after %v, not at the start", d)
	}
	for _, cmd := range []string{"merge", "convert"} {
		args := []string{"merge", "--out", out}
		if cmd == "convert" {
			args = convertArgs(model, out, "--shard", "1/3")
		}
		if code, _, stderr := runIn(t, args...); code != 1 || !strings.Contains(stderr, "is locked") {
			t.Errorf("%s while a whole conversion runs: exit %d, %q", cmd, code, stderr)
		}
	}
	holder.Process.Kill()
	holder.Wait()

	// Shares run at once: share 0 holds its (shared) lock, share 1 and 2 complete
	// meanwhile; merge waits for share 0.
	sh := t.TempDir()
	out = filepath.Join(sh, "out")
	holder = startHeld(t, convertArgs(model, out, "--shard", "0/3")...)
	for _, i := range []string{"1/3", "2/3"} {
		if code, stdout, stderr := runIn(t, convertArgs(model, out, "--shard", i)...); code != 0 || !strings.Contains(stdout, "share "+i) {
			t.Fatalf("share %s while share 0/3 runs: exit %d\n%s%s", i, code, stdout, stderr)
		}
	}
	if code, _, stderr := runIn(t, "merge", "--out", out); code != 1 || !strings.Contains(stderr, "is locked") {
		t.Errorf("merge while a share runs: exit %d, %q", code, stderr)
	}
	holder.Process.Kill()
	holder.Wait()
	code, _, stderr = runIn(t, "merge", "--out", out)
	if code != 1 || !strings.Contains(stderr, "share 0/3 is missing") || !strings.Contains(stderr, "its writer started and has not finished") {
		t.Fatalf("merge with share 0 killed: exit %d, %q", code, stderr)
	}
	if code, _, stderr := runIn(t, convertArgs(model, out, "--shard", "0/3")...); code != 0 {
		t.Fatalf("share 0/3 again: %s", stderr)
	}
	if code, _, stderr := runIn(t, "merge", "--out", out); code != 0 {
		t.Fatalf("merge: %s", stderr)
	}
	sameTree(t, out, ref)
	onlyOutput(t, out)
}

// startHeld starts a child conversion that stops after its first shard, holding
// the output, and returns once it has.
func startHeld(t *testing.T, args ...string) *exec.Cmd {
	t.Helper()
	cmd := child(t, []string{"QUANTSTREAM_TEST_HOLD_AFTER_SHARDS=1"}, args...)
	errPipe, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	sc := bufio.NewScanner(errPipe)
	for sc.Scan() {
		if sc.Text() == "held" {
			go func() {
				for sc.Scan() {
				}
			}()
			return cmd
		}
		t.Logf("child: %s", sc.Text())
	}
	t.Fatalf("the child ended before its first shard: %v", cmd.Wait())
	return nil
}

// TestSharesThenMerge: --shard i/4 for i = 0..3 in any order, one of them twice,
// then merge: the output of one process, byte for byte; merge again changes
// nothing; a share of another conversion is refused; merge with a share missing is
// refused naming it.
func TestSharesThenMerge(t *testing.T) {
	ref := filepath.Join(t.TempDir(), "ref")
	args := func(out string, extra ...string) []string {
		return append([]string{"convert", "--quiet", "--in", tinyLlama, "--out", out, "--recipe", "W4A16_NVFP4_CFG", "--max-shard-size", "150KB"}, extra...)
	}
	if code, _, stderr := runIn(t, args(ref)...); code != 0 {
		t.Fatal(stderr)
	}
	out := filepath.Join(t.TempDir(), "out")
	for _, i := range []string{"3", "1", "0"} {
		code, stdout, stderr := runIn(t, args(out, "--shard", i+"/4")...)
		if code != 0 || !strings.Contains(stdout, "share "+i+"/4 of "+out) || !strings.Contains(stdout, "quantstream merge --out "+out) {
			t.Fatalf("share %s/4: exit %d\n%s%s", i, code, stdout, stderr)
		}
	}
	code, _, stderr := runIn(t, "merge", "--out", out)
	if code != 1 || !strings.Contains(stderr, "share 2/4 is missing") || !strings.Contains(stderr, "no writer of it has started") {
		t.Fatalf("merge without share 2: exit %d, %q", code, stderr)
	}
	code, _, stderr = runIn(t, args(out, "--shard", "2/4", "--max-shard-size", "100KB")...)
	if code != 1 || !strings.Contains(stderr, "belongs to another conversion") {
		t.Fatalf("share of another conversion: exit %d, %q", code, stderr)
	}
	for _, i := range []string{"2", "1"} {
		if code, _, stderr := runIn(t, args(out, "--shard", i+"/4")...); code != 0 {
			t.Fatalf("share %s/4: %s", i, stderr)
		}
	}
	code, stdout, stderr := runIn(t, "merge", "--out", out)
	if code != 0 || !strings.Contains(stdout, "merged "+out+": 5 shards") {
		t.Fatalf("merge: exit %d\n%s%s", code, stdout, stderr)
	}
	sameTree(t, out, ref)
	onlyOutput(t, out)
	code, stdout, _ = runIn(t, "merge", "--out", out)
	if code != 0 || !strings.Contains(stdout, "already merged") {
		t.Fatalf("merge again: exit %d %q", code, stdout)
	}
	code, stdout, _ = runIn(t, args(out, "--shard", "2/4")...)
	if code != 0 || !strings.Contains(stdout, "already complete") {
		t.Fatalf("a share after the merge: exit %d %q", code, stdout)
	}
	sameTree(t, out, ref)
	onlyOutput(t, out)
}

// TestHelpExitsZero: every command's -h prints its usage on stdout and exits 0.
func TestHelpExitsZero(t *testing.T) {
	for _, cmd := range []string{"convert", "plan", "merge", "parity", "dump-arrow", "verify", "inspect"} {
		for _, h := range []string{"-h", "--help"} {
			code, stdout, stderr := runIn(t, cmd, h)
			if code != 0 || !strings.HasPrefix(stdout, "usage: quantstream "+cmd) || stderr != "" || strings.Contains(stdout, "help requested") {
				t.Errorf("%s %s: exit %d, stdout %q, stderr %q: want the usage on stdout and 0", cmd, h, code, stdout, stderr)
			}
		}
	}
	if code, _, stderr := runIn(t, "merge", "--bogus"); code != 2 || !strings.Contains(stderr, "usage: quantstream merge") {
		t.Errorf("merge --bogus: exit %d, %q", code, stderr)
	}
}

// TestPlanTakesConvertFlags: the README says plan takes convert's flags; every
// one of them is accepted, --out included.
func TestPlanTakesConvertFlags(t *testing.T) {
	cf, pf := newConvertFlags("convert"), newConvertFlags("plan")
	cf.fs.VisitAll(func(f *flag.Flag) {
		if pf.fs.Lookup(f.Name) == nil {
			t.Errorf("plan has no --%s", f.Name)
		}
	})
	dir := t.TempDir()
	out := filepath.Join(dir, "out")
	rep := filepath.Join(dir, "plan.json")
	code, stdout, stderr := runIn(t, "plan", "--in", tinyLlama, "--out", out, "--overwrite", "--quiet", "--report", rep,
		"--recipe", "W4A16_NVFP4_CFG", "--max-shard-size", "150KB", "--shard", "1/4", "--workers", "2")
	if code != 0 || !strings.Contains(stdout, "share 1/4: 1 output shard(s): model-00002-of-00005.safetensors") || !strings.Contains(stdout, "output: "+out+": created when the conversion is complete") {
		t.Fatalf("plan with convert's flags: exit %d\n%s%s", code, stdout, stderr)
	}
	var p struct {
		ShareShards []string `json:"share_shards"`
		Fingerprint string   `json:"fingerprint"`
	}
	if b, err := os.ReadFile(rep); err != nil || json.Unmarshal(b, &p) != nil || len(p.ShareShards) != 1 || len(p.Fingerprint) != 64 {
		t.Errorf("plan --report: %+v, %v", p, err)
	}
	if _, err := os.Stat(out); !errors.Is(err, os.ErrNotExist) {
		t.Error("plan wrote the output")
	}
	// After an interrupted share, plan says what convert will resume.
	if code, _, stderr := runIn(t, "convert", "--quiet", "--in", tinyLlama, "--out", out, "--recipe", "W4A16_NVFP4_CFG", "--max-shard-size", "150KB", "--shard", "1/4"); code != 0 {
		t.Fatal(stderr)
	}
	_, stdout, _ = runIn(t, "plan", "--in", tinyLlama, "--out", out, "--recipe", "W4A16_NVFP4_CFG", "--max-shard-size", "150KB")
	if !strings.Contains(stdout, "this conversion, 1 of 5 shards complete (1 of the 5 of the whole output kept, the rest written)") {
		t.Errorf("plan over a partial output:\n%s", stdout)
	}
}

// TestFailuresMadeClear: the messages of issue 12's "failures users meet".
func TestFailuresMadeClear(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	os.WriteFile(file, []byte("x"), 0o644)
	yaml := filepath.Join(dir, "r.yaml")
	os.WriteFile(yaml, []byte("quantize:\n  algoritm: max\n  quant_cfg:\n    - quantizer_name: '*weight_quantizer'\n      cfg: {num_bits: e2m1, block_sizes: {-1: 16, type: dynamic, scale_bits: e4m3}}\n"), 0o644)
	out := filepath.Join(dir, "out")
	for _, tc := range []struct {
		name   string
		args   []string
		code   int
		want   []string
		unwant []string
	}{
		{"report in a missing directory", []string{"convert", "--quiet", "--in", tinyLlama, "--out", out, "--report", filepath.Join(dir, "no", "r.json")}, 2,
			[]string{"--report " + filepath.Join(dir, "no", "r.json") + ": no directory"}, nil},
		{"report is a directory", []string{"convert", "--quiet", "--in", tinyLlama, "--out", out, "--report", dir}, 2,
			[]string{"exists and is not a regular file"}, nil},
		{"report inside the output", []string{"convert", "--quiet", "--in", tinyLlama, "--out", out, "--report", filepath.Join(out, "r.json")}, 2,
			[]string{"lies inside " + out}, nil},
		{"misspelled recipe key", []string{"convert", "--quiet", "--in", tinyLlama, "--out", out, "--recipe", yaml}, 1,
			[]string{`unknown recipe key "quantize.algoritm": did you mean "quantize.algorithm"?`}, []string{"needs calibration"}},
		{"output is a file", []string{"convert", "--quiet", "--in", tinyLlama, "--out", file}, 1,
			[]string{file + " is a regular file"}, []string{"not empty"}},
		// An export: a passthrough copies tensors file to file and runs under any budget.
		{"budget", []string{"convert", "--quiet", "--in", tinyLlama, "--out", out, "--recipe", "W4A16_NVFP4_CFG", "--max-memory", "1KiB"}, 1,
			[]string{"over the memory budget of 1024 bytes", "the smallest memory budget that runs this conversion is 112.76 KiB: --max-memory 113KiB"}, []string{"MaxMemory"}},
		{"shard without out", []string{"plan", "--in", tinyLlama, "--shard", "1/4"}, 2, []string{"--shard needs --out"}, nil},
		{"bad shard", []string{"convert", "--in", tinyLlama, "--out", out, "--shard", "4/4"}, 2, []string{"want I/N with 0 <= I < N"}, nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, stdout, stderr := runIn(t, tc.args...)
			if code != tc.code {
				t.Errorf("exit %d, want %d\n%s%s", code, tc.code, stdout, stderr)
			}
			for _, w := range tc.want {
				if !strings.Contains(stderr, w) {
					t.Errorf("stderr lacks %q:\n%s", w, stderr)
				}
			}
			for _, w := range tc.unwant {
				if strings.Contains(stderr, w) {
					t.Errorf("stderr has %q:\n%s", w, stderr)
				}
			}
			ents, _ := os.ReadDir(dir)
			var names []string
			for _, e := range ents {
				names = append(names, e.Name())
			}
			if !slices.Equal(names, []string{"file", "r.yaml"}) {
				t.Errorf("written: %v", names)
			}
		})
	}
}
