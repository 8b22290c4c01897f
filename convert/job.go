package convert

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/quantstream/quantstream"
	"github.com/quantstream/quantstream/arrowio"
	"github.com/quantstream/quantstream/internal/rss"
	"github.com/quantstream/quantstream/pipeline"
	"github.com/quantstream/quantstream/quant"
	"github.com/quantstream/quantstream/quantsrc"
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
	pool     *pipeline.PoolAllocator // the allocator Prepare made (nil when Options.Allocator is set)
	prepTime time.Duration           // how long Prepare took: the summary's time includes it

	mode      string
	chain     []quantstream.Stage
	added     int               // stages the caller put in the chain
	sideFiles map[string][]byte // generated files (config.json, hf_quant_config.json, …)
	skipFiles []string          // input side files that do not belong in the output
	summary   Summary
	export    *stages.Plan        // the export's plan; nil for a passthrough
	shardOf   func(string) string // the output's shard layout (nil: cut by size)
	done      bool

	scheme       *quantsrc.Scheme    // how a quantized source is read (nil: a plain checkpoint)
	recipeSHA256 string              // the resolved data-free recipe's JSON, for the fingerprint
	archSHA256   string              // the --arch family files' contents, for the fingerprint
	prov         *arrowio.Provenance // computed once (provenance)
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
		if err := arrowio.CheckOutputPath(opt.Out); err != nil {
			return nil, err
		}
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
		j.pool = pipeline.NewPoolAllocator()
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
func (j *Job) grouping() *grouping { return j.groupingFor(j.opt.MaxMemory) }

func (j *Job) groupingFor(maxMemory int64) *grouping {
	j.markHead()
	return newGrouping(j.ck).splitForBudget(len(j.chain), maxMemory).
		splitExperts(j.export, j.added, maxMemory, j.supplies)
}

// supplies reports whether buffer name of the export's input can be had before the
// pipeline runs, for a fusion group exported apart (readFusedAmax): a scalar of the
// input (a calibration state's amax), or a buffer the calibration stage can compute
// in a pass of its own (calibrateStage.passable).
func (j *Job) supplies(name string) bool {
	if t, ok := j.ck.Lookup(name); ok {
		return quant.Numel(t.Shape) == 1
	}
	cs := j.calibration()
	return cs != nil && cs.passable(j.ck, name)
}

// calibration is the chain's calibration stage, or nil.
func (j *Job) calibration() *calibrateStage {
	for _, st := range j.chain {
		if cs, ok := st.(*calibrateStage); ok {
			return cs
		}
	}
	return nil
}

// pipeline returns the pipeline over layers (g's, or some of them) with the job's
// chain (no sink yet).
func (j *Job) pipeline(layers []quantstream.LayerInfo, mem memory.Allocator) *pipeline.Pipeline {
	j.markHead()
	src := j.ck.Source(mem, layers)
	if len(j.chain) > 0 {
		if cs, ok := j.chain[0].(*calibrateStage); ok {
			src.WithAppendRoom(cs.appendRoom)
		}
	}
	return &pipeline.Pipeline{
		Source:    src,
		Stages:    slices.Clone(j.chain),
		Workers:   j.opt.Workers,
		MaxMemory: j.opt.MaxMemory,
		MaxLayers: maxLayers(j.opt),
		Progress:  j.opt.Progress,
	}
}

// markHead tells the calibration stage whether it heads the chain (its layers then
// come from the reader with append room: calibrateStage.NewBytes).
func (j *Job) markHead() {
	for _, st := range j.chain {
		if cs, ok := st.(*calibrateStage); ok {
			cs.headsChain = st == j.chain[0]
		}
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
	if !j.opt.Share.Whole() {
		r.Share = j.opt.Share.String()
	}
	g := j.grouping()
	p := j.pipeline(g.layers, nil)
	// Not p.Plan: the budget is checked below, with the reason a layer was kept whole.
	plan, _, err := j.newPlan(p.Source.Layers())
	if err != nil {
		r.Problems = append(r.Problems, err.Error())
		return r, nil
	}
	r.Layers = plan.Layers
	r.BytesIn = plan.TotalBytes
	r.MinMemory = j.minMemory(plan)
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
		r.Problems = append(r.Problems, j.budgetError(g, plan, err).Error())
	}
	tensors, err := g.outputTensors(plan, p.Stages)
	if err != nil {
		r.Problems = append(r.Problems, err.Error())
	}
	for _, t := range tensors {
		r.BytesOut += infoBytes(t)
	}
	popt := arrowio.PlanOptions{MaxShardSize: j.opt.MaxShardSize, ShardOf: j.shardOf}
	sp, err := arrowio.PlanShards(tensors, popt)
	if err != nil {
		r.Problems = append(r.Problems, err.Error())
		return r, nil
	}
	r.Shards = sp
	if j.opt.Out == "" && j.opt.Share.Whole() {
		return r, nil
	}
	// What Run would find at the output: the work to resume, the share, a refusal.
	prov, err := j.provenance()
	if err != nil {
		return nil, err
	}
	r.Fingerprint = prov.Fingerprint
	pr, err := arrowio.ProbeOutput(j.opt.Out, tensors, arrowio.WriteOptions{
		PlanOptions: popt, Overwrite: j.opt.Overwrite, Fingerprint: prov.Fingerprint,
		Share: j.opt.Share, ShardCosts: shardCosts(plan, sp),
	})
	if err != nil {
		return nil, err
	}
	r.ShareShards = pr.Mine
	if j.opt.Out != "" {
		r.Output = pr.Lines
		if pr.Problem != nil {
			r.Problems = append(r.Problems, pr.Problem.Error())
		}
	}
	return r, nil
}

