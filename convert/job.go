package convert

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"time"

	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/quantstream/quantstream"
	"github.com/quantstream/quantstream/arrowio"
	"github.com/quantstream/quantstream/pipeline"
	"github.com/quantstream/quantstream/stages"
)

// Job is a prepared conversion: its inputs opened (headers only), what it does
// decided (a passthrough, an export of calibration state, a data-free recipe), its
// stages built, its output's side files generated and every guard passed, all
// before any tensor data is read. Between Prepare and Run the stage chain may be
// edited (InsertBefore, InsertAfter, Append) and the conversion planned (Plan);
// Run converts, once. Close releases the inputs; call it when done, also after Run.
//
// The chain Prepare builds is, by stage name:
//
//	passthrough:                 (empty)
//	calibration state or saved:  export
//	data-free recipe:            calibrate, export
//
// "calibrate" computes each weight quantizer's amax from the layer's weights and
// "export" is ModelOpt's export (stages.Stage), which also checks every layer
// against the quantizer state. A stage inserted before "export" sees the layer
// before quantization, one after it sees the exported tensors; each runs on every
// layer with the pipeline's guarantees (see package pipeline).
//
// A layer larger than a quarter of MaxMemory is streamed in pieces: runs of
// tensors for a passthrough, groups of whole experts for an export of a MoE layer
// (when ModelOpt's export allows it, stages.Plan.ExpertSplit). A chain with stages
// of the caller's own keeps every layer whole, since such a stage may need one; its
// layers must then fit in MaxMemory, and Plan and Run say so when they do not.
//
// A Job is not safe for concurrent use.
type Job struct {
	opt      Options
	ck       *arrowio.Checkpoint
	mem      memory.Allocator
	pool     *PoolAllocator // the allocator Prepare made (nil when Options.Allocator is set)
	prepTime time.Duration  // how long Prepare took: the summary's time includes it

	mode      string
	chain     []quantstream.Stage
	added     int               // stages the caller put in the chain
	sideFiles map[string][]byte // generated files (config.json, hf_quant_config.json, …)
	skipFiles []string          // input side files that do not belong in the output
	summary   Summary
	export    *stages.Plan        // the export's plan; nil for a passthrough
	shardOf   func(string) string // the output's shard layout (nil: cut by size)
	done      bool
}

// prepareError marks a failure to decide what the conversion does (as opposed to
// opening its inputs): MakePlan reports it as the plan's problems.
type prepareError struct{ err error }

func (e *prepareError) Error() string { return e.err.Error() }
func (e *prepareError) Unwrap() error { return e.err }

// Prepare opens opt.Inputs, decides the conversion and builds its stages, reading
// only headers and configs. It refuses an output directory that is, contains or
// lies inside an input (ErrOutputOverlapsInput), a recipe on an input that carries
// calibration state (ErrRecipeWithState), a recipe that needs calibration data
// (modelopt.ErrNeedsCalibration), and inputs the export cannot plan (ErrPlan,
// listing every problem). opt.Out may be empty for a Job that is only planned.
func Prepare(ctx context.Context, opt Options) (*Job, error) {
	started := time.Now()
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if len(opt.Inputs) == 0 {
		return nil, ErrNoInput
	}
	if opt.Out != "" {
		if err := checkOutputApart(opt.Inputs, opt.Out); err != nil {
			return nil, err
		}
	}
	ck, err := arrowio.OpenCheckpoint(opt.Inputs...)
	if err != nil {
		return nil, err
	}
	j := &Job{opt: opt, ck: ck, mem: opt.Allocator}
	if j.mem == nil {
		j.pool = NewPoolAllocator()
		// The budget bounds the bytes in use; keeping idle buffers only within it
		// makes the pool's footprint, hence resident memory, follow the budget too.
		j.pool.SetLimit(opt.MaxMemory)
		j.mem = j.pool
	}
	if err := j.prepare(); err != nil {
		j.Close()
		return nil, &prepareError{err}
	}
	j.prepTime = time.Since(started)
	return j, nil
}

