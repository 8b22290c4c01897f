package main

import (
	"context"
	"flag"
	"fmt"
	"io"

	"github.com/quantstream/quantstream/arrowio"
)

func cmdMerge(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("merge", flag.ContinueOnError)
	out := fs.String("out", "", "the output directory the shares were converted for (their --out)")
	if err := parseFlags(fs, args, `usage: quantstream merge --out DIR

Publishes the output of a conversion run as shares (convert --shard I/N --out DIR,
one per worker): checks that every share is complete and of the same conversion
(fingerprint), writes the provenance file and moves DIR.partial/out to DIR
atomically. A share missing or unfinished is refused, naming it. Safe to retry: run
again after a success, it finds DIR published and changes nothing.`, stdout, stderr); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("%w: unexpected argument %q", errUsage, fs.Arg(0))
	}
	if *out == "" {
		return fmt.Errorf("%w: --out is required", errUsage)
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	st, err := arrowio.Merge(*out)
	if err != nil {
		return err
	}
	if st.AlreadyDone {
		fmt.Fprintf(stdout, "%s is already merged (%d shards, fingerprint %s): nothing to do\n", *out, st.Shards, st.Fingerprint)
		return nil
	}
	fmt.Fprintf(stdout, "merged %s: %d shards, fingerprint %s\n", *out, st.Shards, st.Fingerprint)
	return nil
}
