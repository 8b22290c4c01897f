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
	shard        string
	arch         multiFlag
}

// newConvertFlags defines convert's flags; plan takes the same ones.
func newConvertFlags(name string) *convertFlags {
	f := &convertFlags{fs: flag.NewFlagSet(name, flag.ContinueOnError)}
	fs := f.fs
	fs.Var(&f.in, "in", "input directory; repeat to overlay (a later directory's tensors and files replace an earlier one's)")
	fs.StringVar(&f.out, "out", "", "output directory (published whole when complete; assembled in DIR.partial, which a rerun continues from)")
	fs.BoolVar(&f.overwrite, "overwrite", false, "replace a non-empty output directory")
	fs.StringVar(&f.report, "report", "", "also write the final summary as JSON to this file")
	fs.BoolVar(&f.quiet, "quiet", false, "no progress output")
	fs.StringVar(&f.shard, "shard", "", "convert only share `I/N` (0 <= I < N) of the output shards into DIR.partial, for 'quantstream merge --out DIR'; shares of one conversion run at once, on any machines sharing DIR's file system")
	fs.IntVar(&f.workers, "workers", 0, "worker goroutines per stage (0: one per CPU); output bytes do not depend on it")
	fs.Var(&f.maxMemory, "max-memory", "bound on tensor bytes in flight, e.g. 8GiB (0: no bound)")
	f.maxShardSize = sizeFlag(arrowio.DefaultMaxShardSize)
	fs.Var(&f.maxShardSize, "max-shard-size", "split output shards at this size, e.g. 5GB (decimal) or 4GiB (binary)")
	fs.StringVar(&f.recipe, "recipe", "", "ModelOpt preset (e.g. W4A16_NVFP4_CFG) or recipe YAML file, for data-free conversion")
	fs.StringVar(&f.kvCache, "kv-cache", "", "KV-cache preset to combine with --recipe: fp8_cast or nvfp4_cast (hf_ptq's cast modes, data-free), or FP8_KV_CFG / NVFP4_KV_CFG, which need calibration data")
	fs.Var(&f.arch, "arch", "model family `FILE` (JSON, see docs/arch-rules.md) for a model the built-in families do not describe, or to replace a built-in family's rules; repeatable")
	fs.StringVar(&f.divMode, "div-mode", "ieee", "scalar division as PyTorch does it on cpu (ieee) or on cuda (cuda)")
	fs.StringVar(&f.engine, "engine", "", "refuse, before reading data, an output this engine's ModelOpt loader would not load: "+strings.Join(verify.Engines(), ", "))
	fs.BoolVar(&f.dequantize, "dequantize", false, "write a block-FP8 or MXFP4 source as the BF16 checkpoint it stores (source names and shards, no scales)")
	fs.BoolVar(&f.castMXFP4, "cast-mxfp4-to-nvfp4", false, "with an NVFP4 --recipe on a gpt-oss MXFP4 source: export the experts losslessly as static NVFP4 (hf_ptq's --cast_mxfp4_to_nvfp4)")
	return f
}

