package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/quantstream/quantstream/arrowio"
	"github.com/quantstream/quantstream/convert"
	"github.com/quantstream/quantstream/pipeline"
	"github.com/quantstream/quantstream/quant"
	"github.com/quantstream/quantstream/verify"
)

// maxWorkers bounds --workers: beyond a few per core they only add goroutines and
// layers in flight.
const maxWorkers = 1024

// multiFlag collects a repeatable string flag (--in A --in B).
type multiFlag []string

func (m *multiFlag) String() string     { return strings.Join(*m, ",") }
func (m *multiFlag) Set(v string) error { *m = append(*m, v); return nil }

// sizeFlag parses sizes such as 5GB (decimal) or 256MiB (binary).
type sizeFlag int64

func (s *sizeFlag) String() string { return fmt.Sprint(int64(*s)) }
func (s *sizeFlag) Set(v string) error {
	if v == "0" {
		*s = 0 // "no bound", as the flag's help says
		return nil
	}
	n, err := arrowio.ParseSize(v)
	if err != nil {
		return err
	}
	*s = sizeFlag(n)
	return nil
}

type convertFlags struct {
	fs           *flag.FlagSet
	in           multiFlag
	out          string
	overwrite    bool
	workers      int
	maxMemory    sizeFlag
	maxShardSize sizeFlag
	recipe       string
	kvCache      string
	divMode      string
	engine       string
	dequantize   bool
	castMXFP4    bool
	report       string
	quiet        bool
}

func newConvertFlags(name string, stderr io.Writer, withOut bool) *convertFlags {
	f := &convertFlags{fs: flag.NewFlagSet(name, flag.ContinueOnError)}
	fs := f.fs
	fs.SetOutput(stderr)
	fs.Var(&f.in, "in", "input directory; repeat to overlay (a later directory's tensors and files replace an earlier one's)")
	if withOut {
		fs.StringVar(&f.out, "out", "", "output directory (written atomically)")
		fs.BoolVar(&f.overwrite, "overwrite", false, "replace a non-empty output directory")
		fs.StringVar(&f.report, "report", "", "also write the final summary as JSON to this file")
		fs.BoolVar(&f.quiet, "quiet", false, "no progress output")
	}
	fs.IntVar(&f.workers, "workers", 0, "worker goroutines per stage (0: one per CPU); output bytes do not depend on it")
	fs.Var(&f.maxMemory, "max-memory", "bound on tensor bytes in flight, e.g. 8GiB (0: no bound)")
	f.maxShardSize = sizeFlag(arrowio.DefaultMaxShardSize)
	fs.Var(&f.maxShardSize, "max-shard-size", "split output shards at this size, e.g. 5GB (decimal) or 4GiB (binary)")
	fs.StringVar(&f.recipe, "recipe", "", "ModelOpt preset (e.g. W4A16_NVFP4_CFG) or recipe YAML file, for data-free conversion")
	fs.StringVar(&f.kvCache, "kv-cache", "", "KV-cache preset to combine with --recipe: fp8_cast or nvfp4_cast (hf_ptq's cast modes, data-free), or FP8_KV_CFG / NVFP4_KV_CFG, which need calibration data")
	fs.StringVar(&f.divMode, "div-mode", "ieee", "scalar division as PyTorch does it on cpu (ieee) or on cuda (cuda)")
	fs.StringVar(&f.engine, "engine", "", "refuse, before reading data, an output this engine's ModelOpt loader would not load: "+strings.Join(verify.Engines(), ", "))
	fs.BoolVar(&f.dequantize, "dequantize", false, "write a block-FP8 or MXFP4 source as the BF16 checkpoint it stores (source names and shards, no scales)")
	fs.BoolVar(&f.castMXFP4, "cast-mxfp4-to-nvfp4", false, "with an NVFP4 --recipe on a gpt-oss MXFP4 source: export the experts losslessly as static NVFP4 (hf_ptq's --cast_mxfp4_to_nvfp4)")
	return f
}

func (f *convertFlags) parse(args []string) (convert.Options, error) {
	if err := f.fs.Parse(args); err != nil {
		return convert.Options{}, fmt.Errorf("%w: %v", errUsage, err)
	}
	if f.fs.NArg() > 0 {
		return convert.Options{}, fmt.Errorf("%w: unexpected argument %q", errUsage, f.fs.Arg(0))
	}
	if len(f.in) == 0 {
		return convert.Options{}, fmt.Errorf("%w: --in is required", errUsage)
	}
	if f.workers < 0 || f.workers > maxWorkers {
		return convert.Options{}, fmt.Errorf("%w: --workers %d: want 0 (one per CPU) to %d", errUsage, f.workers, maxWorkers)
	}
	if f.engine != "" && !slices.Contains(verify.Engines(), f.engine) {
		return convert.Options{}, fmt.Errorf("%w: --engine %q: want one of %s", errUsage, f.engine, strings.Join(verify.Engines(), ", "))
	}
	var mode quant.DivMode
	switch f.divMode {
	case "ieee", "cpu":
		mode = quant.DivIEEE
	case "cuda":
		mode = quant.DivCUDA
	default:
		return convert.Options{}, fmt.Errorf("%w: --div-mode %q: want ieee or cuda", errUsage, f.divMode)
	}
	return convert.Options{
		Inputs:           f.in,
		Out:              f.out,
		Overwrite:        f.overwrite,
		Workers:          f.workers,
		MaxMemory:        int64(f.maxMemory),
		MaxShardSize:     int64(f.maxShardSize),
		Recipe:           f.recipe,
		KVCache:          f.kvCache,
		DivMode:          mode,
		Engine:           f.engine,
		Dequantize:       f.dequantize,
		CastMXFP4ToNVFP4: f.castMXFP4,
	}, nil
}

