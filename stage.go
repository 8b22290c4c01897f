package quantstream

import "context"

// TensorInfo is a tensor's header: what is known before its data is read.
type TensorInfo struct {
	Name  string
	DType string
	Shape []int64
}

// Stage is one step of a conversion. Process receives a Layer it owns and returns the
// Layer that goes on (the same one, or a new one after releasing the input). Plan maps
// the headers of a layer to the headers Process will produce, without data, so that
// output files can be laid out before any tensor is read.
//
// Process owns its input in every case: on success it returns it or releases it; on
// error it releases it (and returns a nil Layer); a stage that may panic releases
// its input in a defer. A Stage must be safe for concurrent use on different layers.
type Stage interface {
	Name() string
	Plan(layer int, in []TensorInfo) ([]TensorInfo, error)
	Process(ctx context.Context, l *Layer) (*Layer, error)
}
