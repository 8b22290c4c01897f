package convert

import (
	"errors"
	"fmt"
	"math/bits"

	"github.com/quantstream/quantstream/arrowio"
	"github.com/quantstream/quantstream/pipeline"
)

// shardCosts weighs each output shard for the split into shares
// (arrowio.SplitShares) by the work it takes: its own bytes (written and hashed)
// plus the input bytes of every group whose outputs land in it, each group's
// spread over its shards in proportion to its output bytes there. Integer
// arithmetic (128-bit products): every worker computes the same costs.
func shardCosts(plan *pipeline.Plan, sp *arrowio.Plan) []int64 {
	costs := make([]int64, len(sp.Shards))
	for k, s := range sp.Shards {
		costs[k] = s.DataSize()
	}
	for _, lp := range plan.Layers {
		in := uint64(lp.Bytes[0])
		per := map[int]uint64{}
		var total uint64
		for _, t := range lp.Steps[len(lp.Steps)-1] {
			k, _, ok := sp.Lookup(t.Name)
			if !ok {
				continue
			}
			n := uint64(infoBytes(t))
			per[k] += n
			total += n
		}
		for k, n := range per {
			if total == 0 {
				continue
			}
			hi, lo := bits.Mul64(in, n)
			q, _ := bits.Div64(hi, lo, total) // n ≤ total, so q ≤ in: no overflow
			costs[k] += int64(q)
		}
	}
	return costs
}

// minMemory is the smallest memory budget (Options.MaxMemory, --max-memory) under
// which the conversion runs: layers are cut to fit a budget (runs of tensors for a
// passthrough, groups of experts for a MoE export), so it can be below the largest
// layer of plan, which is planned for the budget given. Found by bisection over
// budgets, planning each from headers.
func (j *Job) minMemory(plan *pipeline.Plan) int64 {
	fits := func(b int64) bool {
		p, err := pipeline.NewPlan(j.groupingFor(b).layers, j.chain...)
		return err == nil && p.Check(b) == nil
	}
	hi := plan.MaxCharge
	if !fits(hi) {
		// The layers whole, as without a budget.
		if p, err := pipeline.NewPlan(j.groupingFor(0).layers, j.chain...); err == nil {
			hi = max(hi, p.MaxCharge)
		}
		if !fits(hi) {
			return plan.MaxCharge
		}
	}
	lo := int64(0) // does not fit (0 would mean no budget)
	for hi-lo > 1 {
		mid := lo + (hi-lo)/2
		if fits(mid) {
			hi = mid
		} else {
			lo = mid
		}
	}
	return hi
}

// budgetError is a plan's budget error with why layers over the budget were kept
// whole and the smallest budget that would do.
func (j *Job) budgetError(g *grouping, plan *pipeline.Plan, err error) error {
	err = g.explain(err)
	if !errors.Is(err, pipeline.ErrOverBudget) {
		return err
	}
	min := j.minMemory(plan)
	return fmt.Errorf("%w; the smallest memory budget that runs this conversion is %s: --max-memory %s", err, HumanBytes(min), FlagSize(min))
}

// FlagSize writes n bytes as a --max-memory value at least n: in the largest
// binary unit that keeps three significant digits, rounded up (361KiB, 2356MiB).
func FlagSize(n int64) string {
	for _, u := range []struct {
		name string
		size int64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if n/u.size >= 100 {
			return fmt.Sprintf("%d%s", (n+u.size-1)/u.size, u.name)
		}
	}
	return fmt.Sprintf("%dB", n)
}