// Mode says what the conversion does: "passthrough", "export (calibration
// state)", "export (saved ModelOpt checkpoint, <calibration>)" or "data-free
// <recipe>".
func (j *Job) Mode() string { return j.mode }

// Stages returns the stage chain in order (a copy: edit it with InsertBefore,
// InsertAfter and Append).
func (j *Job) Stages() []quantstream.Stage { return slices.Clone(j.chain) }

// InsertBefore puts stages into the chain just before the first stage named name.
func (j *Job) InsertBefore(name string, s ...quantstream.Stage) error {
	return j.insert(name, 0, s)
}

// InsertAfter puts stages into the chain just after the first stage named name.
func (j *Job) InsertAfter(name string, s ...quantstream.Stage) error {
	return j.insert(name, 1, s)
}

// Append puts stages at the end of the chain (after the export, if any).
func (j *Job) Append(s ...quantstream.Stage) error {
	return j.insert("", 0, s)
}

func (j *Job) insert(name string, after int, s []quantstream.Stage) error {
	if j.done {
		return ErrJobDone
	}
	for _, st := range s {
		if st == nil {
			return errors.New("convert: a nil stage")
		}
	}
	at := len(j.chain)
	if name != "" {
		at = slices.IndexFunc(j.chain, func(st quantstream.Stage) bool { return st.Name() == name })
		if at < 0 {
			return fmt.Errorf("convert: no stage %q in the chain [%s]", name, strings.Join(j.stageNames(), " "))
		}
		at += after
	}
	j.chain = slices.Insert(j.chain, at, s...)
	j.added += len(s)
	return nil
}

func (j *Job) stageNames() []string {
	names := make([]string, len(j.chain))
	for i, st := range j.chain {
		names[i] = st.Name()
	}
	return names
}

// grouping cuts the checkpoint's layers into the groups the pipeline streams: runs
// of tensors for a passthrough under a budget, groups of whole experts for an
// export of a MoE layer over a quarter of it (unless the caller added stages,
// which may need whole layers).
func (j *Job) grouping() *grouping {
	return newGrouping(j.ck).splitForBudget(len(j.chain), j.opt.MaxMemory).
		splitExperts(j.export, j.added, j.opt.MaxMemory)
}

// pipeline returns the pipeline over g with the job's chain (no sink yet).
func (j *Job) pipeline(g *grouping, mem memory.Allocator) *pipeline.Pipeline {
	return &pipeline.Pipeline{
		Source:    j.ck.Source(mem, g.layers),
		Stages:    slices.Clone(j.chain),
		Workers:   j.opt.Workers,
		MaxMemory: j.opt.MaxMemory,
		MaxLayers: maxLayers(j.opt),
		Progress:  j.opt.Progress,
	}
}

// Plan plans the conversion with the current chain from headers alone: every
// layer's tensors after every stage, the output shards, the memory it needs, and
// every problem that would stop Run, all at once (PlanReport.Problems). It reads
// no tensor data.
func (j *Job) Plan() (*PlanReport, error) {
	if j.ck == nil {
		return nil, ErrJobDone
	}
	r := &PlanReport{Mode: j.mode, Summary: j.summary}
	g := j.grouping()
	p := j.pipeline(g, nil)
	// Not p.Plan: the budget is checked below, with the reason a layer was kept whole.
	plan, err := pipeline.NewPlan(p.Source.Layers(), p.Stages...)
	if err != nil {
		r.Problems = append(r.Problems, err.Error())
		return r, nil
	}
	r.Layers = plan.Layers
	r.BytesIn = plan.TotalBytes
	r.MinMemory = plan.MaxCharge
	workers := j.opt.Workers
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	inFlight := workers * (len(p.Stages) + 1)
	if n := maxLayers(j.opt); n > 0 {
		inFlight = n
	}
	r.PeakData = int64(inFlight) * plan.MaxCharge
	if j.opt.MaxMemory > 0 && j.opt.MaxMemory < r.PeakData {
		r.PeakData = j.opt.MaxMemory
	}
	r.EstSeconds = float64(r.BytesIn) / (EstimateGBps * 1e9)
	if err := plan.Check(j.opt.MaxMemory); err != nil {
		r.Problems = append(r.Problems, g.explain(err).Error())
	}
	tensors, err := g.outputTensors(plan, p.Stages)
	if err != nil {
		r.Problems = append(r.Problems, err.Error())
	}
	for _, t := range tensors {
		r.BytesOut += infoBytes(t)
	}
	sp, err := arrowio.PlanShards(tensors, arrowio.PlanOptions{MaxShardSize: j.opt.MaxShardSize, ShardOf: j.shardOf})
	if err != nil {
		r.Problems = append(r.Problems, err.Error())
	}
	r.Shards = sp
	return r, nil
}

