package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"

	"github.com/quantstream/quantstream/convert"
)

const planUsage = `usage: quantstream plan --in DIR [--in DIR …] [--out DIR] [--shard I/N] [flags]

Takes convert's flags. Reads headers and configs only; prints every layer, every
output shard and every problem found, all at once. With --out it also says what
convert would find there (an output to create or replace, work of an interrupted
run to continue, a complete output to leave alone) and with --shard the output
shards of that share. --report writes the plan as JSON.`

func cmdPlan(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	f := newConvertFlags("plan")
	opt, err := f.parse(args, planUsage, stdout, stderr)
	if err != nil {
		return err
	}
	if f.report != "" {
		if err := checkReportPath(f.report, opt.Out); err != nil {
			return err
		}
	}
	p, err := convert.MakePlan(ctx, opt)
	if err != nil {
		return err
	}
	p.Print(stdout)
	if f.report != "" {
		if err := writeReport(f.report, planJSON(p)); err != nil {
			return fmt.Errorf("writing report: %w", err)
		}
	}
	if len(p.Problems) > 0 {
		return fmt.Errorf("the plan has %d problem(s)", len(p.Problems))
	}
	return nil
}

// planJSON is the plan as --report writes it.
func planJSON(p *convert.PlanReport) []byte {
	type shard struct {
		Name    string `json:"name"`
		Tensors int    `json:"tensors"`
		Bytes   int64  `json:"bytes"`
	}
	out := struct {
		Mode        string   `json:"mode"`
		BytesIn     int64    `json:"bytes_in"`
		BytesOut    int64    `json:"bytes_out"`
		MinMemory   int64    `json:"min_memory_bytes"`
		Shards      []shard  `json:"shards"`
		Share       string   `json:"share,omitempty"`
		ShareShards []string `json:"share_shards,omitempty"`
		Fingerprint string   `json:"fingerprint,omitempty"`
		Output      []string `json:"output,omitempty"`
		Problems    []string `json:"problems"`
	}{Mode: p.Mode, BytesIn: p.BytesIn, BytesOut: p.BytesOut, MinMemory: p.MinMemory, Share: p.Share,
		ShareShards: p.ShareShards, Fingerprint: p.Fingerprint, Output: p.Output, Problems: p.Problems}
	if p.Shards != nil {
		for _, s := range p.Shards.Shards {
			out.Shards = append(out.Shards, shard{s.Name, len(s.Tensors), s.Size()})
		}
	}
	if out.Problems == nil {
		out.Problems = []string{}
	}
	b, _ := json.MarshalIndent(out, "", "  ")
	return append(b, '\n')
}
