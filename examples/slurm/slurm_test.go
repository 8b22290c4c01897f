package slurm_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/quantstream/quantstream/internal/clitest"
)

// These tests run the example's scripts on a real single-node Slurm cluster
// (scripts/slurm/up.sh). QUANTSTREAM_SLURM decides what happens without one:
//
//	1      required (CI sets it): up.sh may install the packages; any failure fails
//	0      skip
//	unset  use Slurm if it is installed (up.sh without installing), skip otherwise
const (
	tinyLlama = "../../testdata/tiny_llama"
	upScript  = "../../scripts/slurm/up.sh"
	// jobBudget bounds the wait for the jobs of one submission. The jobs take seconds;
	// the rest is room for a CI machine busy with the other packages' tests.
	jobBudget = 4 * time.Minute
)

// conversion is the one the tests split: 5 output shards at 150KB, so each of 4
// shares has at least one.
func conversion(t *testing.T, bin, out string) []string {
	t.Helper()
	return []string{
		"QS_BIN=" + bin,
		"QS_IN=" + abs(t, tinyLlama),
		"QS_OUT=" + out,
		"QS_RECIPE=W4A16_NVFP4_CFG",
		"QS_FLAGS=--max-shard-size 150KB",
		"QS_TASKS=4",
	}
}

// TestSlurmArray submits a 4-task array and an afterok merge through submit.sh and
// checks: every task ran once as its share of 4, the merge started after the last
// share ended, the result equals the single-process run byte for byte, and merging
// again (a retried merge job) changes nothing.
func TestSlurmArray(t *testing.T) {
	sl := cluster(t)
	bin := clitest.Build(t)
	dir := t.TempDir()
	out := filepath.Join(dir, "out")
	env := append(sl.env(), conversion(t, bin, out)...)

	shards := planShards(t, bin)
	if shards < 4 {
		t.Fatalf("the test conversion plans %d output shards: fewer than the 4 shares, some would be empty", shards)
	}

	// Share 3 takes 3 s longer: while it runs, a core is free for the merge job, which
	// only the afterok dependency then holds back (on a 2-core node, without it, the
	// queue's order alone would run the merge last and hide a missing dependency).
	slow := wrapBin(t, bin, "3", "sleep 3")
	start := time.Now()
	ids := sl.submit(t, append(env, "QS_BIN="+slow))
	sl.wait(t, ids.array, ids.merge)
	arrayWall := time.Since(start)

	tasks := sl.jobs(t, ids.array)
	checkTasks(t, tasks, ids.array, []int{0, 1, 2, 3}, "COMPLETED")
	merge := sl.jobs(t, ids.merge)
	if len(merge) != 1 || merge[0]["JobState"] != "COMPLETED" || merge[0]["ExitCode"] != "0:0" {
		t.Fatalf("merge job %s: %v\n%s", ids.merge, merge, sl.logs(out))
	}
	checkAfterOK(t, out, tasks, merge[0])

	start = time.Now()
	ref := filepath.Join(dir, "single")
	single(t, env, ref)
	singleWall := time.Since(start)
	sameTree(t, out, ref)
	t.Logf("wall time: array of 4 + merge on Slurm %v from submit to merge done (share 3 made 3 s slower on purpose), one process %v",
		arrayWall.Round(time.Millisecond), singleWall.Round(time.Millisecond))

	// A merge job run again (requeued, or resubmitted by hand) finds the work done.
	again := sl.sbatch(t, env, "--output="+filepath.Join(out+".logs", "%x-%j.out"), "merge.sbatch")
	sl.wait(t, again)
	if j := sl.jobs(t, again); len(j) != 1 || j[0]["JobState"] != "COMPLETED" {
		t.Fatalf("second merge job %s: %v\n%s", again, j, sl.logs(out))
	}
	sameTree(t, out, ref)
}

