package pipeline_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/quantstream/quantstream"
	"github.com/quantstream/quantstream/pipeline"
	"github.com/quantstream/quantstream/quant"
)

// fixture is a source → widen (F16→F32, doubles) → pack (F32→F8_E4M3, quarters) →
// sink chain, so layers grow and shrink on the way.
type fixture struct {
	mem          *memory.CheckedAllocator
	tr           *tracker
	src          *testSource
	widen, pack  *convStage
	sink         *collectSink
	p            *pipeline.Pipeline
	lastProgress pipeline.Progress
}

func newFixture(t *testing.T, layers, workers int) *fixture {
	t.Helper()
	f := &fixture{mem: memory.NewCheckedAllocator(memory.NewGoAllocator()), tr: &tracker{}}
	f.src = newTestSource(f.mem, f.tr, layers)
	f.widen = &convStage{name: "widen", from: quant.F16, to: quant.F32, mem: f.mem, tr: f.tr}
	f.pack = &convStage{name: "pack", from: quant.F32, to: quant.F8E4M3, mem: f.mem, tr: f.tr}
	f.sink = &collectSink{tr: f.tr}
	f.p = &pipeline.Pipeline{
		Source:   f.src,
		Stages:   []quantstream.Stage{f.widen, f.pack},
		Sink:     f.sink,
		Workers:  workers,
		Progress: func(p pipeline.Progress) { f.lastProgress = p },
	}
	return f
}

// idle checks that no callback is still running, which would mean Run returned
// before a goroutine it started had finished.
func (f *fixture) idle(t *testing.T) {
	t.Helper()
	for name, n := range map[string]int32{
		"source": f.src.active.Load(), "widen": f.widen.active.Load(),
		"pack": f.pack.active.Load(), "sink": f.sink.active.Load(),
	} {
		if n != 0 {
			t.Errorf("%s: %d calls still running after Run returned", name, n)
		}
	}
}

// jitter is a delay that differs by layer and stage, so workers finish out of order.
func jitter(salt int) func(int) time.Duration {
	return func(layer int) time.Duration {
		return time.Duration((layer+7)*(salt+3)*7919%17) * time.Millisecond
	}
}

func TestRunOrderIndependentOfWorkers(t *testing.T) {
	const layers = 13
	var outputs [][]byte
	for _, workers := range []int{1, 2, 4} {
		t.Run(fmt.Sprint("workers=", workers), func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				f := newFixture(t, layers, workers)
				f.widen.delay, f.pack.delay = jitter(1), jitter(2)
				if err := f.p.Run(t.Context()); err != nil {
					t.Fatal(err)
				}
				f.idle(t)
				if want := wantOrder(layers); !slices.Equal(f.sink.order, want) {
					t.Errorf("order %v, want %v", f.sink.order, want)
				}
				plan, err := f.p.Plan()
				if err != nil {
					t.Fatal(err)
				}
				want := pipeline.Progress{Layers: layers, TotalLayers: layers, Bytes: plan.TotalBytes, TotalBytes: plan.TotalBytes}
				if f.lastProgress != want {
					t.Errorf("last progress %+v, want %+v", f.lastProgress, want)
				}
				outputs = append(outputs, f.sink.buf.Bytes())
				f.mem.AssertSize(t, 0)
			})
		})
	}
	for i := 1; i < len(outputs); i++ {
		if !bytes.Equal(outputs[0], outputs[i]) {
			t.Errorf("output %d differs from output with 1 worker", i)
		}
	}
}

