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
// With -synthetic-size it instead writes one large Llama-shaped BF16 checkpoint of
// about that many bytes into -out (for throughput and memory measurements, see
// scripts/rss.sh), and with -calib also calibration state for it:
//
//	go run ./cmd/gentestdata -synthetic-size 2GB -out /tmp/m2g
//	go run ./cmd/gentestdata -synthetic-size 2GB -calib nvfp4 -out /tmp/m2g-nvfp4
//
// -shape picks a real Llama shape instead (tinyllama: hidden 2048, intermediate
// 5632, vocab 32000; llama3-8b: hidden 4096, intermediate 14336, vocab 128256) with
// as many layers as fit the size: -synthetic-size 2.25GB -shape tinyllama is
// TinyLlama-1.1B's 22 layers, -synthetic-size 16.1GB -shape llama3-8b Llama-3-8B's 32.
//
// The -calib directory holds quantizers.json and the amax buffers only; convert
// with --in MODEL --in CALIB. Each directory is replaced as a whole, atomically.
//
// With -deepseek-fp8-experts it writes a block-FP8 checkpoint of DeepSeek-V3's layer
// shape (hidden 7168, experts of 2048, MLA) with that many routed experts per layer
// and -deepseek-fp8-layers layers: 256 experts make one real 11.3 GB MoE layer.
//
//	go run ./cmd/gentestdata -deepseek-fp8-experts 256 -out /tmp/ds-layer
package main

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/quantstream/quantstream/arrowio"
	"github.com/quantstream/quantstream/internal/testgen"
)

func main() {
	out := flag.String("out", "testdata", "directory to write tiny_llama and tiny_moe into (or the synthetic checkpoint)")
	size := flag.String("synthetic-size", "", "write one synthetic Llama of about this size (e.g. 2GB, 512MiB) into -out")
	maxTensor := flag.String("max-tensor", "512MiB", "largest tensor of the synthetic Llama")
	shape := flag.String("shape", "", "with -synthetic-size: a real Llama shape (tinyllama, llama3-8b) with as many layers as fit the size; -max-tensor is then ignored")
	calib := flag.String("calib", "", "with -synthetic-size: write calibration state (nvfp4 or fp8) for that Llama into -out instead")
	dsExperts := flag.Int("deepseek-fp8-experts", 0, "write a DeepSeek-V3-shaped block-FP8 checkpoint with this many routed experts per layer into -out")
	dsLayers := flag.Int("deepseek-fp8-layers", 1, "with -deepseek-fp8-experts: the number of layers")
	flag.Parse()
	var err error
	if *dsExperts > 0 {
		c := testgen.DeepSeekV3Shape(*dsLayers, *dsExperts)
		c.Vocab = 32000 // the embeddings of a real vocabulary add nothing to measure
		err = testgen.WriteDeepSeekFP8(*out, c, arrowio.WriteOptions{Overwrite: true})
	} else if *size != "" {
		err = synthetic(*out, *size, *maxTensor, *shape, *calib)
	} else {
		err = run(*out)
	}
	if err != nil {
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

func synthetic(out, size, maxTensor, shape, calib string) error {
	n, err := parseSize(size)
	if err != nil {
		return err
	}
	mt, err := parseSize(maxTensor)
	if err != nil {
		return err
	}
	var c testgen.LlamaConfig
	if shape != "" {
		s, ok := testgen.LlamaShapes[shape]
		if !ok {
			return fmt.Errorf("-shape %q: want tinyllama or llama3-8b", shape)
		}
		if c, err = testgen.FitLlama(s, n); err != nil {
			return err
		}
	} else if c, err = testgen.SyntheticLlama(n, mt); err != nil {
		return err
	}
	if calib != "" {
		if err := testgen.WriteSyntheticCalib(out, c, calib, true); err != nil {
			return err
		}
		fmt.Printf("wrote %s calibration state for %+v to %s\n", calib, c, out)
		return nil
	}
	if err := testgen.WriteLlama(out, c, arrowio.WriteOptions{Overwrite: true}); err != nil {
		return err
	}
	fmt.Printf("wrote %+v to %s\n", c, out)
	return nil
}

// parseSize reads 2GB (decimal), 512MiB (binary) or a plain byte count.
func parseSize(s string) (int64, error) {
	units := []struct {
		suffix string
		mul    int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"GB", 1e9}, {"MB", 1e6}, {"KB", 1e3}, {"B", 1}}
	mul := int64(1)
	for _, u := range units {
		if strings.HasSuffix(s, u.suffix) {
			s, mul = strings.TrimSuffix(s, u.suffix), u.mul
			break
		}
	}
	v, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
	if err != nil || v <= 0 {
		return 0, fmt.Errorf("size %q: want e.g. 2GB, 512MiB or a byte count", s)
	}
	return int64(v * float64(mul)), nil
}
