package pipeline_test

import (
	"context"
	"fmt"

	"github.com/apache/arrow-go/v18/arrow/memory"
	"github.com/reugn/go-streams/extension"

	"github.com/quantstream/quantstream"
	"github.com/quantstream/quantstream/pipeline"
	"github.com/quantstream/quantstream/quant"
)

// printSink prints each layer it is lent; the pipeline releases it afterwards.
type printSink struct{}

func (printSink) Write(_ context.Context, l *quantstream.Layer) error {
	t := l.Tensor(0)
	fmt.Printf("layer %d: %s %s %v\n", l.Index(), t.Name, t.DType, t.Shape)
	return nil
}

func ExamplePipeline() {
	mem := memory.NewGoAllocator()
	p := &pipeline.Pipeline{
		// testSource yields 3 layers of an F16 weight and a BF16 norm (see helpers_test.go).
		Source: newTestSource(mem, nil, 3),
		Stages: []quantstream.Stage{
			&convStage{name: "widen", from: quant.F16, to: quant.F32, mem: mem},
			&convStage{name: "pack", from: quant.F32, to: quant.F8E4M3, mem: mem},
		},
		Sink:      printSink{},
		Workers:   4,
		MaxMemory: 16 << 10,
		Progress: func(pr pipeline.Progress) {
			fmt.Printf("  %d/%d bytes\n", pr.Bytes, pr.TotalBytes)
		},
	}
	plan, err := p.Plan()
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Printf("the largest layer needs %d bytes of MaxMemory\n", plan.MaxCharge)
	if err := p.Run(context.Background()); err != nil {
		fmt.Println(err)
	}
	// Output:
	// the largest layer needs 4736 bytes of MaxMemory
	// layer 0: model.layers.0.w F8_E4M3 [8 32]
	//   576/3264 bytes
	// layer 1: model.layers.1.w F8_E4M3 [16 32]
	//   1664/3264 bytes
	// layer -1: model.layers.-1.w F8_E4M3 [24 32]
	//   3264/3264 bytes
}

func ExampleStageFlow() {
	mem := memory.NewGoAllocator()
	ctx := context.Background()
	widen := &convStage{name: "widen", from: quant.F16, to: quant.F32, mem: mem}

	in := make(chan any)
	out := make(chan any, 2)
	go func() {
		defer close(in)
		src := newTestSource(mem, nil, 2)
		for range 2 {
			l, _ := src.Next(ctx)
			in <- l // the flow owns l now
		}
	}()
	// One worker keeps the order; errors would arrive on out as *StageError.
	extension.NewChanSource(in).
		Via(pipeline.NewStageFlow(ctx, widen, 1)).
		To(extension.NewChanSink(out))
	for e := range out {
		switch e := e.(type) {
		case *quantstream.Layer:
			fmt.Println(e.Index(), e.Tensor(0).DType)
			e.Release() // received layers are ours
		case error:
			fmt.Println(e)
		}
	}
	// Output:
	// 0 F32
	// -1 F32
}