func cmdConvert(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	f := newConvertFlags("convert", stderr, true)
	f.fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: quantstream convert --in DIR [--in DIR …] --out DIR [flags]")
		f.fs.PrintDefaults()
	}
	opt, err := f.parse(args)
	if err != nil {
		return err
	}
	if opt.Out == "" {
		return fmt.Errorf("%w: --out is required", errUsage)
	}
	// Like save_pretrained, create missing parents; the output directory itself only
	// appears, whole, when the conversion succeeds.
	if err := os.MkdirAll(filepath.Dir(filepath.Clean(opt.Out)), 0o755); err != nil {
		return fmt.Errorf("creating the parent of --out: %w", err)
	}
	var prog *progressPrinter
	if !f.quiet {
		prog = newProgressPrinter(stderr)
		opt.Progress = prog.update
	}
	sum, err := convert.Run(ctx, opt)
	if prog != nil {
		prog.done()
	}
	if err != nil {
		return err
	}
	printSummary(stdout, opt.Out, sum)
	if f.report != "" {
		b, _ := json.MarshalIndent(sum, "", "  ")
		if err := os.WriteFile(f.report, append(b, '\n'), 0o644); err != nil {
			return fmt.Errorf("writing report: %w", err)
		}
	}
	return nil
}

func printSummary(w io.Writer, out string, s *convert.Summary) {
	fmt.Fprintf(w, "wrote %s: %s, %d layer groups (decoder layers and the rest), %d tensors in %d shard(s)\n", out, s.Mode, s.Layers, s.Tensors, s.Shards)
	fmt.Fprintf(w, "bytes in %s, out %s; %.2fs, %.2f GB/s; peak RSS %s\n",
		convert.HumanBytes(s.BytesIn), convert.HumanBytes(s.BytesOut), s.Seconds, s.GBPerSecond, convert.HumanBytes(s.PeakRSSBytes))
	if s.QuantAlgo != "" {
		fmt.Fprintf(w, "quant_algo %s\n", s.QuantAlgo)
	}
	for _, k := range slices.Sorted(maps.Keys(s.ModulesPerFmt)) {
		fmt.Fprintf(w, "  %-16s %d modules\n", k, s.ModulesPerFmt[k])
	}
	printList(w, "left unquantized (quantizers disabled by the recipe or state, or MoE routers; in exclude_modules)", s.Unquantized)
	printList(w, "expert input amax filled (experts that saw no calibration tokens)", s.FilledAmax)
	for _, warn := range s.Warnings {
		fmt.Fprintf(w, "warning: %s\n", warn)
	}
}

// progressPrinter shows bytes done, GB/s and ETA: one rewritten line on a terminal,
// a log line every few seconds otherwise.
type progressPrinter struct {
	w        io.Writer
	tty      bool
	start    time.Time
	lastLine time.Time
	printed  bool
}

func newProgressPrinter(w io.Writer) *progressPrinter {
	tty := false
	if f, ok := w.(*os.File); ok {
		if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			tty = true
		}
	}
	return &progressPrinter{w: w, tty: tty, start: time.Now()}
}

func (p *progressPrinter) update(pr pipeline.Progress) {
	now := time.Now()
	last := pr.Layers == pr.TotalLayers
	if !p.tty && !last && now.Sub(p.lastLine) < 5*time.Second {
		return
	}
	p.lastLine = now
	el := now.Sub(p.start).Seconds()
	rate := 0.0
	if el > 0 {
		rate = float64(pr.Bytes) / el
	}
	eta := "?"
	if rate > 0 {
		eta = time.Duration(float64(pr.TotalBytes-pr.Bytes) / rate * float64(time.Second)).Round(time.Second).String()
	}
	pct := 100.0
	if pr.TotalBytes > 0 {
		pct = 100 * float64(pr.Bytes) / float64(pr.TotalBytes)
	}
	line := fmt.Sprintf("layer %d/%d  %s / %s (%.1f%%)  %.2f GB/s  ETA %s",
		pr.Layers, pr.TotalLayers, convert.HumanBytes(pr.Bytes), convert.HumanBytes(pr.TotalBytes), pct, rate/1e9, eta)
	if p.tty {
		fmt.Fprintf(p.w, "\r\033[K%s", line)
		p.printed = true
	} else {
		fmt.Fprintln(p.w, "progress:", line)
	}
}

func (p *progressPrinter) done() {
	if p.tty && p.printed {
		fmt.Fprintln(p.w)
	}
}

// printList prints a titled list, shortened past a dozen entries: a MoE model can
// fill thousands of expert amaxes, and --report has them all.
func printList(w io.Writer, title string, items []string) {
	if len(items) == 0 {
		return
	}
	fmt.Fprintf(w, "%s (%d):\n", title, len(items))
	const most = 12
	for i, it := range items {
		if i == most {
			fmt.Fprintf(w, "  … and %d more (all of them in --report)\n", len(items)-most)
			break
		}
		fmt.Fprintf(w, "  %s\n", it)
	}
}