// TestSlurmFailedShare: when a share fails, afterok never lets the merge run (submit.sh
// asks Slurm to cancel it), nothing is published, and resubmitting only that share
// with a new merge completes the conversion, equal to the single-process run.
func TestSlurmFailedShare(t *testing.T) {
	sl := cluster(t)
	bin := clitest.Build(t)
	dir := t.TempDir()
	out := filepath.Join(dir, "out")
	env := append(sl.env(), conversion(t, bin, out)...)

	failing := wrapBin(t, bin, "2", "echo 'test: share 2 fails' >&2; exit 3")
	ids := sl.submit(t, append(env, "QS_BIN="+failing))
	sl.wait(t, ids.array, ids.merge)
	tasks := sl.jobs(t, ids.array)
	checkTasks(t, tasks, ids.array, []int{0, 1, 3}, "COMPLETED")
	checkTasks(t, tasks, ids.array, []int{2}, "FAILED")
	merge := sl.jobs(t, ids.merge)
	if len(merge) != 1 || merge[0]["JobState"] != "CANCELLED" {
		t.Errorf("merge job %s after a failed share: want CANCELLED, got %v", ids.merge, merge)
	}
	if log, err := os.ReadFile(filepath.Join(out+".logs", "qs-merge-"+ids.merge+".out")); err == nil && bytes.Contains(log, []byte("qs-merge: job")) {
		t.Errorf("the merge ran after a failed share:\n%s", log)
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Fatalf("%s exists after a failed share (Stat: %v)", out, err)
	}

	// Redo share 2 of 4 alone, with a new merge after it.
	retry := sl.submit(t, env, "--array", "2")
	sl.wait(t, retry.array, retry.merge)
	checkTasks(t, sl.jobs(t, retry.array), retry.array, []int{2}, "COMPLETED")
	if j := sl.jobs(t, retry.merge); len(j) != 1 || j[0]["JobState"] != "COMPLETED" {
		t.Fatalf("merge job %s after the retry: %v\n%s", retry.merge, j, sl.logs(out))
	}
	ref := filepath.Join(dir, "single")
	single(t, env, ref)
	sameTree(t, out, ref)
}

// wrapBin writes a QS_BIN that runs shell code in array task task, then (unless the
// code exits) quantstream.
func wrapBin(t *testing.T, bin, task, code string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "quantstream")
	script := fmt.Sprintf("#!/bin/sh\nif [ \"${SLURM_ARRAY_TASK_ID:-}\" = %s ]; then %s; fi\nexec %q \"$@\"\n", task, code, bin)
	if err := os.WriteFile(p, []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
	return p
}

// slurm is a running cluster: the environment its client commands need.
type slurm struct{ conf string }

var (
	clusterOnce sync.Once
	clusterUp   *slurm
	clusterErr  string // why there is none: a skip, or (required) a failure
	// startedHere: this test binary brought the cluster up, so TestMain takes it down.
	startedHere bool
)

func TestMain(m *testing.M) {
	code := m.Run()
	if startedHere {
		down := exec.Command("bash", "../../scripts/slurm/down.sh")
		down.Stdout, down.Stderr = os.Stderr, os.Stderr
		if err := down.Run(); err != nil {
			fmt.Fprintln(os.Stderr, "stopping the Slurm cluster this test started:", err)
		}
	}
	os.Exit(code)
}

// cluster returns the cluster, bringing it up once per test binary, or skips (or
// fails, when QUANTSTREAM_SLURM=1) saying why there is none.
func cluster(t *testing.T) *slurm {
	t.Helper()
	mode := os.Getenv("QUANTSTREAM_SLURM")
	if mode == "0" {
		t.Skip("QUANTSTREAM_SLURM=0: Slurm tests skipped")
	}
	clusterOnce.Do(func() { clusterUp, clusterErr = bringUp(mode == "1") })
	if clusterUp != nil {
		return clusterUp
	}
	if mode == "1" {
		t.Fatalf("QUANTSTREAM_SLURM=1 but no Slurm cluster: %s", clusterErr)
	}
	t.Skipf("no Slurm cluster (QUANTSTREAM_SLURM=1 requires one, and lets scripts/slurm/up.sh install it): %s", clusterErr)
	return nil
}

