package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"

	"github.com/quantstream/quantstream/arrowio"
	"github.com/quantstream/quantstream/internal/testgen"
)

const (
	tinyLlama = "../../testdata/tiny_llama"
	golden    = "../../testdata/golden"
)

// TestMain lets the interrupt test run this binary as the quantstream command:
// with QUANTSTREAM_TEST_MAIN=1 it does what main does (see runAsMain).
func TestMain(m *testing.M) {
	if os.Getenv("QUANTSTREAM_TEST_MAIN") == "1" {
		os.Exit(runAsMain())
	}
	code := m.Run()
	// The model and the reference conversion the process tests share.
	for _, d := range []string{modelDir, refDir} {
		if d != "" {
			os.RemoveAll(filepath.Dir(d))
		}
	}
	os.Exit(code)
}

func TestRun(t *testing.T) {
	tmp := t.TempDir()
	unknownFn := unknownFunctionManifest(t, filepath.Join(tmp, "parity-manifest"))
	for _, tc := range []struct {
		name       string
		args       []string
		code       int
		stdout     []string // substrings, in order
		stderr     []string
		lastStdout string // the last line of stdout, if set
		present    string // a directory that must exist afterwards
		absent     string // a directory that must not exist afterwards
	}{
		{name: "no args", args: nil, code: 2, stderr: []string{"usage: quantstream <command>", "convert", "parity"}},
		{name: "help", args: []string{"help"}, code: 0, stdout: []string{"usage: quantstream <command>"}},
		{name: "version", args: []string{"version"}, code: 0, stdout: []string{"quantstream " + version}},
		{name: "unknown command", args: []string{"frobnicate"}, code: 2, stderr: []string{`unknown command "frobnicate"`, "usage: quantstream"}},
		{name: "convert bad flag", args: []string{"convert", "--bogus"}, code: 2, stderr: []string{"flag provided but not defined: -bogus", "quantstream: usage:"}},
		{name: "convert bad size", args: []string{"convert", "--in", tinyLlama, "--out", filepath.Join(tmp, "x"), "--max-memory", "lots"}, code: 2, stderr: []string{`invalid value "lots" for flag -max-memory`, "quantstream: usage:"}, absent: filepath.Join(tmp, "x")},
		{name: "convert bad div-mode", args: []string{"convert", "--in", tinyLlama, "--out", filepath.Join(tmp, "x"), "--div-mode", "gpu"}, code: 2, stderr: []string{`--div-mode "gpu": want ieee or cuda`}, absent: filepath.Join(tmp, "x")},
		{name: "convert missing --in", args: []string{"convert", "--out", filepath.Join(tmp, "x")}, code: 2, stderr: []string{"--in is required"}, absent: filepath.Join(tmp, "x")},
		{name: "convert missing --out", args: []string{"convert", "--in", tinyLlama}, code: 2, stderr: []string{"--out is required"}},
		{name: "convert stray argument", args: []string{"convert", "--in", tinyLlama, "--out", filepath.Join(tmp, "x"), "extra"}, code: 2, stderr: []string{`unexpected argument "extra"`}, absent: filepath.Join(tmp, "x")},
		{name: "plan missing --in", args: []string{"plan"}, code: 2, stderr: []string{"--in is required"}},
		{name: "convert bad --arch", args: []string{"convert", "--in", tinyLlama, "--out", filepath.Join(tmp, "x"), "--arch", filepath.Join(tmp, "none.json")}, code: 1, stderr: []string{"arch: bad family file", "none.json"}, absent: filepath.Join(tmp, "x")},
		{name: "plan bad --arch", args: []string{"plan", "--in", tinyLlama, "--arch", filepath.Join(tmp, "none.json")}, code: 1, stdout: []string{"arch: bad family file", "none.json"}},
		{name: "dump-arrow missing --out", args: []string{"dump-arrow", "--in", tinyLlama}, code: 2, stderr: []string{"--in and --out are required"}},
		{
			name: "convert passthrough", args: []string{"convert", "--in", tinyLlama, "--out", filepath.Join(tmp, "pass")}, code: 0,
			stdout:  []string{"wrote " + filepath.Join(tmp, "pass") + ": passthrough, 4 layer groups (decoder layers and the rest), 30 tensors in 1 shard(s)", "bytes in 1.31 MiB, out 1.31 MiB"},
			stderr:  []string{"progress: layer 4/4  1.31 MiB / 1.31 MiB (100.0%)"},
			present: filepath.Join(tmp, "pass"),
		},
		{
			name: "convert W4A16_NVFP4_CFG", args: []string{"convert", "--quiet", "--workers", "2", "--in", tinyLlama, "--out", filepath.Join(tmp, "nvfp4"), "--recipe", "W4A16_NVFP4_CFG"}, code: 0,
			stdout: []string{
				"wrote " + filepath.Join(tmp, "nvfp4") + ": data-free W4A16_NVFP4_CFG, 4 layer groups (decoder layers and the rest), 72 tensors in 1 shard(s)",
				"bytes in 1.31 MiB, out 561.58 KiB",
				"quant_algo W4A16_NVFP4",
				"w4a16_nvfp4      21 modules",
				"left unquantized (quantizers disabled by the recipe or state, or MoE routers; in exclude_modules) (2):\n  lm_head\n  model.embed_tokens\n",
			},
			present: filepath.Join(tmp, "nvfp4"),
		},
		{
			name: "convert again, same conversion", args: []string{"convert", "--quiet", "--in", tinyLlama, "--out", filepath.Join(tmp, "pass")}, code: 0,
			stdout:  []string{filepath.Join(tmp, "pass") + " is already complete: converted with the same inputs and settings (fingerprint ", "nothing to do (--overwrite converts again)"},
			present: filepath.Join(tmp, "pass"),
		},
		{
			name: "convert into existing output", args: []string{"convert", "--quiet", "--in", tinyLlama, "--out", filepath.Join(tmp, "pass"), "--recipe", "INT8_WEIGHT_ONLY_CFG"}, code: 1,
			stderr:  []string{"output directory exists and is not empty"},
			present: filepath.Join(tmp, "pass"), // still there: it was written by an earlier case
		},
		{
			name: "convert recipe needing calibration", args: []string{"convert", "--quiet", "--in", tinyLlama, "--out", filepath.Join(tmp, "fp8"), "--recipe", "FP8_DEFAULT_CFG"}, code: 1,
			stderr: []string{"recipe needs calibration data", "FP8_DEFAULT_CFG", "input_quantizer", "calibrate with ModelOpt"},
			absent: filepath.Join(tmp, "fp8"),
		},
		{
			name: "convert unknown recipe", args: []string{"convert", "--quiet", "--in", tinyLlama, "--out", filepath.Join(tmp, "bad"), "--recipe", "NO_SUCH_CFG"}, code: 1,
			stderr: []string{"NO_SUCH_CFG"}, absent: filepath.Join(tmp, "bad"),
		},
		{
			name: "plan", args: []string{"plan", "--in", tinyLlama, "--recipe", "W4A16_NVFP4_CFG"}, code: 0,
			stdout: []string{"mode: data-free W4A16_NVFP4_CFG", "layer 0", "non-decoder tensors", "shard model.safetensors", "quant_algo: W4A16_NVFP4"},
		},
		{
			// An export: a passthrough copies tensors file to file and runs under any budget.
			name: "plan over memory", args: []string{"plan", "--in", tinyLlama, "--recipe", "W4A16_NVFP4_CFG", "--max-memory", "1KiB"}, code: 1,
			stdout: []string{"1 problem(s):", "layer exceeds memory budget: layer 0 (the group of 1 tensors model.layers.0.mlp.down_proj.weight … model.layers.0.mlp.down_proj.weight) needs 115462 bytes", "over the memory budget of 1024 bytes", "the smallest memory budget that runs this conversion is 112.76 KiB: --max-memory 113KiB"},
			stderr: []string{"quantstream: the plan has 1 problem(s)"},
		},
		{
			name: "plan recipe needing calibration", args: []string{"plan", "--in", tinyLlama, "--recipe", "FP8_DEFAULT_CFG"}, code: 1,
			stdout: []string{"1 problem(s):", "recipe needs calibration data: FP8_DEFAULT_CFG"},
			stderr: []string{"quantstream: the plan has 1 problem(s)"},
		},
		{
			name: "dump-arrow", args: []string{"dump-arrow", "--in", tinyLlama, "--out", filepath.Join(tmp, "layers.arrow")}, code: 0,
			stdout: []string{"wrote " + filepath.Join(tmp, "layers.arrow") + ": 4 layers"}, present: filepath.Join(tmp, "layers.arrow"),
		},
		{name: "parity no dir", args: []string{"parity"}, code: 2, stderr: []string{"parity needs at least one golden directory"}},
		{name: "parity bad group", args: []string{"parity", "--group", "all", golden}, code: 2, stderr: []string{`--group "all": want unit, modules or e2e`}},
		{
			name: "parity pack_int4", args: []string{"parity", "--group", "unit", "--match", "quant_utils.pack_int4", golden}, code: 0,
			stdout:     []string{"PASS unit/00069/quant_utils.pack_int4_in_uint8/int4_awq quant_utils.pack_int4_in_uint8 int4_awq"},
			lastStdout: "44 passed, 0 failed",
		},
		{
			name: "parity unknown function", args: []string{"parity", unknownFn}, code: 1,
			stdout: []string{
				"PASS unit/00069/quant_utils.pack_int4_in_uint8/int4_awq",
				"FAIL unit/99999/made_up.function/nvfp4 made_up.function nvfp4",
			},
			lastStdout: "1 passed, 1 failed",
			stderr:     []string{"quantstream: some cases failed"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(t.Context(), tc.args, &stdout, &stderr)
			if code != tc.code {
				t.Errorf("exit code %d, want %d\nstdout:\n%s\nstderr:\n%s", code, tc.code, stdout.String(), stderr.String())
			}
			containsInOrder(t, "stdout", stdout.String(), tc.stdout)
			containsInOrder(t, "stderr", stderr.String(), tc.stderr)
			if tc.lastStdout != "" {
				lines := strings.Split(strings.TrimRight(stdout.String(), "\n"), "\n")
				if last := lines[len(lines)-1]; last != tc.lastStdout {
					t.Errorf("last stdout line %q, want %q", last, tc.lastStdout)
				}
			}
			if _, err := os.Stat(tc.present); tc.present != "" && err != nil {
				t.Errorf("output: %v", err)
			}
			if _, err := os.Stat(tc.absent); tc.absent != "" && !errors.Is(err, os.ErrNotExist) {
				t.Errorf("%s exists after exit code %d (stat: %v)", tc.absent, code, err)
			}
		})
	}
	// Nothing but the outputs of successful runs is left next to them.
	ents, err := os.ReadDir(tmp)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	if got := strings.Join(names, " "); got != "layers.arrow nvfp4 parity-manifest pass" {
		t.Errorf("left in %s: %s", tmp, got)
	}
}

