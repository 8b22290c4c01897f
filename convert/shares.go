package convert

import (
	"cmp"
	"errors"
	"fmt"
	"math/bits"
	"slices"

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
// layer of plan, which is planned for the budget given.
//
// A layer's groups depend on the budget and on that layer alone, so the smallest
// budget is the largest of the layers' own smallest ones, each found by bisection
// over budgets with header-only plans of that layer. Layers are taken largest
// first, and one that fits under the largest minimum found so far needs no
// bisection: a model of identical layers costs one bisection and one plan per
// other layer. The result is exact to 1/4096.
func (j *Job) minMemory(plan *pipeline.Plan) int64 {
	fitsAll := func(b int64) bool {
		p, _, err := j.newPlan(j.groupingFor(b).layers)
		return err == nil && p.Check(b) == nil
	}
	whole, _, err := j.newPlan(j.ck.Layers())
	if err != nil {
		return plan.MaxCharge
	}
	layers := j.ck.Layers()
	order := make([]int, len(layers))
	for i := range order {
		order[i] = i
	}
	slices.SortStableFunc(order, func(a, b int) int { return cmp.Compare(whole.Layers[b].Charge[0], whole.Layers[a].Charge[0]) })
	var best int64
	for _, i := range order {
		hi := whole.Layers[i].Charge[0] // whole, the layer fits: any cut only lowers it
		if hi <= best {
			break
		}
		fits := func(b int64) bool {
			g := (&grouping{layers: layers[i : i+1]}).splitForBudget(len(j.chain), b).splitExperts(j.export, j.added, b, j.supplies)
			p, _, err := j.newPlan(g.layers)
			return err == nil && p.Check(b) == nil
		}
		if best > 0 && fits(best) {
			continue
		}
		// No budget below the layer's largest tensor works; a passthrough needs no
		// more than that (its runs of tensors are cut to a quarter of the budget).
		var largest int64
		for _, t := range layers[i].Tensors {
			largest = max(largest, infoBytes(t))
		}
		if largest > best && largest < hi && fits(largest) {
			best = largest
			continue
		}
		// Does not fit at lo (or lo is 0, which would mean no budget). To 1/4096:
		// --max-memory is written to three digits anyway (flagSize).
		lo := max(best, largest)
		for hi-lo > max(1, hi>>12) {
			mid := lo + (hi-lo)/2
			if fits(mid) {
				hi = mid
			} else {
				lo = mid
			}
		}
		best = hi
	}
	if best > 0 && fitsAll(best) {
		return best
	}
	return plan.MaxCharge
}

// budgetError is a plan's budget error with why layers over the budget were kept
// whole and the smallest budget that would do.
func (j *Job) budgetError(g *grouping, plan *pipeline.Plan, err error) error {
	err = g.explain(err)
	if !errors.Is(err, pipeline.ErrOverBudget) {
		return err
	}
	min := j.minMemory(plan)
	return fmt.Errorf("%w; the smallest memory budget that runs this conversion is %s: --max-memory %s", err, HumanBytes(min), flagSize(min))
}

// flagSize writes n bytes as a --max-memory value at least n: in the largest
// binary unit that keeps three significant digits, rounded up (361KiB, 2356MiB).
func flagSize(n int64) string {
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