func bringUp(required bool) (*slurm, string) {
	// Up already (CI brings it up before the tests)?
	if conf, err := runUp("--status"); err == nil {
		return &slurm{conf: conf}, ""
	}
	args := []string{}
	if !required {
		for _, b := range []string{"sbatch", "squeue", "scontrol", "slurmctld", "slurmd", "munged"} {
			if _, err := exec.LookPath(b); err != nil {
				if _, err := os.Stat("/usr/sbin/" + b); err != nil {
					return nil, fmt.Sprintf("%s is not installed (Debian: apt-get install slurm-wlm munge, or run scripts/slurm/up.sh)", b)
				}
			}
		}
		if os.Geteuid() != 0 {
			return nil, "slurmd needs root to start jobs, and this test does not run as root"
		}
		args = append(args, "QS_SLURM_NO_INSTALL=1")
	}
	conf, err := runUp(args...)
	if err != nil {
		return nil, err.Error()
	}
	startedHere = true
	return &slurm{conf: conf}, ""
}

// runUp runs up.sh (arguments of the form K=V are its environment) and returns the
// SLURM_CONF it prints.
func runUp(args ...string) (string, error) {
	// Installing the packages takes ~10 s on a fresh machine, starting the daemons < 1 s.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	var env, flags []string
	for _, a := range args {
		if strings.Contains(a, "=") {
			env = append(env, a)
		} else {
			flags = append(flags, a)
		}
	}
	cmd := exec.CommandContext(ctx, "bash", append([]string{upScript}, flags...)...)
	cmd.Env = append(os.Environ(), env...)
	cmd.WaitDelay = 5 * time.Second // daemons must not keep our pipes open
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("scripts/slurm/up.sh %s: %v\n%s", strings.Join(args, " "), err, stderr.String())
	}
	conf, ok := strings.CutPrefix(strings.TrimSpace(stdout.String()), "export SLURM_CONF=")
	if !ok {
		return "", fmt.Errorf("scripts/slurm/up.sh printed %q, want export SLURM_CONF=…", stdout.String())
	}
	return conf, nil
}

func (s *slurm) env() []string {
	return append(os.Environ(), "SLURM_CONF="+s.conf, "PATH="+os.Getenv("PATH")+":/usr/sbin")
}

type submission struct{ array, merge string }

// submit runs submit.sh with env and args and returns the two job ids it prints; the
// jobs are cancelled when the test ends (a no-op once they are done).
func (s *slurm) submit(t *testing.T, env []string, args ...string) submission {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), "bash", append([]string{"submit.sh"}, args...)...)
	cmd.Env = env
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	b, err := cmd.Output()
	if err != nil {
		t.Fatalf("submit.sh %v: %v\n%s", args, err, stderr.String())
	}
	var sub submission
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "QS_ARRAY_JOB="); ok {
			sub.array = v
		}
		if v, ok := strings.CutPrefix(line, "QS_MERGE_JOB="); ok {
			sub.merge = v
		}
	}
	if !isJobID(sub.array) || !isJobID(sub.merge) {
		t.Fatalf("submit.sh printed %q, want QS_ARRAY_JOB=<id> and QS_MERGE_JOB=<id>", b)
	}
	s.cancelAtEnd(t, sub.array, sub.merge)
	return sub
}

// sbatch submits one script of this directory and returns its job id.
func (s *slurm) sbatch(t *testing.T, env []string, args ...string) string {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), "sbatch", append([]string{"--parsable", "--export=ALL"}, args...)...)
	cmd.Env = append(env, "QS_SLURM_DIR="+abs(t, "."))
	b, err := cmd.CombinedOutput()
	id, _, _ := strings.Cut(strings.TrimSpace(string(b)), ";")
	if err != nil || !isJobID(id) {
		t.Fatalf("sbatch %v: %v\n%s", args, err, b)
	}
	s.cancelAtEnd(t, id)
	return id
}

func (s *slurm) cancelAtEnd(t *testing.T, ids ...string) {
	t.Cleanup(func() {
		cmd := exec.Command("scancel", ids...)
		cmd.Env = s.env()
		_ = cmd.Run() // jobs that are done are not an error worth reporting
	})
}

