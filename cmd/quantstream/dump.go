package main

import (
	"context"
	"flag"
	"fmt"
	"io"

	"github.com/quantstream/quantstream/convert"
)

func cmdDumpArrow(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("dump-arrow", flag.ContinueOnError)
	var in multiFlag
	fs.Var(&in, "in", "input directory; repeat to overlay")
	out := fs.String("out", "", "output Arrow IPC stream file (one record batch per layer)")
	overwrite := fs.Bool("overwrite", false, "replace an existing output file")
	if err := parseFlags(fs, args, "usage: quantstream dump-arrow --in DIR [--in DIR …] --out FILE.arrow\n\nRead it with pyarrow.ipc.open_stream or DuckDB.", stdout, stderr); err != nil {
		return err
	}
	if len(in) == 0 || *out == "" {
		return fmt.Errorf("%w: --in and --out are required", errUsage)
	}
	n, err := convert.DumpArrow(ctx, in, *out, *overwrite)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "wrote %s: %d layers\n", *out, n)
	return nil
}