// Run converts into Options.Out: it plans (refusing a plan that does not fit in
// MaxMemory), lays out the output shards, streams every layer through the chain
// into them, writes the side files (the input's, less calibration artifacts, with
// the generated config.json, generation_config.json and hf_quant_config.json) and
// moves the output into place. The output appears only if everything succeeded
// (also on cancellation, nothing is left behind). A Job runs once.
func (j *Job) Run(ctx context.Context) (*Summary, error) {
	if j.done || j.ck == nil {
		return nil, ErrJobDone
	}
	j.done = true
	if j.opt.Out == "" {
		return nil, ErrNoOutput
	}
	runStart := time.Now()
	g := j.grouping()
	p := j.pipeline(g, j.mem)
	plan, err := p.Plan()
	if err != nil {
		return nil, g.explain(err)
	}
	if err := g.readExpertFill(ctx, j.ck, j.mem, j.export); err != nil {
		return nil, err
	}
	out, err := g.outputTensors(plan, p.Stages)
	if err != nil {
		return nil, err
	}
	w, err := arrowio.Create(j.opt.Out, out, arrowio.WriteOptions{
		PlanOptions: arrowio.PlanOptions{MaxShardSize: j.opt.MaxShardSize, ShardOf: j.shardOf},
		Overwrite:   j.opt.Overwrite,
	})
	if err != nil {
		return nil, err
	}
	committed := false
	defer func() {
		if !committed {
			w.Abort()
		}
	}()
	p.Sink = w
	if err := p.Run(ctx); err != nil {
		return nil, err
	}
	side := j.ck.SideFiles()
	for name := range j.sideFiles {
		delete(side, name)
	}
	for _, name := range j.skipFiles {
		delete(side, name)
	}
	if err := w.CopySideFiles(side); err != nil {
		return nil, err
	}
	for name, data := range j.sideFiles {
		if err := w.WriteSideFile(name, data); err != nil {
			return nil, err
		}
	}
	if err := w.Commit(); err != nil {
		return nil, err
	}
	committed = true

	s := j.summary
	s.Mode = j.mode
	s.Layers = len(plan.Layers) - g.extraGroups()
	s.Tensors = len(out)
	s.BytesIn = plan.TotalBytes
	for _, t := range out {
		s.BytesOut += infoBytes(t)
	}
	s.Shards = len(w.Plan().Shards)
	// The time to prepare counts too (as when Run is one call), not the caller's
	// pause between Prepare and Run.
	s.Seconds = (j.prepTime + time.Since(runStart)).Seconds()
	if s.Seconds > 0 {
		s.GBPerSecond = float64(s.BytesIn) / 1e9 / s.Seconds
	}
	s.PeakRSSBytes = PeakRSS()
	s.MaxChargeB = plan.MaxCharge
	return &s, nil
}

// Close closes the inputs and frees the idle buffers of the allocator Prepare made.
// It is safe to call more than once.
func (j *Job) Close() error {
	j.done = true
	var err error
	if j.ck != nil {
		err = j.ck.Close()
		j.ck = nil
	}
	if j.pool != nil {
		j.pool.Trim()
	}
	return err
}
