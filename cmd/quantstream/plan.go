package main

import (
	"context"
	"fmt"
	"io"

	"github.com/quantstream/quantstream/convert"
)

func cmdPlan(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	f := newConvertFlags("plan", stderr, false)
	f.fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: quantstream plan --in DIR [--in DIR …] [flags]\n\nReads headers and configs only; prints every output tensor and every problem found.")
		f.fs.PrintDefaults()
	}
	opt, err := f.parse(args)
	if err != nil {
		return err
	}
	p, err := convert.MakePlan(ctx, opt)
	if err != nil {
		return err
	}
	p.Print(stdout)
	if len(p.Problems) > 0 {
		return fmt.Errorf("the plan has %d problem(s)", len(p.Problems))
	}
	return nil
}
