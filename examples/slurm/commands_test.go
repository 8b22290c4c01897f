package slurm_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/quantstream/quantstream/internal/clitest"
)

// TestCommandLines runs each function of commands.sh (no Slurm needed) with a QS_BIN
// that records its arguments, and checks the command lines the jobs would run against
// the flags the built CLI has.
func TestCommandLines(t *testing.T) {
	cli, err := clitest.Load(clitest.Build(t))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	rec := filepath.Join(dir, "record")
	// Each argument on its own NUL-terminated record.
	recorder := filepath.Join(dir, "quantstream")
	if err := os.WriteFile(recorder, []byte("#!/bin/sh\nfor a in \"$@\"; do printf '%s\\0' \"$a\"; done >\""+rec+"\"\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	env := append(os.Environ(),
		"QS_BIN="+recorder,
		"QS_IN=/m/base:/m/calib state", // two inputs, one with a space
		"QS_OUT=/shared/out",
		"QS_RECIPE=W4A16_NVFP4_CFG",
		"QS_FLAGS=--max-memory 1GiB --max-shard-size 2GB",
		"SLURM_CPUS_PER_TASK=6",
	)
	for _, tc := range []struct {
		call  string
		cmd   string
		flags map[string][]string // expected values of these flags
	}{
		{"qs_share 2 4", "convert", map[string][]string{
			"in": {"/m/base", "/m/calib state"}, "out": {"/shared/out"}, "recipe": {"W4A16_NVFP4_CFG"},
			"shard": {"2/4"}, "workers": {"6"}, "max-memory": {"1GiB"}, "max-shard-size": {"2GB"},
		}},
		{"qs_merge", "merge", map[string][]string{"out": {"/shared/out"}}},
		{"qs_single /ref", "convert", map[string][]string{
			"in": {"/m/base", "/m/calib state"}, "out": {"/ref"}, "recipe": {"W4A16_NVFP4_CFG"}, "shard": nil,
		}},
	} {
		t.Run(tc.call, func(t *testing.T) {
			os.Remove(rec)
			cmd := exec.Command("bash", "-c", "set -euo pipefail; source commands.sh; "+tc.call)
			cmd.Env = env
			if b, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("%s: %v\n%s", tc.call, err, b)
			}
			b, err := os.ReadFile(rec)
			if err != nil {
				t.Fatalf("%s did not run QS_BIN: %v", tc.call, err)
			}
			argv := strings.Split(strings.TrimSuffix(string(b), "\x00"), "\x00")
			inv, problems, pending := cli.Check(argv)
			for _, p := range problems {
				t.Errorf("%s runs quantstream %q: %s", tc.call, argv, p)
			}
			for _, p := range pending {
				t.Logf("%s: pending: %s", tc.call, p)
			}
			if inv.Command != tc.cmd {
				t.Errorf("%s runs quantstream %s, want %s", tc.call, inv.Command, tc.cmd)
			}
			for f, want := range tc.flags {
				if got := inv.Flags[f]; !slices.Equal(got, want) {
					t.Errorf("%s: --%s %q, want %q (command line %q)", tc.call, f, got, want, argv)
				}
			}
		})
	}
}

// TestBatchDirectives: sbatch reads #SBATCH lines only before the first command of a
// script; one placed after it would be silently ignored.
func TestBatchDirectives(t *testing.T) {
	scripts, _ := filepath.Glob("*.sbatch")
	if len(scripts) != 2 {
		t.Fatalf("want convert-array.sbatch and merge.sbatch, found %v", scripts)
	}
	for _, s := range scripts {
		b, err := os.ReadFile(s)
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(string(b), "\n")
		if !strings.HasPrefix(lines[0], "#!") {
			t.Errorf("%s: no #! line (sbatch requires one)", s)
		}
		body, directives := false, 0
		for i, line := range lines {
			l := strings.TrimSpace(line)
			switch {
			case strings.HasPrefix(l, "#SBATCH"):
				directives++
				if body {
					t.Errorf("%s:%d: %q after the first command is ignored by sbatch", s, i+1, l)
				}
			case l != "" && !strings.HasPrefix(l, "#"):
				body = true
			}
		}
		if directives == 0 {
			t.Errorf("%s: no #SBATCH directive", s)
		}
		if out, err := exec.Command("bash", "-n", s).CombinedOutput(); err != nil {
			t.Errorf("bash -n %s: %v\n%s", s, err, out)
		}
	}
}
