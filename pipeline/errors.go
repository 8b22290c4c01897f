package pipeline

import (
	"errors"
	"fmt"

	"github.com/quantstream/quantstream"
	"github.com/quantstream/quantstream/internal/parallel"
)

var (
	// ErrOverBudget is returned before anything is read when one layer alone needs
	// more bytes than MaxMemory; the message states how many it needs.
	ErrOverBudget = errors.New("pipeline: layer exceeds memory budget")

	// ErrBadPlan is returned when headers cannot be planned: an unknown dtype, a
	// negative dimension, a size that overflows, or a duplicate tensor name.
	ErrBadPlan = errors.New("pipeline: invalid tensor headers")

	// ErrPlanMismatch is returned when a layer read from the source or returned by a
	// stage differs from what the plan promised. The budget and any writer laid out
	// from the plan rely on the promise, so the run stops. It is
	// quantstream.ErrPlanMismatch, the one value stages also returns.
	ErrPlanMismatch = quantstream.ErrPlanMismatch

	// ErrPanic is returned, wrapped with the stage and layer, when a stage, the
	// source, the sink or the progress callback panics, or a task that a stage
	// spread over the cores does (the export and calibration stages do).
	ErrPanic = parallel.ErrPanic

	// ErrElementType is emitted by a StageFlow that receives an element that is
	// neither a *quantstream.Layer nor an error.
	ErrElementType = errors.New("pipeline: unexpected element type")
)

// StageError places an error at a stage and a layer. The source and the sink report
// through it too, as stages named "source" and "sink".
type StageError struct {
	Stage string
	Layer int // quantstream layer index, quantstream.NonDecoder for the non-decoder group
	Err   error
}

func (e *StageError) Error() string {
	if e.Stage == sourceName || e.Stage == sinkName {
		return fmt.Sprintf("%s: %s: %v", e.Stage, quantstream.LayerName(e.Layer), e.Err)
	}
	return fmt.Sprintf("stage %s: %s: %v", e.Stage, quantstream.LayerName(e.Layer), e.Err)
}

func (e *StageError) Unwrap() error { return e.Err }

const (
	sourceName = "source"
	sinkName   = "sink"
)
