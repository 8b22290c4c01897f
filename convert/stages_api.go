package convert

import (
	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/quantstream/quantstream"
	"github.com/quantstream/quantstream/modelopt"
	"github.com/quantstream/quantstream/quant"
)

// NewCalibrateStage returns the calibration stage of a data-free conversion, the one
// Run puts before the export: it appends to each layer the _amax buffer of every
// enabled weight quantizer of q that calibrates on one of the layer's weights,
// computed from those weights alone (ModelOpt's max calibration with
// forward_loop=None). Output layers are allocated from mem.
//
// inputs are the headers of every checkpoint tensor (for example from
// arrowio.Checkpoint.Tensors). The second result lists the headers of the buffers
// the stage adds; stages.NewPlan needs them among its inputs, so that the export is
// planned from what the calibration will produce:
//
//	q, _ := modelopt.DataFree(recipe, configJSON, shapes)
//	cal, added, _ := convert.NewCalibrateStage(q, inputs, mem)
//	plan, _ := stages.NewPlan(append(inputs, added...), configJSON, q.Table, stages.Options{})
//	// pipeline stages: cal, (your stages), stages.NewStage(plan, mem)
//
// The stage is safe for concurrent use on different layers. To add stages of your
// own to a conversion, Prepare it and insert them into the Job instead; this is
// for pipelines built by hand.
func NewCalibrateStage(q *modelopt.Quantized, inputs []quantstream.TensorInfo, mem memory.Allocator) (quantstream.Stage, []quantstream.TensorInfo, error) {
	if mem == nil {
		mem = memory.DefaultAllocator
	}
	dtypes := make(map[string]quant.DType, len(inputs))
	for _, t := range inputs {
		dtypes[t.Name] = t.DType
	}
	// Unfit weights are left to CalibrateAmax, which refuses them when their layer
	// comes.
	cs, added, _, err := newCalibrateStage(q, dtypes, mem, "the inputs lack")
	if err != nil {
		return nil, nil, err
	}
	return cs, added, nil
}
