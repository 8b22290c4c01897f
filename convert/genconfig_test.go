package convert

import (
	"bytes"
	"os"
	"testing"
)

// The golden checkpoints have no generation_config.json in their inputs; ModelOpt's
// export (through save_pretrained) writes the one transformers derives.
func TestGenerationConfigFromModel(t *testing.T) {
	for _, tc := range []struct{ config, want string }{
		{"../testdata/golden/e2e/base_llama/config.json", "../testdata/golden/e2e/fp8/expected/generation_config.json"},
		{"../testdata/golden/e2e/base_moe/config.json", "../testdata/golden/e2e/moe_fp8/expected/generation_config.json"},
	} {
		cfg, err := os.ReadFile(tc.config)
		if err != nil {
			t.Fatal(err)
		}
		want, err := os.ReadFile(tc.want)
		if err != nil {
			t.Fatal(err)
		}
		got, err := generationConfigFromModel(cfg)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s:\n%s\nwant\n%s", tc.config, got, want)
		}
	}
}
