package stages

import (
	"fmt"
	"slices"

	quantstream "github.com/quantstream/quantstream"
	"github.com/quantstream/quantstream/quant"
)

// header is a tensor header that only a dtype and shape describe (the name is where
// it is kept: a map key, a module's attribute).
func header(dt quant.DType, shape []int64) quantstream.TensorInfo {
	return quantstream.TensorInfo{DType: dt, Shape: shape}
}

// tensorSet is the working state of one layer: headers always (hdr[n].Name == n),
// data when processing.
// Input data is never written: a step that changes a tensor stores a new one.
type tensorSet struct {
	hdr  map[string]quantstream.TensorInfo
	data map[string]quant.Tensor // nil while planning
	// later holds the outputs computed only when the layer's output buffer exists
	// (rowJob), by name; such a tensor has a header and no data.
	later map[string]laterOut
	// notes are what the export did that a user should know (Stage.Notes).
	notes []string
	// fp8 are the coded block-FP8 weights not yet exported (fp8coded.go): their
	// data is their codes, under their BF16 header.
	fp8 map[string]quant.FP8Block
}

// rowJob computes one module's large outputs row range by row range, straight into
// the output layer: rows are independent, so Stage.Process splits them across cores
// and the bytes do not depend on the split. A unit of the split is a row, or a pair
// of rows where a format packs two rows into one (INT4).
type rowJob struct {
	rows     int   // units
	align    int   // units a piece should be a multiple of (quant.RowExport.Align)
	rowBytes int64 // input bytes per unit, to size the pieces
	outs     []string
	outBytes []int64 // each output's size
	// fill writes units [r0, r1) of every output; dst[k] is all of outs[k].
	fill func(dst [][]byte, r0, r1 int) error
}

type laterOut struct {
	job *rowJob
	k   int // index in job.outs
}

// setLater records name as output k of job, with its header.
func (ts *tensorSet) setLater(name string, dt quant.DType, shape []int64, job *rowJob, k int) {
	ts.setHeader(name, dt, shape)
	delete(ts.data, name)
	if ts.later == nil {
		ts.later = map[string]laterOut{}
	}
	ts.later[name] = laterOut{job, k}
}

func (ts *tensorSet) planning() bool { return ts.data == nil }

func (ts *tensorSet) has(name string) bool { _, ok := ts.hdr[name]; return ok }

func (ts *tensorSet) get(name string) (quant.Tensor, error) {
	if _, coded := ts.fp8[name]; coded {
		return quant.Tensor{}, fmt.Errorf("%w: tensor %q is read as %s while it holds block-FP8 codes", ErrPlanMismatch, name, ts.hdr[name].DType)
	}
	t, ok := ts.data[name]
	if !ok {
		if _, later := ts.later[name]; later {
			return quant.Tensor{}, fmt.Errorf("%w: tensor %q is read before it is computed", ErrPlanMismatch, name)
		}
		return quant.Tensor{}, fmt.Errorf("%w: tensor %q not in layer", ErrPlanMismatch, name)
	}
	return t, nil
}

func (ts *tensorSet) floats(name string) ([]float32, error) {
	t, err := ts.get(name)
	if err != nil {
		return nil, err
	}
	v, err := quant.Float32s(t)
	if err != nil {
		return nil, fmt.Errorf("tensor %q: %w", name, err)
	}
	return v, nil
}

// set stores a tensor (header and, when processing, data).
func (ts *tensorSet) set(name string, t quant.Tensor) {
	ts.hdr[name] = quantstream.TensorInfo{Name: name, DType: t.DType, Shape: slices.Clone(t.Shape)}
	if ts.data != nil {
		ts.data[name] = t
	}
	delete(ts.later, name)
}

// setHeader records a tensor whose data is computed later (or only planned).
func (ts *tensorSet) setHeader(name string, dt quant.DType, shape []int64) {
	ts.hdr[name] = quantstream.TensorInfo{Name: name, DType: dt, Shape: slices.Clone(shape)}
}

// setFloats stores values with the given header, rounding to its dtype.
func (ts *tensorSet) setFloats(name string, dt quant.DType, shape []int64, v []float32) error {
	t, err := quant.FromFloat32(dt, shape, v)
	if err != nil {
		return fmt.Errorf("tensor %q: %w", name, err)
	}
	ts.set(name, t)
	return nil
}

func (ts *tensorSet) del(name string) {
	delete(ts.hdr, name)
	if ts.data != nil {
		delete(ts.data, name)
	}
	if lo, ok := ts.later[name]; ok {
		// The job still writes this output; it goes nowhere.
		lo.job.outs[lo.k] = ""
		delete(ts.later, name)
	}
}

// scalar reads a one-element float tensor.
func (ts *tensorSet) scalar(name string) (float32, error) {
	v, err := ts.floats(name)
	if err != nil {
		return 0, err
	}
	if len(v) != 1 {
		return 0, fmt.Errorf("%w: tensor %q has %d elements, want 1", ErrShape, name, len(v))
	}
	return v[0], nil
}

func numel(shape []int64) int64 { return quant.Numel(shape) }

// absMax is max(|x|) with NaN propagating, like reduce_amax.
func absMax(x []float32) float32 {
	var m float32
	for _, v := range x {
		if v != v {
			return v
		}
		m = max(m, v, -v)
	}
	return m
}

// heldTensor is a tensor taken out of a tensorSet to be put back under another name.
type heldTensor struct {
	hdr      quantstream.TensorInfo
	data     quant.Tensor
	hasData  bool
	later    laterOut
	hasLater bool
}

// take removes name and returns all the set knows of it (header, data, or the job
// that computes it later).
func (ts *tensorSet) take(name string) heldTensor {
	h := heldTensor{hdr: ts.hdr[name]}
	h.data, h.hasData = ts.data[name]
	h.later, h.hasLater = ts.later[name]
	delete(ts.hdr, name)
	delete(ts.data, name)
	delete(ts.later, name)
	return h
}

// put stores a taken tensor under name; a job computing it writes under the new name.
func (ts *tensorSet) put(name string, h heldTensor) {
	h.hdr.Name = name
	ts.hdr[name] = h.hdr
	if h.hasData && ts.data != nil {
		ts.data[name] = h.data
	}
	if h.hasLater {
		h.later.job.outs[h.later.k] = name
		if ts.later == nil {
			ts.later = map[string]laterOut{}
		}
		ts.later[name] = h.later
	}
}