// TestConvertReport: --report writes the summary as JSON, matching what was printed.
func TestConvertReport(t *testing.T) {
	dir := t.TempDir()
	report := filepath.Join(dir, "summary.json")
	var stdout, stderr bytes.Buffer
	code := run(t.Context(), []string{"convert", "--quiet", "--in", tinyLlama, "--out", filepath.Join(dir, "out"),
		"--recipe", "INT8_WEIGHT_ONLY_CFG", "--max-shard-size", "400KB", "--report", report}, &stdout, &stderr)
	if code != 0 {
		t.Fatalf("exit code %d: %s", code, stderr.String())
	}
	if stderr.Len() != 0 {
		t.Errorf("--quiet wrote to stderr: %q", stderr.String())
	}
	b, err := os.ReadFile(report)
	if err != nil {
		t.Fatal(err)
	}
	var s struct {
		Mode      string         `json:"mode"`
		Tensors   int            `json:"tensors_out"`
		Shards    int            `json:"shards"`
		QuantAlgo string         `json:"quant_algo"`
		Modules   map[string]int `json:"modules_per_format"`
	}
	if err := json.Unmarshal(b, &s); err != nil {
		t.Fatal(err)
	}
	if s.Mode != "data-free INT8_WEIGHT_ONLY_CFG" || s.Tensors != 51 || s.QuantAlgo != "W8A16" || s.Modules["int8_wo"] != 21 || s.Shards < 2 {
		t.Errorf("report %+v", s)
	}
	if !strings.Contains(stdout.String(), "51 tensors in "+strconv.Itoa(s.Shards)+" shard(s)") {
		t.Errorf("stdout does not match the report:\n%s", stdout.String())
	}
	if _, err := arrowio.ReadIndex(filepath.Join(dir, "out", arrowio.IndexName)); err != nil {
		t.Fatalf("several shards need an index: %v", err)
	}
}

