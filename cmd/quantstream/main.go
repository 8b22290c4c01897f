// Command quantstream converts LLM checkpoints into ModelOpt-compatible quantized
// checkpoints layer by layer, and checks itself against ModelOpt golden sets.
//
//	quantstream convert --in DIR [--in DIR …] --out DIR [--shard I/N] [flags]
//	quantstream plan    --in DIR [--in DIR …] [--out DIR] [flags]
//	quantstream merge   --out DIR
//	quantstream parity  [--group unit|modules|e2e] DIR…
//	quantstream dump-arrow --in DIR [--in DIR …] --out FILE.arrow
//	quantstream verify  [--json] [--against SOURCE] [--engine vllm|sglang|trtllm] DIR
//	quantstream inspect [--json] DIR
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/quantstream/quantstream/convert"
)

const usage = `usage: quantstream <command> [flags]

commands:
  convert      convert a checkpoint (passthrough, calibrated ModelOpt state, saved
               ModelOpt checkpoint or data-free recipe) into a new directory; a
               rerun after a crash continues; --shard I/N converts one share
  plan         print the conversion plan and its problems without reading tensor data
  merge        publish the output of a conversion run as shares (convert --shard)
  parity       run ModelOpt golden manifests and report PASS/FAIL per case
  dump-arrow   write the layer stream as an Arrow IPC stream file
  verify       check a quantized checkpoint: files, layouts, scales, fused groups,
               coverage, KV scales; --against SOURCE, --engine vllm|sglang|trtllm
  inspect      what a checkpoint holds: formats, dtypes, shards, quantization config
  version      print the version

Run 'quantstream <command> -h' for the flags of a command.
`

var (
	// errUsage marks a command-line mistake: exit status 2 and no stack of wrapping.
	errUsage = errors.New("usage")
	// errHelp: -h was asked for and the command's usage printed: exit status 0.
	errHelp = errors.New("help requested")
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	os.Exit(run(ctx, os.Args[1:], os.Stdout, os.Stderr))
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch args[0] {
	case "convert":
		err = cmdConvert(ctx, args[1:], stdout, stderr)
	case "plan":
		err = cmdPlan(ctx, args[1:], stdout, stderr)
	case "merge":
		err = cmdMerge(ctx, args[1:], stdout, stderr)
	case "parity":
		err = cmdParity(ctx, args[1:], stdout, stderr)
	case "dump-arrow":
		err = cmdDumpArrow(ctx, args[1:], stdout, stderr)
	case "verify":
		err = cmdVerify(ctx, args[1:], stdout, stderr)
	case "inspect":
		err = cmdInspect(ctx, args[1:], stdout, stderr)
	case "version":
		fmt.Fprintln(stdout, "quantstream", version)
		return 0
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, usage)
		return 0
	default:
		fmt.Fprintf(stderr, "quantstream: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	var incomplete *convert.IncompleteError
	switch {
	case err == nil, errors.Is(err, errHelp):
		return 0
	case errors.Is(err, errUsage):
		fmt.Fprintln(stderr, "quantstream:", err)
		return 2
	case errors.Is(err, context.Canceled) && errors.As(err, &incomplete):
		fmt.Fprintf(stderr, "quantstream: interrupted; %d of %d output shards are complete in %s: the same command continues from them (remove it to start over)\n",
			incomplete.Kept, incomplete.Shards, incomplete.WorkDir)
		return 130
	case errors.Is(err, context.Canceled):
		fmt.Fprintln(stderr, "quantstream: interrupted; no output was written")
		return 130
	default:
		fmt.Fprintln(stderr, "quantstream:", err)
		return 1
	}
}

const version = convert.Version

// parseFlags parses a command's flags. -h (or -help) prints the usage to stdout
// and returns errHelp (exit status 0); a mistake prints the flag package's message
// and the usage to stderr and returns an error wrapping errUsage (exit status 2).
// usage writes the command's usage line and description; the flags follow.
func parseFlags(fs *flag.FlagSet, args []string, usage string, stdout, stderr io.Writer) error {
	fs.SetOutput(stderr)
	fs.Usage = func() {} // printed below, to the right writer
	printUsage := func(w io.Writer) {
		fmt.Fprintln(w, usage)
		fs.SetOutput(w)
		fs.PrintDefaults()
		fs.SetOutput(stderr)
	}
	err := fs.Parse(args)
	switch {
	case errors.Is(err, flag.ErrHelp):
		printUsage(stdout)
		return errHelp
	case err != nil:
		printUsage(stderr)
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	return nil
}
