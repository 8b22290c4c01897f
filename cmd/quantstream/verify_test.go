package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestVerifyAndInspectCommands(t *testing.T) {
	e2e := golden + "/e2e/"
	out := filepath.Join(t.TempDir(), "mx")
	for _, tc := range []struct {
		name   string
		args   []string
		code   int
		stdout []string
		stderr []string
		json   bool
	}{
		{name: "sound", args: []string{"verify", e2e + "nvfp4/expected"}, code: 0, stdout: []string{"quant_algo NVFP4", "nvfp4", "sound: 0 warning(s)"}},
		{name: "flags after the directory", args: []string{"verify", e2e + "nvfp4/expected", "--json", "--quiet"}, code: 0, json: true, stdout: []string{`"ok": true`, `"data_checked": true`}},
		{name: "against", args: []string{"verify", "--against", e2e + "base_llama", "--quiet", e2e + "df_w4a16_nvfp4/expected"}, code: 0, stdout: []string{"SNR against the source", "w4a16_nvfp4", "floor 8.0"}},
		{name: "engine refuses", args: []string{"verify", "--engine", "vllm", "--quiet", e2e + "df_mxfp4/expected"}, code: 1,
			stdout: []string{"vllm (main@", "loads no", "quant_algo mxfp4 (read as MXFP4)", "NOT sound"}, stderr: []string{"not sound: 1 error(s)"}},
		{name: "engines comma-separated", args: []string{"verify", "--engine", "vllm,trtllm", "--quiet", "--headers-only", e2e + "nvfp4/expected"}, code: 0,
			stdout: []string{"vllm (main@", "trtllm (main@", "data checks skipped"}},
		{name: "unknown engine", args: []string{"verify", "--engine", "tgi", e2e + "nvfp4/expected"}, code: 2, stderr: []string{`--engine "tgi"`}},
		{name: "no directory", args: []string{"verify"}, code: 2, stderr: []string{"a checkpoint directory is required"}},
		{name: "missing directory", args: []string{"verify", filepath.Join(t.TempDir(), "nope")}, code: 1, stderr: []string{"no such file"}},
		{name: "inspect", args: []string{"inspect", e2e + "moe_nvfp4/expected"}, code: 0, stdout: []string{"quant_algo NVFP4", "model.layers.*.mlp.gate", "F8_E4M3"}},
		{name: "inspect json", args: []string{"inspect", "--json", e2e + "moe_nvfp4/expected"}, code: 0, json: true, stdout: []string{`"format": "nvfp4"`}},
		{name: "convert refused for the engine", args: []string{"convert", "--in", tinyLlama, "--out", out, "--recipe", "MXFP4_DEFAULT_CFG", "--engine", "vllm"}, code: 1,
			stderr: []string{"target engine cannot load the output (vllm", "quant_algo mxfp4"}},
		{name: "plan refused for the engine", args: []string{"plan", "--in", tinyLlama, "--recipe", "MXFP4_DEFAULT_CFG", "--engine", "vllm"}, code: 1,
			stdout: []string{"1 problem(s)", "quant_algo mxfp4"}},
		{name: "convert unknown engine", args: []string{"convert", "--in", tinyLlama, "--out", out, "--engine", "tgi"}, code: 2, stderr: []string{`--engine "tgi"`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(t.Context(), tc.args, &stdout, &stderr)
			if code != tc.code {
				t.Errorf("exit %d, want %d\nstdout:\n%s\nstderr:\n%s", code, tc.code, stdout.String(), stderr.String())
			}
			for _, s := range tc.stdout {
				if !strings.Contains(stdout.String(), s) {
					t.Errorf("stdout lacks %q:\n%s", s, stdout.String())
				}
			}
			for _, s := range tc.stderr {
				if !strings.Contains(stderr.String(), s) {
					t.Errorf("stderr lacks %q:\n%s", s, stderr.String())
				}
			}
			if tc.json && !json.Valid(stdout.Bytes()) {
				t.Errorf("stdout is not JSON:\n%s", stdout.String())
			}
		})
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Errorf("a refused conversion left %s: %v", out, err)
	}
}
