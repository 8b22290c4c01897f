package quant

import (
	"fmt"
	"math"
)

// Tensor is a dense, row-major, little-endian tensor: a dtype, a shape and its bytes.
// A Tensor does not own Data; whoever built it says who may retain the slice.
// A shape of length 0 is a 0-dim scalar.
type Tensor struct {
	DType DType
	Shape []int64
	Data  []byte
}

// Numel is the number of elements (1 for a 0-dim scalar).
func (t Tensor) Numel() int64 { return Numel(t.Shape) }

// Numel is the product of the dimensions (1 for an empty shape).
func Numel(shape []int64) int64 {
	n := int64(1)
	for _, d := range shape {
		n *= d
	}
	return n
}

// Check reports whether len(Data) matches DType and Shape (ErrShape otherwise,
// also for a negative dimension or an element count that overflows int64).
func (t Tensor) Check() error {
	numel := int64(1)
	for _, d := range t.Shape {
		if d < 0 {
			return fmt.Errorf("%w: negative dimension in shape %v", ErrShape, t.Shape)
		}
		if d != 0 && numel > math.MaxInt64/d {
			return fmt.Errorf("%w: shape %v has more than 2^63 elements", ErrShape, t.Shape)
		}
		numel *= d
	}
	want, ok := t.DType.ByteLen(numel)
	if !ok {
		return fmt.Errorf("%w: %v elements of %v do not fill whole bytes", ErrShape, numel, t.DType)
	}
	if int64(len(t.Data)) != want {
		return fmt.Errorf("%w: %v %v needs %d bytes, has %d", ErrShape, t.DType, t.Shape, want, len(t.Data))
	}
	return nil
}
