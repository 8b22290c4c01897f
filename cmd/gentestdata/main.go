// Command gentestdata regenerates the tiny synthetic checkpoints committed under
// testdata/: tiny_llama (Llama-shaped, dense BF16, GQA, untied lm_head, two shards
// with an index) and tiny_moe (Qwen3-MoE-shaped, router plus per-expert weights,
// two shards with an index). Output is deterministic (fixed seeds, data a function
// of the tensor name), so rerunning it changes nothing unless the generator or
// the writer changed; arrowio's tests check the committed files against it.
//
// Usage, from the repository root:
//
//	go run ./cmd/gentestdata -update
//
// Without -update it writes into a new temporary directory and prints its path.
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"

	"github.com/quantstream/quantstream/internal/testgen"
)

func main() {
	update := flag.Bool("update", false, "replace testdata/tiny_llama and testdata/tiny_moe")
	out := flag.String("out", "testdata", "directory to write tiny_llama and tiny_moe into (with -update)")
	flag.Parse()
	if err := run(*update, *out); err != nil {
		fmt.Fprintln(os.Stderr, "gentestdata:", err)
		os.Exit(1)
	}
}

func run(update bool, out string) error {
	if !update {
		tmp, err := os.MkdirTemp("", "gentestdata-")
		if err != nil {
			return err
		}
		out = tmp
	}
	if err := testgen.WriteTinyLlama(filepath.Join(out, "tiny_llama"), true); err != nil {
		return err
	}
	if err := testgen.WriteTinyMoE(filepath.Join(out, "tiny_moe"), true); err != nil {
		return err
	}
	fmt.Println("wrote", filepath.Join(out, "tiny_llama"), "and", filepath.Join(out, "tiny_moe"))
	return nil
}