// wait polls squeue until none of the jobs (array job ids cover all their tasks) is
// pending or running, for at most jobBudget; past it the test fails with the queue,
// the jobs and the daemons' logs.
func (s *slurm) wait(t *testing.T, ids ...string) {
	t.Helper()
	deadline := time.Now().Add(jobBudget)
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		// %F: the array job id of a task, the job id of any other job.
		cmd := exec.CommandContext(t.Context(), "squeue", "-h", "-o", "%F %i %T")
		cmd.Env = s.env()
		b, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("squeue: %v\n%s", err, b)
		}
		left := 0
		for _, line := range strings.Split(string(b), "\n") {
			if f := strings.Fields(line); len(f) > 0 && slices.Contains(ids, f[0]) {
				left++
			}
		}
		if left == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("jobs %v not done after %v:\n%s\n%s", ids, jobBudget, b, s.diagnostics(ids))
		}
		select {
		case <-tick.C:
		case <-t.Context().Done():
			t.Fatal(t.Context().Err())
		}
	}
}

// jobs returns the records `scontrol show job ID` prints (one per array task), as
// key=value maps.
func (s *slurm) jobs(t *testing.T, id string) []map[string]string {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), "scontrol", "-o", "show", "job", id)
	cmd.Env = s.env()
	b, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("scontrol show job %s: %v\n%s", id, err, b)
	}
	var recs []map[string]string
	for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
		rec := map[string]string{}
		for _, kv := range strings.Fields(line) {
			if k, v, ok := strings.Cut(kv, "="); ok {
				rec[k] = v
			}
		}
		recs = append(recs, rec)
	}
	return recs
}

func (s *slurm) diagnostics(ids []string) string {
	var b strings.Builder
	for _, id := range ids {
		cmd := exec.Command("scontrol", "show", "job", id)
		cmd.Env = s.env()
		out, _ := cmd.CombinedOutput()
		b.Write(out)
	}
	state := filepath.Dir(filepath.Dir(s.conf))
	for _, f := range []string{"slurmctld.log", "slurmd.log"} {
		log, _ := os.ReadFile(filepath.Join(state, "log", f))
		lines := strings.Split(string(log), "\n")
		fmt.Fprintf(&b, "--- last lines of %s\n%s\n", f, strings.Join(lines[max(0, len(lines)-30):], "\n"))
	}
	return b.String()
}

// logs returns the job logs of the conversion writing out (submit.sh's default place).
func (s *slurm) logs(out string) string {
	var b strings.Builder
	files, _ := filepath.Glob(filepath.Join(out+".logs", "*.out"))
	for _, f := range files {
		log, _ := os.ReadFile(f)
		fmt.Fprintf(&b, "--- %s\n%s", filepath.Base(f), log)
	}
	return b.String()
}

// checkTasks: the array's records hold the tasks want (array task ids), each in state,
// each a job of its own in the array.
func checkTasks(t *testing.T, recs []map[string]string, array string, want []int, state string) {
	t.Helper()
	seen := map[int]bool{}
	for _, r := range recs {
		id, err := strconv.Atoi(r["ArrayTaskId"])
		if err != nil || r["ArrayJobId"] != array {
			t.Fatalf("record of job %s: ArrayJobId=%q ArrayTaskId=%q, want a task of array %s", r["JobId"], r["ArrayJobId"], r["ArrayTaskId"], array)
		}
		if !slices.Contains(want, id) {
			continue
		}
		if seen[id] {
			t.Errorf("array %s task %d: two records", array, id)
		}
		seen[id] = true
		if r["JobState"] != state {
			t.Errorf("array %s task %d (job %s): state %s (exit %s), want %s", array, id, r["JobId"], r["JobState"], r["ExitCode"], state)
		}
	}
	for _, id := range want {
		if !seen[id] {
			t.Errorf("array %s: no task %d", array, id)
		}
	}
}