func TestRunStopsCleanly(t *testing.T) {
	errStop := errors.New("stopped by test")
	tests := []struct {
		name    string
		setup   func(f *fixture, cancel context.CancelCauseFunc)
		timeout time.Duration
		wantIs  error
		wantMsg string // prefix of the error text
	}{
		{name: "success", setup: func(*fixture, context.CancelCauseFunc) {}},
		{
			name: "stage error",
			setup: func(f *fixture, _ context.CancelCauseFunc) {
				f.pack.hook = failAt(3, errBoom)
			},
			wantIs: errBoom, wantMsg: "stage pack: layer 3: boom",
		},
		{
			name: "stage error while another layer is slow",
			setup: func(f *fixture, _ context.CancelCauseFunc) {
				f.widen.delay = func(layer int) time.Duration {
					if layer == 5 {
						return time.Hour
					}
					return time.Millisecond
				}
				f.pack.hook = failAt(2, errBoom)
			},
			wantIs: errBoom, wantMsg: "stage pack: layer 2: boom",
		},
		{
			name: "stage panic",
			setup: func(f *fixture, _ context.CancelCauseFunc) {
				f.widen.hook = func(_ context.Context, layer int) error {
					if layer == 4 {
						panic("kaput")
					}
					return nil
				}
			},
			wantIs: pipeline.ErrPanic, wantMsg: "stage widen: layer 4: pipeline: panic: kaput",
		},
		{
			name: "sink error",
			setup: func(f *fixture, _ context.CancelCauseFunc) {
				f.sink.hook = failAt(2, errBoom)
			},
			wantIs: errBoom, wantMsg: "sink: layer 2: boom",
		},
		{
			name: "sink panic",
			setup: func(f *fixture, _ context.CancelCauseFunc) {
				f.sink.hook = func(_ context.Context, n int) error {
					if n == 6 {
						panic(errBoom)
					}
					return nil
				}
			},
			wantIs: pipeline.ErrPanic, wantMsg: "sink: layer 6: pipeline: panic: boom",
		},
		{
			name: "source error",
			setup: func(f *fixture, _ context.CancelCauseFunc) {
				f.src.hook = failAt(5, errBoom)
			},
			wantIs: errBoom, wantMsg: "source: layer 5: boom",
		},
		{
			name: "source ends early",
			setup: func(f *fixture, _ context.CancelCauseFunc) {
				f.src.hook = failAt(3, io.EOF)
			},
			wantIs: pipeline.ErrPlanMismatch, wantMsg: "source: layer 3: quantstream: layer does not match the plan: source ended after 3 of 10 layers",
		},
		{
			name: "stage output differs from plan",
			setup: func(f *fixture, _ context.CancelCauseFunc) {
				f.pack.liar = true
			},
			wantIs: pipeline.ErrPlanMismatch, wantMsg: "stage pack: layer ",
		},
		{
			name: "cancel mid-stream",
			setup: func(f *fixture, cancel context.CancelCauseFunc) {
				f.sink.hook = func(_ context.Context, n int) error {
					if n == 3 {
						cancel(errStop)
					}
					return nil
				}
			},
			wantIs: errStop, wantMsg: errStop.Error(),
		},
		{
			name: "cancel while the source waits for budget",
			setup: func(f *fixture, cancel context.CancelCauseFunc) {
				plan, _ := f.p.Plan()
				f.p.MaxMemory = plan.MaxCharge
				f.pack.hook = func(ctx context.Context, layer int) error {
					if layer == 4 {
						cancel(errStop)
						<-ctx.Done()
						return context.Cause(ctx)
					}
					return nil
				}
			},
			wantIs: errStop, wantMsg: errStop.Error(),
		},
		{
			name: "deadline",
			setup: func(f *fixture, _ context.CancelCauseFunc) {
				f.widen.delay = func(int) time.Duration { return time.Second }
			},
			timeout: 2500 * time.Millisecond,
			wantIs:  context.DeadlineExceeded, wantMsg: context.DeadlineExceeded.Error(),
		},
	}
	const layers = 10
	for _, tc := range tests {
		for _, workers := range []int{1, 4} {
			t.Run(fmt.Sprintf("%s/workers=%d", tc.name, workers), func(t *testing.T) {
				synctest.Test(t, func(t *testing.T) {
					ctx, cancel := context.WithCancelCause(t.Context())
					defer cancel(nil)
					if tc.timeout > 0 {
						var stop context.CancelFunc
						ctx, stop = context.WithTimeout(ctx, tc.timeout)
						defer stop()
					}
					f := newFixture(t, layers, workers)
					tc.setup(f, cancel)
					err := f.p.Run(ctx)
					f.idle(t)
					// A goroutine Run leaves behind is caught by synctest.Test itself: it
					// fails the test when the bubble's goroutines are still blocked after
					// this function returns. runtime.NumGoroutine is no check here, since
					// it also counts goroutines outside the bubble (the race detector's,
					// the testing package's).
					switch {
					case tc.wantIs == nil && err != nil:
						t.Fatalf("Run: %v", err)
					case tc.wantIs != nil && !errors.Is(err, tc.wantIs):
						t.Fatalf("Run: %v, want %v", err, tc.wantIs)
					case err != nil && !strings.HasPrefix(err.Error(), tc.wantMsg):
						t.Errorf("Run: %q, want prefix %q", err, tc.wantMsg)
					}
					want := wantOrder(layers)
					if tc.wantIs != nil {
						want = want[:len(f.sink.order)]
						if len(f.sink.order) == layers {
							t.Errorf("all %d layers written despite %v", layers, err)
						}
					}
					if !slices.Equal(f.sink.order, want) {
						t.Errorf("order %v, want %v", f.sink.order, want)
					}
					f.mem.AssertSize(t, 0)
				})
				// synctest.Test also fails if any goroutine of the bubble is left blocked.
			})
		}
	}
}

func failAt(at int, err error) func(context.Context, int) error {
	return func(_ context.Context, n int) error {
		if n == at {
			return err
		}
		return nil
	}
}

