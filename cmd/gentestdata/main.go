// Command gentestdata regenerates the tiny synthetic checkpoints committed under
// testdata/: tiny_llama (Llama-shaped, dense BF16, GQA, untied lm_head, two shards
// with an index) and tiny_moe (Qwen3-MoE-shaped, router plus per-expert weights,
// two shards with an index). Output is deterministic (fixed seeds, data a function
// of the tensor name), so rerunning it changes nothing unless the generator or
// the writer changed; arrowio's TestTestdataUpToDate checks the committed files.
//
// Usage, from the repository root (or make testdata):
//
//	go run ./cmd/gentestdata -out testdata
//
// Each checkpoint directory is replaced as a whole, atomically.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/quantstream/quantstream/internal/testgen"
)

func main() {
	out := flag.String("out", "testdata", "directory to write tiny_llama and tiny_moe into")
	flag.Parse()
	if err := run(*out); err != nil {
		fmt.Fprintln(os.Stderr, "gentestdata:", err)
		os.Exit(1)
	}
}

func run(out string) error {
	if err := testgen.WriteTinyLlama(filepath.Join(out, "tiny_llama"), true); err != nil {
		return err
	}
	if err := testgen.WriteTinyMoE(filepath.Join(out, "tiny_moe"), true); err != nil {
		return err
	}
	fmt.Println("wrote", filepath.Join(out, "tiny_llama"), "and", filepath.Join(out, "tiny_moe"))
	return nil
}