var (
	shareStart = regexp.MustCompile(`(?m)^qs-convert: share (\d+)/(\d+) job (\d+) array (\d+) .* start_ns (\d+)$`)
	shareEnd   = regexp.MustCompile(`(?m)^qs-convert: share (\d+)/(\d+) done end_ns (\d+)$`)
	mergeStart = regexp.MustCompile(`(?m)^qs-merge: job (\d+) .* start_ns (\d+)$`)
)

// checkAfterOK: each task's log says it ran share i/4 as array task i, and the merge
// started after the last share had ended — from the scripts' own nanosecond stamps,
// and from Slurm's (one-second) start and end times.
func checkAfterOK(t *testing.T, out string, tasks []map[string]string, merge map[string]string) {
	t.Helper()
	var lastEnd int64
	var lastEndTime string
	for _, r := range tasks {
		file := filepath.Join(out+".logs", fmt.Sprintf("qs-convert-%s_%s.out", r["ArrayJobId"], r["ArrayTaskId"]))
		log, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		s, e := shareStart.FindSubmatch(log), shareEnd.FindSubmatch(log)
		if s == nil || e == nil {
			t.Fatalf("%s: no start and done lines:\n%s", file, log)
		}
		if string(s[1]) != r["ArrayTaskId"] || string(s[2]) != "4" || string(s[3]) != r["JobId"] || string(s[4]) != r["ArrayJobId"] {
			t.Errorf("%s: %q, want share %s/4 job %s array %s", file, s[0], r["ArrayTaskId"], r["JobId"], r["ArrayJobId"])
		}
		end, _ := strconv.ParseInt(string(e[3]), 10, 64)
		lastEnd = max(lastEnd, end)
		lastEndTime = max(lastEndTime, r["EndTime"]) // ISO 8601: sorts as text
	}
	file := filepath.Join(out+".logs", "qs-merge-"+merge["JobId"]+".out")
	log, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	m := mergeStart.FindSubmatch(log)
	if m == nil {
		t.Fatalf("%s: no start line:\n%s", file, log)
	}
	if start, _ := strconv.ParseInt(string(m[2]), 10, 64); start <= lastEnd {
		t.Errorf("merge started at %d ns, before the last share ended (%d ns)", start, lastEnd)
	}
	if merge["StartTime"] < lastEndTime {
		t.Errorf("Slurm started the merge at %s, before the last share ended at %s", merge["StartTime"], lastEndTime)
	}
}

// planShards is the number of output shards the test conversion plans.
func planShards(t *testing.T, bin string) int {
	t.Helper()
	b, err := exec.Command(bin, "plan", "--in", tinyLlama, "--recipe", "W4A16_NVFP4_CFG", "--max-shard-size", "150KB").CombinedOutput()
	if err != nil {
		t.Fatalf("quantstream plan: %v\n%s", err, b)
	}
	n := 0
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "shard ") {
			n++
		}
	}
	return n
}

// single runs the conversion in one process, without Slurm, into ref: qs_single of the
// same commands file the jobs used.
func single(t *testing.T, env []string, ref string) {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), "bash", "-c", `set -euo pipefail; source "${QS_COMMANDS:-commands.sh}"; qs_single "$1"`, "single", ref)
	cmd.Env = env
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("qs_single: %v\n%s", err, b)
	}
}

// sameTree: got and want hold the same files with the same bytes.
func sameTree(t *testing.T, got, want string) {
	t.Helper()
	g, w := readTree(t, got), readTree(t, want)
	if len(w) == 0 {
		t.Fatalf("%s is empty", want)
	}
	for name, wb := range w {
		gb, ok := g[name]
		switch {
		case !ok:
			t.Errorf("%s: missing %s", got, name)
		case !bytes.Equal(gb, wb):
			t.Errorf("%s differs from the single-process run (%d bytes, want %d)", filepath.Join(got, name), len(gb), len(wb))
		}
	}
	for name := range g {
		if _, ok := w[name]; !ok {
			t.Errorf("%s: %s is not in the single-process run", got, name)
		}
	}
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

func abs(t *testing.T, p string) string {
	t.Helper()
	a, err := filepath.Abs(p)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func isJobID(s string) bool {
	_, err := strconv.Atoi(s)
	return s != "" && err == nil
}
