package quant

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
)

// ErrUnsupportedDType is returned when a tensor's dtype is not one a function accepts.
var ErrUnsupportedDType = errors.New("quant: unsupported dtype")

// appendFloat32 decodes t (BF16, F16, F32, F8_E4M3 or F8_E5M2) and appends its
// elements, in row-major order, to dst. Every conversion is exact. dst is returned
// grown; t.Data is only read.
//
// Reference loop: for i := range numel { dst = append(dst, float32(element i)) }.
func appendFloat32(dst []float32, t Tensor) ([]float32, error) {
	if err := t.Check(); err != nil {
		return dst, err
	}
	n := int(t.Numel())
	dst = growF32(dst, n)
	out := dst[len(dst)-n:]
	b := t.Data
	switch t.DType {
	case BF16:
		for i := range out {
			out[i] = math.Float32frombits(uint32(binary.LittleEndian.Uint16(b[2*i:])) << 16)
		}
	case F16:
		for i := range out {
			out[i] = F16ToF32(binary.LittleEndian.Uint16(b[2*i:]))
		}
	case F32:
		for i := range out {
			out[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
		}
	case F8E4M3:
		for i := range out {
			out[i] = e4m3Table[b[i]]
		}
	case F8E5M2:
		for i := range out {
			out[i] = E5M2ToF32(b[i])
		}
	default:
		return dst[:len(dst)-n], fmt.Errorf("%w: cannot decode %v as float", ErrUnsupportedDType, t.DType)
	}
	return dst, nil
}

// Float32s decodes t into a new slice (appendFloat32(nil, t)).
func Float32s(t Tensor) ([]float32, error) { return appendFloat32(nil, t) }

// AppendEncoded rounds each element of src to dt (BF16, F16 or F32, round to
// nearest even as PyTorch casts) and appends its little-endian bytes to dst.
func AppendEncoded(dst []byte, src []float32, dt DType) ([]byte, error) {
	size := dt.Size()
	switch dt {
	case BF16, F16, F32, F8E4M3:
	default:
		return dst, fmt.Errorf("%w: cannot encode float32 as %v", ErrUnsupportedDType, dt)
	}
	dst = growBytes(dst, len(src)*size)
	out := dst[len(dst)-len(src)*size:]
	switch dt {
	case BF16:
		for i, v := range src {
			binary.LittleEndian.PutUint16(out[2*i:], F32ToBF16(v))
		}
	case F16:
		for i, v := range src {
			binary.LittleEndian.PutUint16(out[2*i:], F32ToF16(v))
		}
	case F32:
		for i, v := range src {
			binary.LittleEndian.PutUint32(out[4*i:], math.Float32bits(v))
		}
	case F8E4M3:
		for i, v := range src {
			out[i] = F32ToE4M3(v)
		}
	}
	return dst, nil
}

// FromFloat32 builds a tensor of dtype dt and shape from src (rounding as AppendEncoded).
func FromFloat32(dt DType, shape []int64, src []float32) (Tensor, error) {
	if Numel(shape) != int64(len(src)) {
		return Tensor{}, fmt.Errorf("%w: %d values for shape %v", ErrShape, len(src), shape)
	}
	b, err := AppendEncoded(nil, src, dt)
	if err != nil {
		return Tensor{}, err
	}
	return Tensor{DType: dt, Shape: append([]int64{}, shape...), Data: b}, nil
}

// RoundTo rounds x to the precision of dt (BF16, F16; F32 and others unchanged),
// as storing a PyTorch result in a tensor of that dtype does.
func RoundTo(dt DType, x float32) float32 {
	switch dt {
	case BF16:
		return BF16ToF32(F32ToBF16(x))
	case F16:
		return F16ToF32(F32ToF16(x))
	}
	return x
}

// Scalar returns the single element of a one-element float tensor (0-dim or any
// shape with numel 1).
func Scalar(t Tensor) (float32, error) {
	if t.Numel() != 1 {
		return 0, fmt.Errorf("%w: want one element, have shape %v", ErrShape, t.Shape)
	}
	var buf [1]float32
	v, err := appendFloat32(buf[:0], t)
	if err != nil {
		return 0, err
	}
	return v[0], nil
}

func growF32(s []float32, n int) []float32 {
	if cap(s)-len(s) < n {
		ns := make([]float32, len(s), len(s)+n)
		copy(ns, s)
		s = ns
	}
	return s[:len(s)+n]
}

func growBytes(s []byte, n int) []byte {
	if cap(s)-len(s) < n {
		ns := make([]byte, len(s), len(s)+n)
		copy(ns, s)
		s = ns
	}
	return s[:len(s)+n]
}
