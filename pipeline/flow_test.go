package pipeline_test

import (
	"context"
	"errors"
	"slices"
	"testing"
	"testing/synctest"

	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/reugn/go-streams/extension"
	"github.com/reugn/go-streams/flow"

	"github.com/quantstream/quantstream"
	"github.com/quantstream/quantstream/pipeline"
	"github.com/quantstream/quantstream/quant"
)

// runFlow sends elems through source → widen → PassThrough → pack → sink, all
// go-streams, and returns what reached the sink.
func runFlow(t *testing.T, ctx context.Context, mem memory.Allocator, pack *convStage, elems []any) []any {
	t.Helper()
	widen := &convStage{name: "widen", from: quant.F16, to: quant.F32, mem: mem}
	in := make(chan any)
	out := make(chan any, len(elems))
	go func() {
		defer close(in)
		for _, e := range elems {
			in <- e
		}
	}()
	extension.NewChanSource(in).
		Via(pipeline.NewStageFlow(ctx, widen, 3)).
		Via(flow.NewPassThrough()).
		Via(pipeline.NewStageFlow(ctx, pack, 2)).
		To(extension.NewChanSink(out))
	// To has closed out (the sink's In) once the last element was sent.
	var got []any
	for e := range out {
		got = append(got, e)
	}
	return got
}

func testLayers(t *testing.T, mem memory.Allocator, n int) []any {
	t.Helper()
	src := newTestSource(mem, nil, n)
	var ls []any
	for range n {
		l, err := src.Next(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		ls = append(ls, l)
	}
	return ls
}

func TestStageFlowInGoStreams(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
		pack := &convStage{name: "pack", from: quant.F32, to: quant.F8E4M3, mem: mem, hook: failAt(2, errBoom)}
		upstream := errors.New("upstream failure")
		elems := append(testLayers(t, mem, 6), upstream, 42)
		var indexes []int
		var errs []error
		for _, e := range runFlow(t, t.Context(), mem, pack, elems) {
			switch e := e.(type) {
			case *quantstream.Layer:
				indexes = append(indexes, e.Index())
				if got := e.Tensor(0).DType; got != quant.F8E4M3 {
					t.Errorf("layer %d: dtype %s, want F8_E4M3", e.Index(), got)
				}
				e.Release()
			case error:
				errs = append(errs, e)
			default:
				t.Errorf("unexpected element %T", e)
			}
		}
		slices.Sort(indexes)
		if want := []int{-1, 0, 1, 3, 4}; !slices.Equal(indexes, want) {
			t.Errorf("layers %v, want %v", indexes, want)
		}
		var stageErr, upstreamErr, typeErr bool
		for _, err := range errs {
			var se *pipeline.StageError
			switch {
			case errors.As(err, &se) && se.Stage == "pack" && se.Layer == 2 && errors.Is(err, errBoom):
				stageErr = true
			case err == upstream:
				upstreamErr = true
			case errors.Is(err, pipeline.ErrElementType):
				typeErr = true
			default:
				t.Errorf("unexpected error element %v", err)
			}
		}
		if !stageErr || !upstreamErr || !typeErr || len(errs) != 3 {
			t.Errorf("errors %v: want the stage's, the upstream one and the element type's", errs)
		}
		mem.AssertSize(t, 0)
	})
}

func TestStageFlowPanic(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
		pack := &convStage{name: "pack", from: quant.F32, to: quant.F8E4M3, mem: mem,
			hook: func(context.Context, int) error { panic("kaput") }}
		got := runFlow(t, t.Context(), mem, pack, testLayers(t, mem, 3))
		if len(got) != 3 {
			t.Fatalf("%d elements, want 3", len(got))
		}
		for _, e := range got {
			if err, ok := e.(error); !ok || !errors.Is(err, pipeline.ErrPanic) {
				t.Errorf("element %v, want an ErrPanic", e)
			}
		}
		mem.AssertSize(t, 0)
	})
}

// After cancellation a flow forwards nothing but keeps reading, so upstream
// senders finish, and it releases every layer it is given.
func TestStageFlowCancelled(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
		ctx, cancel := context.WithCancel(t.Context())
		pack := &convStage{name: "pack", from: quant.F32, to: quant.F8E4M3, mem: mem,
			hook: func(_ context.Context, layer int) error {
				if layer == 1 {
					cancel()
				}
				return nil
			}}
		got := runFlow(t, ctx, mem, pack, testLayers(t, mem, 8))
		for _, e := range got {
			if l, ok := e.(*quantstream.Layer); ok {
				l.Release()
			}
		}
		if len(got) == 8 {
			t.Error("every layer delivered despite cancellation")
		}
		mem.AssertSize(t, 0)
	})
}
