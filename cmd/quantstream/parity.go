package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/quantstream/quantstream/parity"
)

var errCasesFailed = fmt.Errorf("some cases failed")

func cmdParity(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("parity", flag.ContinueOnError)
	group := fs.String("group", "", "run only this group: unit, modules or e2e (default all)")
	match := fs.String("match", "", "run only cases whose id contains this string")
	const usage = "usage: quantstream parity [--group unit|modules|e2e] [--match S] DIR…\n\nEach DIR holds a manifest.json of schema " + parity.Schema + "."
	if err := parseFlags(fs, args, usage, stdout, stderr); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		fmt.Fprintln(stderr, usage)
		fs.PrintDefaults()
		return fmt.Errorf("%w: parity needs at least one golden directory", errUsage)
	}
	switch *group {
	case "", "unit", "modules", "e2e":
	default:
		return fmt.Errorf("%w: --group %q: want unit, modules or e2e", errUsage, *group)
	}
	tmp, err := os.MkdirTemp("", "quantstream-parity-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	var all []parity.Outcome
	for _, dir := range fs.Args() {
		m, err := parity.Load(dir)
		if err != nil {
			return err
		}
		out := parity.Run(ctx, m, parity.Options{Group: *group, Match: *match, TempDir: tmp}, stdout)
		m.Close()
		all = append(all, out...)
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	summary := parity.Summary(all)
	fmt.Fprintln(stdout, summary)
	for _, o := range all {
		if o.Err != nil {
			return errCasesFailed
		}
	}
	return nil
}
