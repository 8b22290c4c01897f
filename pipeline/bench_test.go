package pipeline_test

import (
	"fmt"
	"testing"

	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/quantstream/quantstream"
	"github.com/quantstream/quantstream/pipeline"
	"github.com/quantstream/quantstream/quant"
)

// BenchmarkRun measures the engine with stages that touch every byte, over layers
// of 0.5–1.5 MiB; figures read as source bytes per second.
func BenchmarkRun(b *testing.B) {
	for _, cols := range []int64{32, 32 << 10} {
		for _, workers := range []int{1, 2, 4} {
			b.Run(fmt.Sprintf("cols=%d/workers=%d", cols, workers), func(b *testing.B) {
				mem := memory.DefaultAllocator
				stages := []quantstream.Stage{
					&convStage{name: "widen", from: quant.F16, to: quant.F32, mem: mem},
					&convStage{name: "pack", from: quant.F32, to: quant.F8E4M3, mem: mem},
				}
				plan, err := pipeline.NewPlan(newTestSourceCols(mem, nil, 32, cols).Layers(), stages...)
				if err != nil {
					b.Fatal(err)
				}
				b.SetBytes(plan.TotalBytes)
				for b.Loop() {
					p := &pipeline.Pipeline{
						Source:    newTestSourceCols(mem, nil, 32, cols),
						Stages:    stages,
						Sink:      discardSink{},
						Workers:   workers,
						MaxMemory: 4 * plan.MaxCharge,
					}
					if err := p.Run(b.Context()); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