// TestInterrupt runs the command as a process, converts a ~200 MB model with progress
// and sends SIGINT after the first progress line: exit status 130, "interrupted",
// and nothing left next to the output (neither it nor its temporary directory).
//
// The child's progress writer holds the first progress line's return until the
// signal has arrived (see runAsMain), so the conversion is certainly mid-stream
// when it is interrupted, however fast the machine.
func TestInterrupt(t *testing.T) {
	if testing.Short() {
		t.Skip("writes a 200 MB model")
	}
	model := filepath.Join(t.TempDir(), "model")
	if _, err := testgen.WriteSyntheticLlama(model, 200_000_000, 8_000_000, arrowio.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	parent := t.TempDir()
	out := filepath.Join(parent, "out")

	cmd := exec.CommandContext(t.Context(), os.Args[0],
		"convert", "--in", model, "--out", out, "--recipe", "W4A16_NVFP4_CFG", "--workers", "2", "--max-memory", "64MiB")
	cmd.Env = append(os.Environ(), "QUANTSTREAM_TEST_MAIN=1")
	var stdout bytes.Buffer
	cmd.Stdout = &stdout
	errPipe, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	sc := bufio.NewScanner(errPipe)
	sawProgress := false
	for sc.Scan() {
		line := sc.Text()
		stderr.WriteString(line + "\n")
		if !sawProgress && strings.HasPrefix(line, "progress: layer ") {
			sawProgress = true
			if err := cmd.Process.Signal(os.Interrupt); err != nil {
				t.Fatal(err)
			}
		}
	}
	err = cmd.Wait()
	if !sawProgress {
		t.Fatalf("no progress line; stderr:\n%s", stderr.String())
	}
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != 130 {
		t.Fatalf("exit %v, want status 130; stderr:\n%s", err, stderr.String())
	}
	if !strings.Contains(stderr.String(), "quantstream: interrupted; no output was written") {
		t.Errorf("stderr lacks the interrupt message:\n%s", stderr.String())
	}
	if m := regexp.MustCompile(`progress: layer (\d+)/(\d+)`).FindAllStringSubmatch(stderr.String(), -1); len(m) == 0 || m[len(m)-1][1] == m[len(m)-1][2] {
		t.Errorf("the conversion was not interrupted mid-stream:\n%s", stderr.String())
	}
	if stdout.Len() != 0 {
		t.Errorf("stdout: %q", stdout.String())
	}
	ents, err := os.ReadDir(parent)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		t.Errorf("left next to the output: %s", e.Name())
	}
}

