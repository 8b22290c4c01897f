package pipeline

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"sync"

	"github.com/reugn/go-streams"

	"github.com/quantstream/quantstream"
)

// Progress reports how far a run has come. Bytes count source bytes of layers the
// sink has written, so Bytes/TotalBytes is the fraction done and bytes per second
// over elapsed time is the throughput.
type Progress struct {
	Layers, TotalLayers int
	Bytes, TotalBytes   int64
}

// Pipeline converts a Source through Stages into a Sink. The zero values of the
// optional fields are usable; a Pipeline is run once.
type Pipeline struct {
	Source quantstream.Source
	Stages []quantstream.Stage
	Sink   quantstream.Sink

	// Workers is the number of goroutines per stage, hence of layers a stage works
	// on at once; 0 means GOMAXPROCS. A stage may also spread one layer over the
	// cores (see Concurrency in the package documentation). Output does not depend
	// on it.
	Workers int

	// MaxMemory bounds the data bytes of layers in flight (see the package
	// documentation for what is counted); 0 or less means no byte limit.
	MaxMemory int64

	// MaxLayers bounds the layers in flight, the reorder buffer included; 0 means
	// Workers × (len(Stages) + 1).
	MaxLayers int

	// Progress, if set, is called after each layer is written, from the sink's
	// goroutine; the sink waits for it, so it must be quick.
	Progress func(Progress)

	stats Stats
}

// Plan reads the source's headers, plans them through the stages and checks the plan
// against MaxMemory. Run calls it first; call it yourself to learn the sizes before
// running.
func (p *Pipeline) Plan() (*Plan, error) {
	plan, err := NewPlan(p.Source.Layers(), p.Stages...)
	if err != nil {
		return nil, err
	}
	if err := plan.Check(p.MaxMemory); err != nil {
		return nil, err
	}
	return plan, nil
}

// Stats returns what the budget saw during the last Run; call it after Run returns.
func (p *Pipeline) Stats() Stats { return p.stats }

// Run plans the conversion, refuses it if a layer cannot fit in MaxMemory, then
// streams every layer through the stages to the sink.
//
// The first error wins and is returned as a *StageError naming the stage (or
// "source", "sink") and the layer; a panic becomes an error wrapping ErrPanic. After
// an error or when ctx is done, every layer in flight is released. Run returns only
// after every goroutine it started has exited, so it waits for calls in progress to
// Source.Next, Stage.Process and Sink.Write: those must watch ctx. If ctx ends the
// run, Run returns context.Cause(ctx).
func (p *Pipeline) Run(ctx context.Context) error {
	plan, err := p.Plan()
	if err != nil {
		return err
	}
	workers := p.Workers
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	maxLayers := p.MaxLayers
	if maxLayers <= 0 {
		maxLayers = workers * (len(p.Stages) + 1)
	}

	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	r := &run{
		ctx:      ctx,
		cancel:   cancel,
		plan:     plan,
		budget:   newBudget(max(p.MaxMemory, 0), maxLayers),
		progress: p.Progress,
	}

	src := &sourceFlow{run: r, src: p.Source, out: make(chan any)}
	src.wg.Go(src.read)
	flows := make([]*StageFlow, len(p.Stages))
	var last streams.Flow
	for k, s := range p.Stages {
		flows[k] = newStageFlow(ctx, s, workers, r, k)
		if k == 0 {
			last = src.Via(flows[k])
		} else {
			last = last.Via(flows[k])
		}
	}
	sink := &sinkFlow{run: r, sink: p.Sink, in: make(chan any), done: make(chan struct{})}
	sink.wg.Go(sink.write)
	if last == nil {
		src.To(sink)
	} else {
		last.To(sink)
	}
	src.wg.Wait()
	for _, f := range flows {
		f.wg.Wait()
	}
	sink.wg.Wait()
	p.stats = r.budget.stats()

	r.mu.Lock()
	defer r.mu.Unlock()
	switch {
	case r.err != nil:
		return r.err
	case sink.written == len(plan.Layers):
		return nil
	default:
		// Layers go missing only after a failure or a cancelled ctx, so this is the
		// parent's cause.
		return context.Cause(ctx)
	}
}

// run is the state one Pipeline.Run shares among its goroutines.
type run struct {
	ctx      context.Context
	cancel   context.CancelCauseFunc
	plan     *Plan
	budget   *budget
	progress func(Progress)

	mu  sync.Mutex
	err error
}

