package main

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const qsrc = "../../testdata/golden-qsrc/e2e"

// TestQuantizedSources runs the CLI on the golden-qsrc sources as a user would:
// the compressed-tensors checkpoint is refused with a recipe, with --dequantize and
// by plan — exit status 1, one message naming compressed-tensors, nothing written,
// an existing output left as it was — while a passthrough may copy it; an FP8
// source dequantizes.
func TestQuantizedSources(t *testing.T) {
	tmp := t.TempDir()
	ct := filepath.Join(qsrc, "src_llama_ct")
	kept := filepath.Join(tmp, "kept")
	if err := os.MkdirAll(kept, 0o755); err != nil {
		t.Fatal(err)
	}
	marker := filepath.Join(kept, "mine.txt")
	if err := os.WriteFile(marker, []byte("do not touch"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		args   []string
		code   int
		stdout string
		stderr []string
		absent string
	}{
		{name: "recipe", args: []string{"convert", "--quiet", "--in", ct, "--recipe", "W4A16_NVFP4_CFG", "--out", filepath.Join(tmp, "r")}, code: 1,
			stderr: []string{"compressed-tensors", "pack-quantized", "not read", "block-FP8", "MXFP4"}, absent: filepath.Join(tmp, "r")},
		{name: "dequantize", args: []string{"convert", "--quiet", "--in", ct, "--dequantize", "--out", filepath.Join(tmp, "d")}, code: 1,
			stderr: []string{"compressed-tensors"}, absent: filepath.Join(tmp, "d")},
		{name: "existing output untouched", args: []string{"convert", "--quiet", "--overwrite", "--in", ct, "--dequantize", "--out", kept}, code: 1,
			stderr: []string{"compressed-tensors"}},
		{name: "plan", args: []string{"plan", "--in", ct, "--recipe", "NVFP4_DEFAULT_CFG"}, code: 1,
			stdout: "1 problem(s):", stderr: []string{"the plan has 1 problem(s)"}},
		{name: "passthrough copies it", args: []string{"convert", "--quiet", "--in", ct, "--out", filepath.Join(tmp, "copy")}, code: 0,
			stdout: "passthrough"},
		{name: "dequantize fp8", args: []string{"convert", "--quiet", "--in", filepath.Join(qsrc, "src_qwen3_fp8"), "--dequantize", "--out", filepath.Join(tmp, "bf16")}, code: 0,
			stdout: "dequantize (fp8 to BF16, 7 tensors)"},
		{name: "dequantize with a recipe", args: []string{"convert", "--quiet", "--in", filepath.Join(qsrc, "src_qwen3_fp8"), "--dequantize", "--recipe", "W4A16_NVFP4_CFG", "--out", filepath.Join(tmp, "x")}, code: 1,
			stderr: []string{"--dequantize writes the BF16 checkpoint alone"}, absent: filepath.Join(tmp, "x")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(t.Context(), tc.args, &stdout, &stderr)
			if code != tc.code {
				t.Fatalf("exit code %d, want %d\nstdout:\n%s\nstderr:\n%s", code, tc.code, stdout.String(), stderr.String())
			}
			if !strings.Contains(stdout.String(), tc.stdout) {
				t.Errorf("stdout %q lacks %q", stdout.String(), tc.stdout)
			}
			for _, s := range tc.stderr {
				if !strings.Contains(stderr.String(), s) {
					t.Errorf("stderr %q lacks %q", stderr.String(), s)
				}
			}
			if n := strings.Count(stderr.String(), "compressed-tensors"); n > 1 {
				t.Errorf("the refusal repeats itself (%d times): %s", n, stderr.String())
			}
			if tc.absent != "" {
				if _, err := os.Stat(tc.absent); !errors.Is(err, os.ErrNotExist) {
					t.Errorf("%s exists after exit code %d", tc.absent, code)
				}
			}
		})
	}
	if b, err := os.ReadFile(marker); err != nil || string(b) != "do not touch" {
		t.Errorf("existing output changed: %q %v", b, err)
	}
	if ents, _ := os.ReadDir(kept); len(ents) != 1 {
		t.Errorf("existing output has %d entries", len(ents))
	}
}
