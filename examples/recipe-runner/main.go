// Command recipe-runner converts a checkpoint directory with a ModelOpt recipe
// through convert.Run, the library call behind `quantstream convert`, and prints
// the summary.
//
//	go run ./examples/recipe-runner -in testdata/tiny_llama -out /tmp/out -recipe W4A16_NVFP4_CFG
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"

	"github.com/quantstream/quantstream/convert"
	"github.com/quantstream/quantstream/modelopt"
)

func main() {
	in := flag.String("in", "", "input checkpoint directory (safetensors + config.json)")
	out := flag.String("out", "", "output directory (must not exist or be empty)")
	recipe := flag.String("recipe", "W4A16_NVFP4_CFG", "ModelOpt preset name or recipe YAML/JSON file; empty for a passthrough")
	kv := flag.String("kv-cache", "", "KV-cache preset combined with -recipe (needs calibration data)")
	workers := flag.Int("workers", 0, "workers per stage (0: GOMAXPROCS); the output does not depend on it")
	flag.Parse()
	if *in == "" || *out == "" {
		fmt.Fprintln(os.Stderr, "usage: recipe-runner -in DIR -out DIR [-recipe NAME]")
		os.Exit(2)
	}

	// Ctrl-C cancels the run; convert.Run then leaves no output behind.
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()

	sum, err := convert.Run(ctx, convert.Options{
		Inputs:  []string{*in},
		Out:     *out,
		Recipe:  *recipe,
		KVCache: *kv,
		Workers: *workers,
	})
	switch {
	case errors.Is(err, modelopt.ErrNeedsCalibration):
		fmt.Fprintln(os.Stderr, "recipe-runner:", err)
		fmt.Fprintln(os.Stderr, "recipe-runner: weight-only recipes convert without data, e.g. -recipe W4A16_NVFP4_CFG, INT8_WEIGHT_ONLY_CFG, FP8_PER_CHANNEL_PER_TOKEN_CFG")
		os.Exit(1)
	case err != nil:
		fmt.Fprintln(os.Stderr, "recipe-runner:", err)
		os.Exit(1)
	}
	printSummary(os.Stdout, *out, sum)
}

// printSummary prints the deterministic part of the summary first, then timings.
func printSummary(w io.Writer, out string, s *convert.Summary) {
	fmt.Fprintf(w, "wrote %s\n", out)
	fmt.Fprintf(w, "mode:       %s\n", s.Mode)
	fmt.Fprintf(w, "quant_algo: %s\n", s.QuantAlgo)
	fmt.Fprintf(w, "layers %d, tensors %d, shards %d\n", s.Layers, s.Tensors, s.Shards)
	fmt.Fprintf(w, "bytes in %s, out %s\n", convert.HumanBytes(s.BytesIn), convert.HumanBytes(s.BytesOut))
	formats := make([]string, 0, len(s.ModulesPerFmt))
	for f := range s.ModulesPerFmt {
		formats = append(formats, f)
	}
	sort.Strings(formats)
	for _, f := range formats {
		fmt.Fprintf(w, "  %-16s %d modules\n", f, s.ModulesPerFmt[f])
	}
	if len(s.Unquantized) > 0 {
		fmt.Fprintf(w, "left unquantized: %v\n", s.Unquantized)
	}
	for _, warn := range s.Warnings {
		fmt.Fprintf(w, "warning: %s\n", warn)
	}
	fmt.Fprintf(w, "%.3fs, %.2f GB/s, peak RSS %s\n", s.Seconds, s.GBPerSecond, convert.HumanBytes(s.PeakRSSBytes))
}