// fail records err if it is the first and stops the run. An error that comes after
// the run was stopped is a consequence of the stop, not news, and is ignored.
func (r *run) fail(err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.err == nil && r.ctx.Err() == nil {
		r.err = err
		r.cancel(err)
	}
}

// envelope carries a layer through a run with its place in the plan and the bytes
// it holds of the budget.
type envelope struct {
	seq    int
	plan   *LayerPlan
	layer  *quantstream.Layer // nil while a stage owns it
	charge int64
	budget *budget
}

func (e *envelope) drop() {
	if e.layer != nil {
		e.layer.Release()
		e.layer = nil
	}
	e.budget.done(e.charge)
	e.charge = 0
}

// sourceFlow reads the source into the head of the chain.
type sourceFlow struct {
	run *run
	src quantstream.Source
	out chan any
	wg  sync.WaitGroup
}

var _ streams.Source = (*sourceFlow)(nil)

func (s *sourceFlow) Out() <-chan any { return s.out }

func (s *sourceFlow) Via(next streams.Flow) streams.Flow {
	s.wg.Go(func() { send(s.run.ctx, next.In(), s.out) })
	return next
}

func (s *sourceFlow) To(sink streams.Sink) {
	send(s.run.ctx, sink.In(), s.out)
	sink.AwaitCompletion()
}

func (s *sourceFlow) read() {
	defer close(s.out)
	r := s.run
	for seq := range r.plan.Layers {
		lp := &r.plan.Layers[seq]
		if err := r.budget.acquire(r.ctx, lp.Charge[0]); err != nil {
			if r.ctx.Err() == nil {
				r.fail(&StageError{Stage: sourceName, Layer: lp.Index, Err: err})
			}
			return
		}
		e := &envelope{seq: seq, plan: lp, charge: lp.Charge[0], budget: r.budget}
		err := protect(func() (err error) {
			e.layer, err = s.src.Next(r.ctx)
			return err
		})
		if errors.Is(err, io.EOF) {
			err = fmt.Errorf("%w: source ended after %d of %d layers", ErrPlanMismatch, seq, len(r.plan.Layers))
		}
		if err == nil {
			err = lp.check(0, e.layer)
		}
		if err != nil {
			e.drop()
			r.fail(&StageError{Stage: sourceName, Layer: lp.Index, Err: err})
			return
		}
		select {
		case s.out <- e:
		case <-r.ctx.Done():
			e.drop()
			return
		}
	}
}

// sinkFlow restores source order and writes to the sink.
type sinkFlow struct {
	run     *run
	sink    quantstream.Sink
	in      chan any
	done    chan struct{}
	wg      sync.WaitGroup
	written int // read by Run after done is closed
	bytes   int64
}

var _ streams.Sink = (*sinkFlow)(nil)

func (s *sinkFlow) In() chan<- any { return s.in }

func (s *sinkFlow) AwaitCompletion() { <-s.done }

func (s *sinkFlow) write() {
	defer close(s.done)
	r := s.run
	// The reorder buffer. Its size is bounded by MaxLayers and its bytes are in the
	// budget, because every layer in it was charged when the source read it.
	pending := make(map[int]*envelope)
	defer func() {
		for _, e := range pending {
			e.drop()
		}
	}()
	for v := range s.in {
		e, ok := v.(*envelope)
		if !ok {
			// Only envelopes travel inside a run; anything else is a bug here.
			r.fail(fmt.Errorf("%s: %w %T", sinkName, ErrElementType, v))
			drop(v)
			continue
		}
		if r.ctx.Err() != nil {
			e.drop()
			continue
		}
		pending[e.seq] = e
		for r.ctx.Err() == nil {
			e, ok := pending[s.written]
			if !ok {
				break
			}
			delete(pending, s.written)
			s.writeOne(e)
		}
	}
}

func (s *sinkFlow) writeOne(e *envelope) {
	r := s.run
	err := protect(func() error { return s.sink.Write(r.ctx, e.layer) })
	e.drop()
	if err == nil {
		s.written++
		s.bytes += e.plan.Bytes[0]
		if r.progress != nil {
			err = protect(func() error {
				r.progress(Progress{
					Layers: s.written, TotalLayers: len(r.plan.Layers),
					Bytes: s.bytes, TotalBytes: r.plan.TotalBytes,
				})
				return nil
			})
		}
	}
	if err != nil {
		r.fail(&StageError{Stage: sinkName, Layer: e.plan.Index, Err: err})
	}
}
