package quantstream

import (
	"context"
	"errors"
	"fmt"
	"math"

	"github.com/quantstream/quantstream/quant"
)

// TensorInfo is a tensor's header: what is known of it before its data is read.
// Sources list their layers as TensorInfos, stages plan with them, and the writer
// lays its shards out from them. Packages that know more about a tensor (where
// it lies in a file, say) embed a TensorInfo rather than repeat its fields.
type TensorInfo struct {
	Name  string
	DType quant.DType
	Shape []int64
}

// DataBytes is the length of the tensor's data: its element count times the
// dtype's width. It fails, naming the tensor, for an unknown dtype, a negative
// dimension, a count that overflows, or sub-byte elements that do not fill whole
// bytes. Headers come from files, so no size is trusted before it is checked.
func (t TensorInfo) DataBytes() (int64, error) {
	if t.DType.Bits() == 0 {
		return 0, fmt.Errorf("tensor %q: %w %v", t.Name, quant.ErrUnknownDType, t.DType)
	}
	numel := int64(1)
	for _, d := range t.Shape {
		if d < 0 {
			return 0, fmt.Errorf("tensor %q: negative dimension in shape %v", t.Name, t.Shape)
		}
		if d != 0 && numel > math.MaxInt64/d {
			return 0, fmt.Errorf("tensor %q: shape %v overflows", t.Name, t.Shape)
		}
		numel *= d
	}
	n, ok := t.DType.ByteLen(numel)
	if !ok {
		return 0, fmt.Errorf("tensor %q: %d elements of %s do not fill whole bytes or overflow", t.Name, numel, t.DType)
	}
	return n, nil
}

// LayerInfo is a layer's headers: everything about it that is known before its data
// is read. Index and Prefix are those of the Layer the source will yield.
type LayerInfo struct {
	Index   int    // decoder block number, or NonDecoder
	Prefix  string // the block's name prefix, e.g. "model.layers.12."; "" outside the decoder
	Tensors []TensorInfo
}

// DataBytes is the data size of the layer's tensors; see TensorInfo.DataBytes.
func (li LayerInfo) DataBytes() (int64, error) {
	var total int64
	for _, t := range li.Tensors {
		n, err := t.DataBytes()
		if err != nil {
			return 0, err
		}
		if total > math.MaxInt64-n {
			return 0, fmt.Errorf("%s: size overflows at tensor %q", LayerName(li.Index), t.Name)
		}
		total += n
	}
	return total, nil
}

// A conversion is a Source of layers, a chain of Stages and a Sink. Package
// pipeline runs one; package arrowio has a Source (Checkpoint.Source) and Sinks
// (Writer, DumpWriter); package stages has ModelOpt's export as a Stage.

// Source yields the layers of a checkpoint in order.
type Source interface {
	// Layers returns the headers of every layer Next will yield, in the same order,
	// the same each time it is called, before any Next. A pipeline plans and charges
	// its memory budget from them, and fails the run if a layer read later differs
	// from its headers.
	Layers() []LayerInfo

	// Next reads the next layer; the caller owns it and must Release it. It is
	// called once per entry of Layers, from one goroutine; io.EOF before then is an
	// error. Next must watch ctx.
	Next(ctx context.Context) (*Layer, error)
}

// Stage is one step of a conversion. Plan maps the headers of a layer to the headers
// Process will produce, without data, so that output files can be laid out and
// memory budgeted before any tensor is read; a pipeline checks every layer Process
// returns against it. A stage keeps a layer's Index and Prefix.
//
// Process owns its input in every case: on success it returns it or releases it
// (having built a new Layer); on error it releases it and returns a nil Layer; a
// stage that may panic releases its input in a defer. A Stage must be safe for
// concurrent use on different layers, and its output must not depend on the order
// of calls.
type Stage interface {
	// Name names the stage in errors ("stage export: layer 3: …") and in a
	// conversion's chain (convert.Job.InsertBefore).
	Name() string
	// Plan returns, in order, the headers of the tensors Process returns for a
	// layer whose headers are in. It must not keep or change in.
	Plan(in LayerInfo) ([]TensorInfo, error)
	// Process converts one layer; see the ownership rules above.
	Process(ctx context.Context, l *Layer) (*Layer, error)
}

// ErrPlanMismatch is returned when a layer differs from what its plan promised: one a
// Source yields or a Stage returns against the headers it listed or planned (checked
// by package pipeline), or a step inside a stage against the plan it made from
// headers (package stages). Output files are laid out and memory budgeted from the
// plan, so the run stops. pipeline.ErrPlanMismatch and stages.ErrPlanMismatch are
// this value, so errors.Is matches whichever name a caller uses.
var ErrPlanMismatch = errors.New("quantstream: layer does not match the plan")

// Sink consumes converted layers.
type Sink interface {
	// Write is called from one goroutine, once per layer, in source order. l is lent
	// for the duration of the call: the caller releases it when Write returns. A
	// sink that keeps it must Retain it.
	Write(ctx context.Context, l *Layer) error
}