// runAsMain is main for TestInterrupt's child process, with one difference: the
// first progress line does not return until the signal has cancelled the run, so
// the test's SIGINT lands while layers are in flight.
//
// Two hooks make a child stop at a chosen point of a conversion:
// QUANTSTREAM_TEST_KILL_AFTER_SHARDS=K kills the process (SIGKILL, as the
// kernel's OOM killer or a preemption would) right after its K-th output shard is
// recorded; QUANTSTREAM_TEST_HOLD_AFTER_SHARDS=K prints "held" to stderr after the
// K-th and blocks, holding the output's lock, until the test kills it.
func runAsMain() int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	kill, _ := strconv.Atoi(os.Getenv("QUANTSTREAM_TEST_KILL_AFTER_SHARDS"))
	hold, _ := strconv.Atoi(os.Getenv("QUANTSTREAM_TEST_HOLD_AFTER_SHARDS"))
	var n atomic.Int32
	onShardDone = func(string) {
		k := int(n.Add(1))
		if k == kill {
			syscall.Kill(os.Getpid(), syscall.SIGKILL)
			select {} // until the signal lands
		}
		if k == hold {
			fmt.Fprintln(os.Stderr, "held")
			select {}
		}
	}
	return run(ctx, os.Args[1:], os.Stdout, &holdFirstProgress{w: os.Stderr, ctx: ctx})
}

type holdFirstProgress struct {
	w    io.Writer
	ctx  context.Context
	once sync.Once
}

func (h *holdFirstProgress) Write(p []byte) (int, error) {
	n, err := h.w.Write(p)
	if bytes.HasPrefix(p, []byte("progress: ")) {
		h.once.Do(func() { <-h.ctx.Done() })
	}
	return n, err
}

// unknownFunctionManifest writes into dir a manifest with one golden pack_int4 case
// and one case of a function no handler knows.
func unknownFunctionManifest(t *testing.T, dir string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(golden, "manifest.json"))
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	var cases []map[string]any
	if err := json.Unmarshal(m["cases"], &cases); err != nil {
		t.Fatal(err)
	}
	var known map[string]any
	for _, c := range cases {
		if c["id"] == "unit/00069/quant_utils.pack_int4_in_uint8/int4_awq" {
			known = c
		}
	}
	if known == nil {
		t.Fatal("golden case unit/00069 not found")
	}
	unknown := map[string]any{"id": "unit/99999/made_up.function/nvfp4", "group": "unit", "function": "made_up.function", "format": "nvfp4", "file": "unit.safetensors"}
	out, _ := json.Marshal(map[string]any{"schema": "modelopt-export-golden/v1", "set": "test", "cases": []any{known, unknown}})
	return writeManifest(t, dir, out)
}

func writeManifest(t *testing.T, dir string, manifest []byte) string {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	abs, err := filepath.Abs(filepath.Join(golden, "unit.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(abs, filepath.Join(dir, "unit.safetensors")); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "manifest.json"), manifest, 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// containsInOrder checks that each of want occurs in got, each after the previous.
func containsInOrder(t *testing.T, what, got string, want []string) {
	t.Helper()
	rest := got
	for _, w := range want {
		i := strings.Index(rest, w)
		if i < 0 {
			t.Errorf("%s lacks %q (in order); %s:\n%s", what, w, what, got)
			return
		}
		rest = rest[i+len(w):]
	}
}
