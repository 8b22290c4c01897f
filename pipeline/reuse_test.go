package pipeline_test

import (
	"context"
	"errors"
	"slices"
	"testing"

	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/quantstream/quantstream"
	"github.com/quantstream/quantstream/pipeline"
	"github.com/quantstream/quantstream/quant"
)

// handOnStage leaves every layer as it is and says so (pipeline.BufferReuser); with
// copy set it copies the layer anyway, breaking its word.
type handOnStage struct {
	mem  memory.Allocator
	copy bool
}

var _ pipeline.BufferReuser = (*handOnStage)(nil)

func (s *handOnStage) Name() string { return "hand-on" }

func (s *handOnStage) Plan(in quantstream.LayerInfo) ([]quantstream.TensorInfo, error) {
	return slices.Clone(in.Tensors), nil
}

func (s *handOnStage) NewBytes(quantstream.LayerInfo, []quantstream.TensorInfo) int64 { return 0 }

func (s *handOnStage) Process(_ context.Context, in *quantstream.Layer) (*quantstream.Layer, error) {
	defer in.Release()
	if !s.copy {
		in.Retain()
		return in, nil
	}
	var ts []quantstream.Tensor
	for _, t := range in.Tensors() {
		t.Data = slices.Clone(t.Data)
		ts = append(ts, t)
	}
	return quantstream.NewLayer(s.mem, in.Index(), in.Prefix(), ts)
}

func TestBufferReuserCharges(t *testing.T) {
	pack := &convStage{name: "pack", from: quant.F16, to: quant.F8E4M3}
	plan, err := pipeline.NewPlan([]quantstream.LayerInfo{layerSpec(0, 2)}, &handOnStage{}, pack, &handOnStage{})
	if err != nil {
		t.Fatal(err)
	}
	lp := plan.Layers[0]
	// F16 [8 32] + BF16 [32] = 576 bytes, the same after the hand-on, 320 packed.
	if want := []int64{576, 576, 320, 320}; !slices.Equal(lp.Bytes, want) {
		t.Errorf("Bytes %v, want %v", lp.Bytes, want)
	}
	if want := []int64{576, 0, 320, 0}; !slices.Equal(lp.New, want) {
		t.Errorf("New %v, want %v", lp.New, want)
	}
	// Handing on costs nothing: only the packing stage holds input and output.
	if want := []int64{576 + 320, 576 + 320, 320, 320}; !slices.Equal(lp.Charge, want) {
		t.Errorf("Charge %v, want %v", lp.Charge, want)
	}
}

func TestBufferReuserHandsOn(t *testing.T) {
	for _, tc := range []struct {
		name string
		copy bool
		want error
	}{
		{"kept its word", false, nil},
		{"copied after all", true, pipeline.ErrPlanMismatch},
	} {
		t.Run(tc.name, func(t *testing.T) {
			mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
			defer mem.AssertSize(t, 0)
			src := newTestSource(mem, nil, 4)
			p := &pipeline.Pipeline{Source: src, Stages: []quantstream.Stage{&handOnStage{mem: mem, copy: tc.copy}}, Sink: &collectSink{}, Workers: 2}
			if err := p.Run(t.Context()); !errors.Is(err, tc.want) {
				t.Fatalf("Run: %v, want %v", err, tc.want)
			}
		})
	}
}
