package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/quantstream/quantstream/arch"
	"github.com/quantstream/quantstream/convert"
	"github.com/quantstream/quantstream/verify"
)

// errUnsound marks a checkpoint verify found problems in: exit status 1 after the
// report is printed.
var errUnsound = errors.New("the checkpoint is not sound")

// engineFlag collects --engine values, repeated or comma-separated.
type engineFlag []string

func (e *engineFlag) String() string { return strings.Join(*e, ",") }
func (e *engineFlag) Set(v string) error {
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			*e = append(*e, s)
		}
	}
	return nil
}

// parseDirAndFlags parses flags before and after the one directory argument, so that
// both "verify --json DIR" and "verify DIR --json" work. -h prints the usage on
// stdout (errHelp: exit status 0), as every command does.
func parseDirAndFlags(fs *flag.FlagSet, args []string, stdout io.Writer) (string, error) {
	usage := fs.Usage // writes to fs.Output()
	fs.Usage = func() {}
	parse := func(args []string) error {
		err := fs.Parse(args)
		if errors.Is(err, flag.ErrHelp) {
			out := fs.Output()
			fs.SetOutput(stdout)
			usage()
			fs.SetOutput(out)
			return errHelp
		}
		if err != nil {
			usage()
			return fmt.Errorf("%w: %v", errUsage, err)
		}
		return nil
	}
	if err := parse(args); err != nil {
		return "", err
	}
	if fs.NArg() == 0 {
		return "", fmt.Errorf("%w: a checkpoint directory is required", errUsage)
	}
	dir := fs.Arg(0)
	if err := parse(fs.Args()[1:]); err != nil {
		return "", err
	}
	if fs.NArg() > 0 {
		return "", fmt.Errorf("%w: unexpected argument %q", errUsage, fs.Arg(0))
	}
	return dir, nil
}

func cmdVerify(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("verify", flag.ContinueOnError)
	fs.SetOutput(stderr)
	asJSON := fs.Bool("json", false, "print the report as JSON")
	against := fs.String("against", "", "source checkpoint: dequantize every quantized weight and compare it with the source's (per-module SNR)")
	var eng engineFlag
	fs.Var(&eng, "engine", "check that this engine's ModelOpt loader accepts the checkpoint: "+strings.Join(verify.Engines(), ", ")+" (repeat or comma-separate)")
	headersOnly := fs.Bool("headers-only", false, "skip the checks that read tensor data (scale values, NaN codes, fused-group equality)")
	quiet := fs.Bool("quiet", false, "no progress output")
	var archFiles multiFlag
	fs.Var(&archFiles, "arch", "model family `FILE` (JSON, see docs/arch-rules.md) whose fusion rules the fused-group check applies, for a model the built-in families do not describe; repeatable")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: quantstream verify [flags] DIR\n\nChecks a ModelOpt-format checkpoint (files, layouts, scales, fused groups, coverage, KV scales).\nExit status 0 when sound, 1 with every problem listed.")
		fs.PrintDefaults()
	}
	dir, err := parseDirAndFlags(fs, args, stdout)
	if err != nil {
		return err
	}
	for _, e := range eng {
		if !contains(verify.Engines(), e) {
			return fmt.Errorf("%w: --engine %q: want one of %s", errUsage, e, strings.Join(verify.Engines(), ", "))
		}
	}
	opt := verify.Options{Against: *against, Engines: eng, HeadersOnly: *headersOnly}
	if len(archFiles) > 0 {
		var fams []*arch.Family
		for _, f := range archFiles {
			fam, err := arch.Load(f)
			if err != nil {
				return err
			}
			fams = append(fams, fam)
		}
		if opt.Families, err = arch.Builtin().With(fams...); err != nil {
			return err
		}
	}
	if !*quiet {
		p := newByteProgress(stderr)
		opt.Progress = p.update
		defer p.done()
	}
	r, err := verify.Verify(ctx, dir, opt)
	if err != nil {
		return err
	}
	if *asJSON {
		b, err := json.MarshalIndent(r, "", "  ")
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s\n", b)
	} else {
		r.WriteText(stdout)
	}
	if !r.OK {
		return fmt.Errorf("%w: %d error(s)", errUnsound, r.Errors)
	}
	return nil
}

func cmdInspect(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("inspect", flag.ContinueOnError)
	fs.SetOutput(stderr)
	asJSON := fs.Bool("json", false, "print as JSON")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: quantstream inspect [--json] DIR\n\nWhat a checkpoint holds, from headers alone: formats, dtypes, shards, the quantization config, unquantized modules.")
		fs.PrintDefaults()
	}
	dir, err := parseDirAndFlags(fs, args, stdout)
	if err != nil {
		return err
	}
	inv, err := verify.Inspect(dir)
	if err != nil {
		return err
	}
	if *asJSON {
		b, err := json.MarshalIndent(inv, "", "  ")
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "%s\n", b)
		return nil
	}
	inv.WriteText(stdout)
	return nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// byteProgress shows the bytes a verify phase has read: one rewritten line on a
// terminal, a log line every few seconds otherwise.
type byteProgress struct {
	w       io.Writer
	tty     bool
	start   time.Time
	last    time.Time
	printed bool
	ended   map[string]bool // phases whose last line is printed
}

func newByteProgress(w io.Writer) *byteProgress {
	tty := false
	if f, ok := w.(*os.File); ok {
		if st, err := f.Stat(); err == nil && st.Mode()&os.ModeCharDevice != 0 {
			tty = true
		}
	}
	now := time.Now()
	return &byteProgress{w: w, tty: tty, start: now, last: now, ended: map[string]bool{}}
}

func (p *byteProgress) update(pr verify.Progress) {
	now := time.Now()
	every := 5 * time.Second
	if p.tty {
		every = 200 * time.Millisecond
	}
	end := pr.Done >= pr.Total
	if end && p.ended[pr.Phase] || !end && now.Sub(p.last) < every {
		return
	}
	p.ended[pr.Phase] = end
	p.last = now
	pct := 100.0
	if pr.Total > 0 {
		pct = 100 * float64(pr.Done) / float64(pr.Total)
	}
	line := fmt.Sprintf("%s: %s / %s (%.1f%%)", pr.Phase, convert.HumanBytes(pr.Done), convert.HumanBytes(pr.Total), pct)
	if p.tty {
		fmt.Fprintf(p.w, "\r\033[K%s", line)
		p.printed = true
	} else {
		fmt.Fprintln(p.w, "progress:", line)
	}
}

func (p *byteProgress) done() {
	if p.tty && p.printed {
		fmt.Fprintln(p.w)
	}
}