// Run converts into Options.Out: it plans (refusing a plan that does not fit in
// MaxMemory), lays out the output shards, streams the layers through the chain
// into them and publishes the output with its side files (the input's, less
// calibration artifacts, with the generated config.json, generation_config.json and
// hf_quant_config.json) and its provenance (arrowio.ProvenanceName). A Job runs once.
//
// The output appears only if everything succeeded, and a run is resumable: the
// shards are assembled in <Out>.partial, and each one complete is recorded there
// with the conversion's fingerprint (arrowio.Provenance: the inputs' identities,
// the settings that decide the bytes, the tool's version and build). A run that
// stops (an error, a cancellation, a crash) after some shards were complete keeps
// them (an *IncompleteError says where); the same conversion run again writes
// only the others, and the output is byte for byte that of a run never
// interrupted. A run of another fingerprint replaces the work directory, never
// reusing a byte of it. A run whose output is already complete with the same
// fingerprint does nothing (Summary.UpToDate) unless Options.Overwrite is set.
// Two runs writing the same Out at once: the second gets arrowio.ErrBusy before it
// reads anything.
//
// With Options.Share the run converts one share of the output shards (whole
// shards, balanced by the input bytes that go into them, the same split on every
// worker since it is computed from headers alone) into the work directory, and
// publishes nothing: Merge does, once every share is complete. Shares of the same
// conversion run at once without excluding each other.
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
	plan, direct, err := j.newPlan(g.layers)
	if err != nil {
		return nil, err
	}
	if err := plan.Check(j.opt.MaxMemory); err != nil {
		return nil, j.budgetError(g, plan, err)
	}
	out, err := g.outputTensors(plan, j.chain)
	if err != nil {
		return nil, err
	}
	if err := j.codeFP8(); err != nil {
		return nil, err
	}
	prov, err := j.provenance()
	if err != nil {
		return nil, err
	}
	popt := arrowio.PlanOptions{MaxShardSize: j.opt.MaxShardSize, ShardOf: j.shardOf}
	sp, err := arrowio.PlanShards(out, popt)
	if err != nil {
		return nil, err
	}
	s := j.summary
	s.Mode = j.mode
	s.Layers = len(plan.Layers) - g.extraGroups()
	s.Tensors = len(out)
	for _, t := range out {
		s.BytesOut += infoBytes(t)
	}
	s.Shards = len(sp.Shards)
	s.Fingerprint = prov.Fingerprint
	if !j.opt.Share.Whole() {
		s.Share = j.opt.Share.String()
	}
	w, err := arrowio.Create(j.opt.Out, out, arrowio.WriteOptions{
		PlanOptions: popt,
		Overwrite:   j.opt.Overwrite,
		Fingerprint: prov.Fingerprint,
		Share:       j.opt.Share,
		ShardCosts:  shardCosts(plan, sp),
		SideFiles:   j.outputSideFiles(),
		Provenance:  prov,
		OnShard:     j.opt.OnShardDone,
	})
	if errors.Is(err, arrowio.ErrComplete) {
		s.UpToDate = true
		s.Seconds = (j.prepTime + time.Since(runStart)).Seconds()
		return &s, nil
	}
	if err != nil {
		return nil, err
	}
	st := w.Status()
	// Only the groups with a tensor in a shard this run writes are read; the
	// direct ones are copied instead.
	var todo, copies []quantstream.LayerInfo
	for i, lp := range plan.Layers {
		if slices.ContainsFunc(lp.Steps[len(lp.Steps)-1], func(t quantstream.TensorInfo) bool { return w.Wants(t.Name) }) {
			if direct[i] {
				copies = append(copies, g.layers[i])
			} else {
				todo = append(todo, g.layers[i])
			}
			s.BytesIn += lp.Bytes[0]
		}
	}
	if err := j.write(ctx, g, todo, copies, w); err != nil {
		if kept := w.Release(); kept > 0 {
			return nil, &IncompleteError{Err: err, Kept: kept, Shards: len(sp.Shards), WorkDir: st.WorkDir}
		}
		return nil, err
	}
	s.ShardsKept = st.Kept
	s.ShardsWritten = st.Mine - st.Kept
	s.Removed = st.Removed
	s.Warnings = append(slices.Clip(s.Warnings), st.Warnings...)
	for _, stg := range j.chain {
		if e, ok := stg.(*stages.Stage); ok {
			s.Warnings = append(s.Warnings, e.Notes()...)
		}
	}
	// The time to prepare counts too (as when Run is one call), not the caller's
	// pause between Prepare and Run.
	s.Seconds = (j.prepTime + time.Since(runStart)).Seconds()
	if s.Seconds > 0 {
		s.GBPerSecond = float64(s.BytesIn) / 1e9 / s.Seconds
	}
	s.PeakRSSBytes = rss.Peak()
	s.MaxChargeB = plan.MaxCharge
	return &s, nil
}

