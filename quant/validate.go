package quant

import (
	"errors"
	"fmt"
	"math"
)

// Errors of calibration-state validation.
var (
	// ErrNonFinite marks a NaN or ±Inf where a finite value is needed (an amax, a
	// global amax, a pre_quant_scale).
	ErrNonFinite = errors.New("quant: non-finite value")
	// ErrNonPositive marks a negative value where a magnitude is needed, or a zero
	// that would become a division by zero.
	ErrNonPositive = errors.New("quant: value not positive")
)

// CheckFinite reports the first element of t that is NaN or ±Inf (ErrNonFinite) or,
// unless allowNegative, below zero (ErrNonPositive); with positive set, zero is
// refused too (ErrNonPositive). t must be a float tensor of consistent length.
//
// ModelOpt's export_amax turns a NaN amax into maxbound and +Inf into finfo.max, so
// a NaN calibration result would be exported as a full-range scale. quantstream
// refuses non-finite and negative amax instead: they are calibration failures, and
// a checkpoint quantized with a made-up range is worse than none.
func CheckFinite(t Tensor, positive bool) error {
	v, err := Float32s(t)
	if err != nil {
		return err
	}
	for i, x := range v {
		switch {
		case math.IsNaN(float64(x)) || math.IsInf(float64(x), 0):
			return fmt.Errorf("%w: element %d of %v %v is %v", ErrNonFinite, i, t.DType, t.Shape, x)
		case x < 0:
			return fmt.Errorf("%w: element %d of %v %v is %v", ErrNonPositive, i, t.DType, t.Shape, x)
		case positive && x == 0:
			return fmt.Errorf("%w: element %d of %v %v is 0", ErrNonPositive, i, t.DType, t.Shape)
		}
	}
	return nil
}
