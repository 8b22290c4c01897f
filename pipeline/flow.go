package pipeline

import (
	"context"
	"fmt"
	"sync"

	"github.com/reugn/go-streams"

	"github.com/quantstream/quantstream"
	"github.com/quantstream/quantstream/internal/parallel"
)

// StageFlow runs a quantstream Stage as a go-streams Flow, so a stage can sit in a
// flow built with go-streams.
//
// Elements in: *quantstream.Layer, whose ownership passes to the flow on send. Error
// values pass through unchanged, so a chain of StageFlows carries an upstream failure
// to the sink. Any other element becomes an error wrapping ErrElementType and is
// otherwise left alone.
//
// Elements out: the *quantstream.Layer that Process returned, owned by the receiver,
// or, where Process failed or panicked, a *StageError in its place (wrapping ErrPanic
// for a panic). The failed layer has been released. The flow never stops on an error:
// each layer stands alone, and deciding whether one failure ends the stream is the
// sink's business. Pipeline.Run is such a sink and stops at the first.
//
// With workers > 1, layers leave in the order they finish, as with go-streams' Map;
// use one worker, or restore order by Layer.Index, when order matters.
//
// ctx is passed to Process. Once it is done the flow calls Process no more: it
// releases every layer it receives or holds and forwards nothing, but keeps reading
// In until In is closed, so no upstream sender is left blocked. Out is closed after
// In is closed and every worker has finished.
type StageFlow struct {
	ctx   context.Context
	stage quantstream.Stage
	in    chan any
	out   chan any
	wg    sync.WaitGroup // every goroutine the flow starts

	// Set when a Pipeline runs the flow; nil for a stand-alone flow.
	run  *run
	step int
}

var _ streams.Flow = (*StageFlow)(nil)

// NewStageFlow starts workers goroutines (at least one) that run s on the layers
// sent to In.
func NewStageFlow(ctx context.Context, s quantstream.Stage, workers int) *StageFlow {
	return newStageFlow(ctx, s, workers, nil, 0)
}

func newStageFlow(ctx context.Context, s quantstream.Stage, workers int, r *run, step int) *StageFlow {
	f := &StageFlow{
		ctx:   ctx,
		stage: s,
		in:    make(chan any),
		out:   make(chan any),
		run:   r,
		step:  step,
	}
	var pool sync.WaitGroup
	for range max(workers, 1) {
		pool.Go(f.work)
	}
	f.wg.Go(func() {
		pool.Wait()
		close(f.out)
	})
	return f
}

// In returns the flow's input channel. The sender must close it when done.
func (f *StageFlow) In() chan<- any { return f.in }

// Out returns the flow's output channel; it must be read until closed.
func (f *StageFlow) Out() <-chan any { return f.out }

// Via streams the flow's output to next and returns next.
func (f *StageFlow) Via(next streams.Flow) streams.Flow {
	f.wg.Go(func() { f.transmit(next) })
	return next
}

// To streams the flow's output to sink and blocks until the sink completes.
func (f *StageFlow) To(sink streams.Sink) {
	f.transmit(sink)
	sink.AwaitCompletion()
}

func (f *StageFlow) transmit(next streams.Inlet) {
	send(f.ctx, next.In(), f.out)
}

// send forwards every element of from to to and closes to. Once ctx is done it
// drops what it reads, releasing what it owns, but reads on until from is closed.
func send(ctx context.Context, to chan<- any, from <-chan any) {
	defer close(to)
	for v := range from {
		select {
		case to <- v:
		case <-ctx.Done():
			drop(v)
		}
	}
}

func (f *StageFlow) work() {
	for v := range f.in {
		if f.ctx.Err() != nil {
			drop(v)
			continue
		}
		out := f.handle(v)
		if out == nil {
			continue
		}
		select {
		case f.out <- out:
		case <-f.ctx.Done():
			drop(out)
		}
	}
}

// handle returns what goes on for v, or nil when nothing does.
func (f *StageFlow) handle(v any) any {
	switch v := v.(type) {
	case *envelope:
		return f.handleEnvelope(v)
	case *quantstream.Layer:
		index := v.Index()
		out, err := f.process(v)
		if err != nil {
			return &StageError{Stage: f.stage.Name(), Layer: index, Err: err}
		}
		return out
	case error:
		return v
	default:
		return fmt.Errorf("stage %s: %w %T", f.stage.Name(), ErrElementType, v)
	}
}

func (f *StageFlow) handleEnvelope(e *envelope) any {
	in := e.layer
	e.layer = nil // Process owns it now, whatever happens
	// Where the input's bytes are, to check a stage planned to hand them on does
	// (only compared, never dereferenced after Process released the input).
	name, first := firstData(in)
	out, err := f.process(in)
	if err == nil {
		err = e.plan.check(f.step+1, out)
		if err == nil {
			err = e.plan.checkReuse(f.step+1, name, first, out)
		}
		if err != nil {
			out.Release()
		}
	}
	if err != nil {
		f.run.fail(&StageError{Stage: f.stage.Name(), Layer: e.plan.Index, Err: err})
		e.drop()
		return nil
	}
	e.layer = out
	next := e.plan.Charge[f.step+1]
	f.run.budget.shrink(e.charge - next)
	e.charge = next
	return e
}

// process calls the stage, turning a panic into an error. On error the input is the
// stage's to have released (see Pipeline); a layer returned with an error is
// released here, since it was handed over.
func (f *StageFlow) process(in *quantstream.Layer) (out *quantstream.Layer, err error) {
	err = protect(func() (err error) {
		out, err = f.stage.Process(f.ctx, in)
		return err
	})
	if err != nil {
		if out != nil {
			out.Release()
		}
		return nil, err
	}
	if out == nil {
		return nil, fmt.Errorf("%w: stage returned no layer", ErrPlanMismatch)
	}
	return out, nil
}

// protect calls fn, turning a panic into an error wrapping ErrPanic (with the stack).
func protect(fn func() error) error { return parallel.Protect(fn) }

// drop releases what an element owns when it will not be delivered.
func drop(v any) {
	switch v := v.(type) {
	case *envelope:
		v.drop()
	case *quantstream.Layer:
		v.Release()
	}
}
