package quant

import (
	"fmt"
	"math"
)

// TensorQuantizer's properties as ModelOpt computes them from a quantizer's
// attributes and buffers: enabled, the representative of a chain, maxbound, amax and
// export_amax.

// isSequential reports whether q is a SequentialQuantizer (W4A8's chain).
func isSequential(q *Quantizer) bool {
	return q != nil && (len(q.Sequential) > 0 || q.Class == "SequentialQuantizer")
}

// qEnabled is is_enabled; a SequentialQuantizer delegates it to its first element.
func qEnabled(q *Quantizer) bool {
	if q == nil {
		return false
	}
	if isSequential(q) {
		return len(q.Sequential) > 0 && q.Sequential[0] != nil && q.Sequential[0].Enabled
	}
	return q.Enabled
}

// representative is representative_weight_quantizer for a singular quantizer.
func representative(q *Quantizer) *Quantizer {
	if isSequential(q) {
		if len(q.Sequential) == 0 {
			return nil
		}
		return q.Sequential[0]
	}
	return q
}

// bsTruthy is Python's truthiness of the block_sizes dict.
func bsTruthy(b *BlockSizes) bool {
	return b != nil && (len(b.Dims) > 0 || b.Type != "" || b.ScaleBits != nil || b.FourOverSix)
}

// bsLast is block_sizes[-1]; ok is false when the key is missing (a KeyError).
func bsLast(b *BlockSizes) (int, bool) {
	if b == nil {
		return 0, false
	}
	v, ok := b.Dims[-1]
	return v, ok
}

func scaleBitsIs(b *BlockSizes, n NumBits) bool {
	return b != nil && b.ScaleBits != nil && *b.ScaleBits == n
}

// IsMXFormat is TensorQuantizer.is_mx_format: dynamic blocks with E8M0 scales. Such a
// quantizer reports no amax, so it never yields an input_scale.
func IsMXFormat(q *Quantizer) bool {
	return q.BlockSizes.Dynamic() && scaleBitsIs(q.BlockSizes, BitsE8M0)
}

// intOf reports whether n is the integer width w (Python's num_bits == w).
func intOf(n NumBits, w int) bool { b, ok := n.Int(); return ok && b == w }

// amaxProperty is TensorQuantizer.amax: None without a buffer or for MX formats, and an
// assertion failure for a dynamic quantizer that holds one.
func amaxProperty(q *Quantizer, amax *Tensor) (*Tensor, error) {
	if amax == nil || IsMXFormat(q) {
		return nil, nil
	}
	if q.Dynamic {
		return nil, fmt.Errorf("%w: dynamic quantization does not have fixed amax", ErrAssertion)
	}
	return amax, nil
}

// MaxBound is TensorQuantizer.maxbound: 448 for E4M3, 6 for E2M1 with E4M3
// scales, 2^(n-1+unsigned)-1 for n-bit integers. ok is false where ModelOpt has none
// (MXFP4 and other float formats, where Python would raise).
func MaxBound(q *Quantizer) (float64, bool) {
	if q == nil {
		return 0, false
	}
	if n, isInt := q.NumBits.Int(); isInt {
		e := n - 1
		if q.Unsigned {
			e++
		}
		if e < 0 || e > 62 {
			return 0, false
		}
		return float64(int64(1)<<e - 1), true
	}
	switch {
	case q.NumBits == BitsE4M3:
		return 448, true
	case q.NumBits == BitsE2M1 && scaleBitsIs(q.BlockSizes, BitsE4M3):
		return 6, true
	}
	return 0, false
}

// finfo is torch.finfo(dt).tiny and .max for the float dtypes amax buffers use.
func finfo(dt DType) (tiny, maxv float32, ok bool) {
	switch dt {
	case BF16:
		return 0x1p-126, math.Float32frombits(0x7F7F0000), true
	case F16:
		return 0x1p-14, 65504, true
	case F32:
		return 0x1p-126, math.MaxFloat32, true
	}
	return 0, 0, false
}

// resolveShape fills one -1 of shape so that it holds numel elements.
func resolveShape(shape []int64, numel int64) ([]int64, error) {
	out := cloneShape(shape)
	known, hole := int64(1), -1
	for i, d := range out {
		if d == -1 {
			if hole >= 0 {
				return nil, fmt.Errorf("%w: two -1 in shape %v", ErrShape, shape)
			}
			hole = i
			continue
		}
		known *= d
	}
	if hole >= 0 {
		if known == 0 || numel%known != 0 {
			return nil, fmt.Errorf("%w: cannot reshape %d elements to %v", ErrShape, numel, shape)
		}
		out[hole] = numel / known
	} else if known != numel {
		return nil, fmt.Errorf("%w: cannot reshape %d elements to %v", ErrShape, numel, shape)
	}
	return out, nil
}

// ExportAmax is TensorQuantizer.export_amax. It returns a new tensor and never
// mutates amax (ModelOpt fixes zeros in the stored buffer in place; nothing this package
// computes reads the buffer again afterwards). A nil amax gives nil; a dynamic-block
// quantizer returns a copy of amax, unchanged (nil for MX formats, whose amax is None).
//
// Otherwise: reshape to AmaxShape when set; 0 and NaN → maxbound, +inf → finfo.max;
// clamp to [finfo.tiny, finfo.max] of amax's own dtype (ModelOpt uses
// torch.finfo(amax.dtype), so a BF16 amax is clamped to BF16's range); then, without
// block sizes, a per-tensor amax gains a leading dim (0-dim → (1,)) and a single-axis
// amax is squeezed ((O,1) → (O,)). The result keeps amax's dtype.
func ExportAmax(q *Quantizer, amax *Tensor) (*Tensor, error) {
	if q == nil {
		return nil, nil
	}
	if q.BlockSizes.Dynamic() {
		a, err := amaxProperty(q, amax)
		if a == nil || err != nil {
			return nil, err
		}
		return cloneTensor(a), nil
	}
	a, err := amaxProperty(q, amax)
	if a == nil || err != nil {
		return nil, err
	}
	tiny, maxv, ok := finfo(a.DType)
	if !ok {
		return nil, fmt.Errorf("%w: amax of dtype %v", ErrUnsupportedDType, a.DType)
	}
	mb, ok := MaxBound(q)
	if !ok {
		return nil, fmt.Errorf("%w (num_bits %v)", ErrNoMaxBound, q.NumBits)
	}
	v, err := Float32s(*a)
	if err != nil {
		return nil, fmt.Errorf("amax: %w", err)
	}
	shape := cloneShape(a.Shape)
	if q.AmaxShape != nil {
		if shape, err = resolveShape(q.AmaxShape, int64(len(v))); err != nil {
			return nil, fmt.Errorf("amax: %w", err)
		}
	}
	fill := RoundTo(a.DType, float32(mb))
	for i, x := range v {
		switch {
		case x == 0 || x != x:
			x = fill
		case x > maxv:
			x = maxv
		case x < -maxv:
			x = -maxv
		}
		if x < tiny {
			x = tiny
		}
		v[i] = x
	}
	if q.BlockSizes == nil {
		switch {
		case q.Axis == nil:
			shape = append([]int64{1}, shape...)
		case len(q.Axis) == 1:
			sq := shape[:0:0]
			for _, d := range shape {
				if d != 1 {
					sq = append(sq, d)
				}
			}
			shape = sq
		}
	}
	t, err := FromFloat32(a.DType, shape, v)
	if err != nil {
		return nil, err
	}
	return &t, nil
}