func (f *convertFlags) parse(args []string, usage string, stdout, stderr io.Writer) (convert.Options, error) {
	if err := parseFlags(f.fs, args, usage, stdout, stderr); err != nil {
		return convert.Options{}, err
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
	var share arrowio.Share
	if f.shard != "" {
		s, err := arrowio.ParseShare(f.shard)
		if err != nil {
			return convert.Options{}, fmt.Errorf("%w: --shard: %v", errUsage, err)
		}
		share = s
		if f.out == "" {
			return convert.Options{}, fmt.Errorf("%w: --shard needs --out: the shares of a conversion meet in its work directory", errUsage)
		}
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
		Share:            share,
		Arch:             f.arch,
	}, nil
}

// onShardDone, when set (by the tests), is called as each output shard is
// complete and recorded.
var onShardDone func(name string)

const convertUsage = `usage: quantstream convert --in DIR [--in DIR …] --out DIR [--shard I/N] [flags]

The output is assembled in DIR.partial and appears whole, atomically, when complete.
Each output shard is recorded there once complete: the same command run again after
an interruption (Ctrl-C, kill -9, a node lost) keeps those and converts the rest,
and the output is byte for byte that of an uninterrupted run. A run with other
inputs or settings (another fingerprint) reuses nothing. Run again on a complete
output, it does nothing. With --shard I/N it converts one share for
'quantstream merge --out DIR'.`

func cmdConvert(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	f := newConvertFlags("convert")
	opt, err := f.parse(args, convertUsage, stdout, stderr)
	if err != nil {
		return err
	}
	if opt.Out == "" {
		return fmt.Errorf("%w: --out is required", errUsage)
	}
	if f.report != "" {
		// Found now, not once the conversion is done.
		if err := checkReportPath(f.report, opt.Out); err != nil {
			return err
		}
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
	opt.OnShardDone = onShardDone
	sum, err := convert.Run(ctx, opt)
	if prog != nil {
		prog.done()
	}
	if err != nil {
		return err
	}
	switch {
	case sum.UpToDate:
		fmt.Fprintf(stdout, "%s is already complete: converted with the same inputs and settings (fingerprint %s); nothing to do (--overwrite converts again)\n", opt.Out, sum.Fingerprint)
	case sum.Share != "":
		printShare(stdout, opt.Out, sum)
	default:
		printSummary(stdout, opt.Out, sum)
	}
	if f.report != "" {
		b, _ := json.MarshalIndent(sum, "", "  ")
		if err := writeReport(f.report, append(b, '\n')); err != nil {
			return fmt.Errorf("writing report: %w", err)
		}
	}
	return nil
}

// checkReportPath refuses, before anything is converted, a --report path that
// could not be written: in a directory that does not exist or is not writable, a
// directory itself, or inside the output (which is replaced when published).
func checkReportPath(report, out string) error {
	abs, err := filepath.Abs(report)
	if err != nil {
		return fmt.Errorf("%w: --report %s: %v", errUsage, report, err)
	}
	o, _ := filepath.Abs(out)
	for _, d := range []string{o, o + arrowio.PartialSuffix} {
		if rel, err := filepath.Rel(d, abs); err == nil && rel != ".." && !strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
			return fmt.Errorf("%w: --report %s lies inside %s, which the conversion replaces: write it elsewhere", errUsage, report, d)
		}
	}
	if st, err := os.Stat(abs); err == nil {
		if !st.Mode().IsRegular() {
			return fmt.Errorf("%w: --report %s exists and is not a regular file", errUsage, report)
		}
		fh, err := os.OpenFile(abs, os.O_WRONLY, 0)
		if err != nil {
			return fmt.Errorf("%w: --report %s: %v", errUsage, report, err)
		}
		fh.Close()
	}
	dir := filepath.Dir(abs)
	if st, err := os.Stat(dir); err != nil || !st.IsDir() {
		return fmt.Errorf("%w: --report %s: no directory %s to write it in", errUsage, report, dir)
	}
	probe, err := os.CreateTemp(dir, ".quantstream-report-*")
	if err != nil {
		return fmt.Errorf("%w: --report %s: cannot write in %s: %v", errUsage, report, dir, err)
	}
	probe.Close()
	os.Remove(probe.Name())
	return nil
}

// writeReport writes the report under a temporary name and renames it, so that an
// existing report is replaced only by a whole one.
func writeReport(path string, b []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".quantstream-report-*")
	if err != nil {
		return err
	}
	_, err = tmp.Write(b)
	if err == nil {
		err = tmp.Chmod(0o644)
	}
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		os.Remove(tmp.Name())
	}
	return err
}

func printShare(w io.Writer, out string, s *convert.Summary) {
	fmt.Fprintf(w, "share %s of %s: %s; wrote %d output shard(s), %d already complete, of %d in all; read %s\n",
		s.Share, out, s.Mode, s.ShardsWritten, s.ShardsKept, s.Shards, convert.HumanBytes(s.BytesIn))
	if s.ShardsWritten+s.ShardsKept == 0 {
		fmt.Fprintf(w, "this share has no output shard (the output has %d): nothing to do\n", s.Shards)
	}
	fmt.Fprintf(w, "once every share is complete: quantstream merge --out %s\n", out)
	printNotes(w, s)
}

func printNotes(w io.Writer, s *convert.Summary) {
	for _, r := range s.Removed {
		fmt.Fprintf(w, "removed stale work: %s\n", r)
	}
	for _, warn := range s.Warnings {
		fmt.Fprintf(w, "warning: %s\n", warn)
	}
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
	if s.ShardsKept > 0 {
		fmt.Fprintf(w, "resumed: %d of %d shards kept from an interrupted run of this conversion, %d written\n", s.ShardsKept, s.Shards, s.ShardsWritten)
	}
	printNotes(w, s)
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