// write streams todo through the chain into w while it copies the direct groups
// copies beside it, and completes w: Commit for the whole output, Finish for a share.
func (j *Job) write(ctx context.Context, g *grouping, todo, copies []quantstream.LayerInfo, w *arrowio.Writer) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	pr := newProgress(j.opt.Progress, todo, copies)
	var copyErr error
	var wg sync.WaitGroup
	if len(copies) > 0 {
		// Copying is the kernel's work (or a read and a write of a small buffer):
		// beside the pipeline, the disk and the cores work at once.
		wg.Go(func() {
			if copyErr = j.copyDirect(ctx, copies, w, pr); copyErr != nil {
				cancel(copyErr)
			}
		})
	}
	err := func() error {
		if len(todo) == 0 {
			return nil
		}
		if err := g.readExpertFill(ctx, j.ck, j.mem, j.export); err != nil {
			return err
		}
		if err := g.readFusedAmax(ctx, j.ck, j.mem, j.export, j.calibration()); err != nil {
			return err
		}
		p := j.pipeline(todo, j.mem)
		p.Sink = w
		if j.opt.Progress != nil {
			p.Progress = pr.pipeline
		}
		return p.Run(ctx)
	}()
	if err != nil {
		cancel(err)
	}
	wg.Wait()
	// The first failure: a copy's stops the pipeline with it as the cause.
	if copyErr != nil && (err == nil || errors.Is(err, copyErr)) {
		return copyErr
	}
	if err != nil {
		return err
	}
	// The last shards complete after the last write; a cancellation meanwhile
	// stops the run before it publishes.
	if err := w.Flush(); err != nil {
		return err
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if j.opt.Share.Whole() {
		return w.Commit()
	}
	return w.Finish()
}

// outputSideFiles are the output's side files: the inputs' (less calibration
// artifacts and those generated), then the generated ones, by name.
func (j *Job) outputSideFiles() []arrowio.SideFile {
	var out []arrowio.SideFile
	side := j.ck.SideFiles()
	for _, name := range slices.Sorted(maps.Keys(side)) {
		if _, gen := j.sideFiles[name]; gen || slices.Contains(j.skipFiles, name) {
			continue
		}
		out = append(out, arrowio.SideFile{Name: name, Path: side[name]})
	}
	for _, name := range slices.Sorted(maps.Keys(j.sideFiles)) {
		out = append(out, arrowio.SideFile{Name: name, Data: j.sideFiles[name]})
	}
	return out
}

// IncompleteError is returned by Job.Run when a conversion stopped (an error, or
// its context cancelled) with some output shards complete: they are kept in
// WorkDir, and the same conversion run again continues from them.
type IncompleteError struct {
	Err     error
	Kept    int // output shards complete in WorkDir
	Shards  int // in the plan
	WorkDir string
}

func (e *IncompleteError) Error() string {
	return fmt.Sprintf("%v\n%d of %d output shards are complete in %s: the same command continues from them (remove it to start over)", e.Err, e.Kept, e.Shards, e.WorkDir)
}

func (e *IncompleteError) Unwrap() error { return e.Err }

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