func TestRunMemoryBudget(t *testing.T) {
	const layers = 24
	var reference []byte
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, layers, 1)
		if err := f.p.Run(t.Context()); err != nil {
			t.Fatal(err)
		}
		reference = f.sink.buf.Bytes()
		f.mem.AssertSize(t, 0)
	})
	plan, err := newFixture(t, layers, 1).p.Plan()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		maxMemory int64
		maxLayers int
	}{
		{name: "one largest layer", maxMemory: plan.MaxCharge},
		{name: "two largest layers", maxMemory: 2 * plan.MaxCharge},
		{name: "five largest layers", maxMemory: 5 * plan.MaxCharge},
		{name: "layer limit only", maxLayers: 3},
		{name: "default layer limit"},
		{name: "negative MaxMemory is no limit", maxMemory: -1},
	}
	for _, tc := range tests {
		for _, workers := range []int{1, 4} {
			t.Run(fmt.Sprintf("%s/workers=%d", tc.name, workers), func(t *testing.T) {
				synctest.Test(t, func(t *testing.T) {
					f := newFixture(t, layers, workers)
					f.p.MaxMemory, f.p.MaxLayers = tc.maxMemory, tc.maxLayers
					f.widen.delay, f.pack.delay = jitter(1), jitter(2)
					f.sink.hook = func(ctx context.Context, n int) error {
						// A slow sink fills the pipeline up to whatever limit holds.
						time.Sleep(3 * time.Millisecond)
						return nil
					}
					if err := f.p.Run(t.Context()); err != nil {
						t.Fatal(err)
					}
					maxLayers := tc.maxLayers
					if maxLayers == 0 {
						maxLayers = workers * 3
					}
					bound := int64(maxLayers) * plan.MaxCharge
					if tc.maxMemory > 0 {
						bound = min(bound, tc.maxMemory)
					}
					st := f.p.Stats()
					measured := f.tr.peak.Load()
					t.Logf("bound %d, charged peak %d in %d layers, measured peak %d", bound, st.PeakBytes, st.PeakLayers, measured)
					if measured > bound {
						t.Errorf("measured %d data bytes in flight, bound %d", measured, bound)
					}
					if st.PeakBytes > bound || st.PeakLayers > maxLayers {
						t.Errorf("charged %d bytes in %d layers, bound %d bytes in %d layers", st.PeakBytes, st.PeakLayers, bound, maxLayers)
					}
					if measured > st.PeakBytes {
						t.Errorf("measured %d bytes above the %d charged: the accounting is unsound", measured, st.PeakBytes)
					}
					if workers > 1 && bound >= 2*plan.MaxCharge && st.PeakLayers < 2 {
						t.Errorf("only %d layer in flight with %d workers: the budget serialises the run", st.PeakLayers, workers)
					}
					if !bytes.Equal(f.sink.buf.Bytes(), reference) {
						t.Error("output differs from the unconstrained run")
					}
					f.mem.AssertSize(t, 0)
				})
			})
		}
	}
}

func TestRunRefusesLayerOverBudget(t *testing.T) {
	f := newFixture(t, 4, 2)
	plan, err := f.p.Plan()
	if err != nil {
		t.Fatal(err)
	}
	f.p.MaxMemory = plan.MaxCharge - 1
	err = f.p.Run(t.Context())
	if !errors.Is(err, pipeline.ErrOverBudget) {
		t.Fatalf("Run: %v, want ErrOverBudget", err)
	}
	if want := fmt.Sprintf("needs %d bytes", plan.MaxCharge); !strings.Contains(err.Error(), want) {
		t.Errorf("Run: %q does not say %q", err, want)
	}
	if n := f.src.calls.Load(); n != 0 {
		t.Errorf("source read %d times before refusing", n)
	}
	f.mem.AssertSize(t, 0)
}

func TestRunNoStages(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, 5, 3)
		f.p.Stages = nil
		if err := f.p.Run(t.Context()); err != nil {
			t.Fatal(err)
		}
		if want := wantOrder(5); !slices.Equal(f.sink.order, want) {
			t.Errorf("order %v, want %v", f.sink.order, want)
		}
		f.mem.AssertSize(t, 0)
	})
}

func TestRunEmptySource(t *testing.T) {
	f := newFixture(t, 0, 2)
	if err := f.p.Run(t.Context()); err != nil {
		t.Fatal(err)
	}
	if len(f.sink.order) != 0 {
		t.Errorf("sink got %v", f.sink.order)
	}
	f.mem.AssertSize(t, 0)
}

// identity hands its input on unchanged, the other way a stage may return.
type identity struct{ calls atomic.Int32 }

func (*identity) Name() string { return "identity" }

func (*identity) Plan(in quantstream.LayerInfo) ([]quantstream.TensorInfo, error) {
	return in.Tensors, nil
}

func (s *identity) Process(_ context.Context, l *quantstream.Layer) (*quantstream.Layer, error) {
	s.calls.Add(1)
	return l, nil
}

func TestRunPassThroughStage(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		f := newFixture(t, 6, 2)
		id := &identity{}
		f.p.Stages = []quantstream.Stage{id, f.widen, id, f.pack, id}
		if err := f.p.Run(t.Context()); err != nil {
			t.Fatal(err)
		}
		if n := id.calls.Load(); n != 18 {
			t.Errorf("identity called %d times, want 18", n)
		}
		if want := wantOrder(6); !slices.Equal(f.sink.order, want) {
			t.Errorf("order %v, want %v", f.sink.order, want)
		}
		f.mem.AssertSize(t, 0)
	})
}
