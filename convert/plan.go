package convert

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"

	"github.com/quantstream/quantstream"
	"github.com/quantstream/quantstream/arrowio"
	"github.com/quantstream/quantstream/pipeline"
)

// PlanReport is a conversion planned from headers and configs alone.
type PlanReport struct {
	Mode     string
	Layers   []pipeline.LayerPlan
	Shards   *arrowio.Plan
	BytesIn  int64
	BytesOut int64
	// MinMemory is the smallest --max-memory that can run this plan.
	MinMemory int64
	// PeakData bounds the tensor bytes in flight during the run (pipeline/doc.go):
	// min(MaxMemory, layers in flight × MinMemory).
	PeakData int64
	// EstSeconds is BytesIn at EstimateGBps, the rate a conversion sustains on a
	// 2-core machine with a warm page cache (see the benchmarks); disk speed and
	// cores change it.
	EstSeconds float64
	// Problems lists everything that would stop the conversion, all at once.
	Problems []string
	Summary  Summary

	// With Options.Out or Options.Share: the fingerprint, what Run would find at
	// the output (Output, one line each: to create, to replace, work to resume,
	// nothing to do), and the output shards of the share.
	Fingerprint string
	Output      []string
	ShareShards []string
	Share       string
}

// MakePlan plans a conversion without reading tensor data: Prepare, then Job.Plan.
// What stops Prepare other than opening the inputs (a recipe that needs
// calibration, problems of the export plan) is reported in the plan's Problems,
// all at once, rather than as an error.
func MakePlan(ctx context.Context, opt Options) (*PlanReport, error) {
	j, err := Prepare(ctx, opt)
	if pe := (*prepareError)(nil); errors.As(err, &pe) {
		return &PlanReport{Problems: splitProblems(pe.err)}, nil
	}
	if err != nil {
		return nil, err
	}
	defer j.Close()
	return j.Plan()
}

// EstimateGBps is the conversion rate plan estimates use, in GB/s of input.
const EstimateGBps = 1.0

// splitProblems turns an error joining several problems (errors.Join, one per line)
// into one entry per problem.
func splitProblems(err error) []string {
	var out []string
	for _, line := range strings.Split(err.Error(), "\n") {
		if line = strings.TrimSpace(line); line != "" && line != ErrPlan.Error()+":" {
			out = append(out, line)
		}
	}
	return out
}

func finalTensors(plan *pipeline.Plan) (out []quantstream.TensorInfo) {
	for _, lp := range plan.Layers {
		out = append(out, lp.Steps[len(lp.Steps)-1]...)
	}
	return out
}

// Print writes the plan for a person: one line per layer, the shards, the problems.
func (r *PlanReport) Print(w io.Writer) {
	if r.Mode == "" {
		// Preparation failed before anything could be planned: only the problems say anything.
		r.printProblems(w)
		return
	}
	fmt.Fprintf(w, "mode: %s\n", r.Mode)
	outside := 0
	for _, lp := range r.Layers {
		if lp.Prefix == "" {
			outside++
		}
	}
	for i, lp := range r.Layers {
		last := lp.Steps[len(lp.Steps)-1]
		name := fmt.Sprintf("layer %d", lp.Index)
		if g := groupName(r.Layers, i); g != "" {
			name = g
		}
		if lp.Prefix == "" {
			name = "non-decoder tensors"
			if outside > 1 && len(lp.Steps[0]) > 0 {
				// Grouped per module (arrowio): say which.
				m := lp.Steps[0][0].Name
				if i := strings.LastIndexByte(m, '.'); i > 0 {
					m = m[:i]
				}
				name = m
			}
		}
		fmt.Fprintf(w, "%-22s %4d tensors in, %4d out, %s in, %s out\n", name, len(lp.Steps[0]), len(last), HumanBytes(lp.Bytes[0]), HumanBytes(lp.Bytes[len(lp.Bytes)-1]))
	}
	if r.Shards != nil {
		for _, s := range r.Shards.Shards {
			fmt.Fprintf(w, "shard %s: %d tensors, %s\n", s.Name, len(s.Tensors), HumanBytes(s.Size()))
		}
	}
	if r.Share != "" {
		fmt.Fprintf(w, "share %s: %d output shard(s)", r.Share, len(r.ShareShards))
		if len(r.ShareShards) > 0 {
			fmt.Fprintf(w, ": %s", strings.Join(r.ShareShards, ", "))
		}
		fmt.Fprintln(w)
	}
	if r.Fingerprint != "" {
		fmt.Fprintf(w, "fingerprint: %s\n", r.Fingerprint)
	}
	for _, l := range r.Output {
		fmt.Fprintf(w, "output: %s\n", l)
	}
	if r.Summary.QuantAlgo != "" {
		fmt.Fprintf(w, "quant_algo: %s\n", r.Summary.QuantAlgo)
	}
	for _, f := range slices.Sorted(maps.Keys(r.Summary.ModulesPerFmt)) {
		fmt.Fprintf(w, "  %-16s %d modules\n", f, r.Summary.ModulesPerFmt[f])
	}
	if n := len(r.Summary.Unquantized); n > 0 {
		fmt.Fprintf(w, "left unquantized: %s\n", strings.Join(r.Summary.Unquantized, ", "))
	}
	fmt.Fprintf(w, "bytes in %s, out %s; needs --max-memory >= %s; tensor bytes in flight <= %s\n",
		HumanBytes(r.BytesIn), HumanBytes(r.BytesOut), HumanBytes(r.MinMemory), HumanBytes(r.PeakData))
	fmt.Fprintf(w, "estimated time: %.0fs at %.1f GB/s\n", r.EstSeconds, EstimateGBps)
	r.printProblems(w)
}

func (r *PlanReport) printProblems(w io.Writer) {
	if len(r.Problems) == 0 {
		fmt.Fprintln(w, "no problems found")
		return
	}
	fmt.Fprintf(w, "%d problem(s):\n", len(r.Problems))
	for _, p := range r.Problems {
		fmt.Fprintf(w, "  - %s\n", p)
	}
}

// HumanBytes formats a byte count with binary units (1.50 GiB).
func HumanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.2f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
