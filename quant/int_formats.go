package quant

import (
	"fmt"
	"slices"
)

func init() {
	for _, name := range []string{"int8_sq", "int8_wo"} {
		RegisterFormat(&Format{Name: name, Quantize: int8FormatQuantize, Dequantize: int8FormatDequantize})
	}
	for _, name := range []string{"int4_awq", "w4a8_awq"} {
		RegisterFormat(&Format{Name: name, Quantize: int4FormatQuantize, Dequantize: int4FormatDequantize})
	}
}

func int8FormatQuantize(w Tensor, scale, _ *Tensor, _ int, _ DivMode) (Tensor, error) {
	if scale == nil {
		return Tensor{}, fmt.Errorf("%w: int8 quantization needs weights_scaling_factor", ErrShape)
	}
	return quantizeInt8(w, *scale)
}

func int8FormatDequantize(q Tensor, scale, _ *Tensor, _ int, dtype DType) (Tensor, error) {
	return UnquantizeWeight(q, scale, "int8_sq", dtype)
}

func int4FormatQuantize(w Tensor, scale, _ *Tensor, _ int, _ DivMode) (Tensor, error) {
	if scale == nil {
		return Tensor{}, fmt.Errorf("%w: int4 packing needs weights_scaling_factor", ErrShape)
	}
	return packInt4InUint8(w, *scale)
}

// int4FormatDequantize has no ModelOpt counterpart (from_quantized_weight raises for
// int4): it unpacks the nibbles and returns q * s, computed in float32 and rounded
// once to dtype. The block size comes from the scale's shape, as in packing.
func int4FormatDequantize(p Tensor, scale, _ *Tensor, _ int, dtype DType) (Tensor, error) {
	if scale == nil {
		return Tensor{}, fmt.Errorf("%w: int4 dequantization needs weights_scaling_factor", ErrShape)
	}
	q, err := unpackInt4(p)
	if err != nil {
		return Tensor{}, err
	}
	s := *scale
	if len(s.Shape) != len(q.Shape) || !slices.Equal(s.Shape[:len(s.Shape)-1], q.Shape[:len(q.Shape)-1]) {
		return Tensor{}, fmt.Errorf("%w: int4 scale %v for unpacked weight %v", ErrShape, s.Shape, q.Shape)
	}
	cols, sc := int(q.Shape[len(q.Shape)-1]), int(s.Shape[len(s.Shape)-1])
	if sc == 0 || cols%sc != 0 {
		return Tensor{}, fmt.Errorf("%w: %d columns in %d scale blocks", ErrShape, cols, sc)
	}
	sv, err := intScaleF32(s, "weights_scaling_factor")
	if err != nil {
		return Tensor{}, err
	}
	b := cols / sc
	out := make([]float32, len(q.Data))
	for i, v := range q.Data {
		row, c := i/cols, i%cols
		out[i] = float32(int8(v)) * sv[row*sc+c/b]
	}
	return FromFloat32(dtype, q.Shape, out)
}

// UnquantizeWeight is quant_utils.from_quantized_weight(w, s, format, dtype): a weight of 2+ bytes per element, a nil scale or an empty format is only
// cast to dtype; "fp8" reinterprets the bytes as E4M3 and multiplies by s in dtype;
// "int8_sq"/"int8_wo" multiply w by s[:, None] in dtype. Products use PyTorch
// broadcasting and are rounded once to dtype (BF16, F16 or F32). Other formats are
// ErrNotImplemented, as in ModelOpt.
func UnquantizeWeight(w Tensor, s *Tensor, format string, dtype DType) (Tensor, error) {
	if !intFloatDType(dtype) {
		return Tensor{}, fmt.Errorf("%w: dequantize to %v", ErrUnsupportedDType, dtype)
	}
	if err := w.Check(); err != nil {
		return Tensor{}, fmt.Errorf("weight: %w", err)
	}
	if w.DType.Size() >= 2 || s == nil || format == "" {
		return intCast(w, dtype)
	}
	switch format {
	case "fp8":
		if w.DType.Size() != 1 {
			return Tensor{}, fmt.Errorf("%w: cannot view %v as float8_e4m3fn", ErrShape, w.DType)
		}
		wv, err := Float32s(Tensor{DType: F8E4M3, Shape: w.Shape, Data: w.Data})
		if err != nil {
			return Tensor{}, err
		}
		return intMulInDType(w.Shape, wv, s.Shape, *s, dtype)
	case "int8_sq", "int8_wo":
		if len(s.Shape) == 0 {
			return Tensor{}, fmt.Errorf("%w: int8 scale is 0-dim", ErrShape)
		}
		wt, err := intCast(w, F32)
		if err != nil {
			return Tensor{}, err
		}
		wv, _ := Float32s(wt)
		sShape := append([]int64{s.Shape[0], 1}, s.Shape[1:]...)
		return intMulInDType(w.Shape, wv, sShape, *s, dtype)
	}
	return Tensor{}, fmt.Errorf("%w: from_quantized_weight for format %q", ErrNotImplemented, format)
}

// intMulInDType computes a.to(dtype) * s.to(dtype) with broadcasting; a holds values
// already exact in dtype (int8 and E4M3 values are exact in BF16/F16/F32).
func intMulInDType(aShape []int64, a []float32, sShape []int64, s Tensor, dtype DType) (Tensor, error) {
	sv, err := intScaleF32(s, "weights_scaling_factor")
	if err != nil {
		return Tensor{}, err
	}
	for i := range sv {
		sv[i] = RoundTo(dtype, sv[i])
	}
	for i := range a {
		a[i] = RoundTo(dtype, a[i])
	}
	outShape, ok := intBroadcastShape(aShape, sShape)
	if !ok {
		return Tensor{}, fmt.Errorf("%w: shapes %v and %v do not broadcast", ErrShape, aShape, sShape)
	}
	out := make([]float32, Numel(outShape))
	if _, err := intBroadcastApply(aShape, sShape, func(i, ia, is int) { out[i] = a[ia] * sv[is] }); err != nil {
		return Tensor{}, err
	}
	return FromFloat32(dtype, outShape, out)
}

// intCast is tensor.to(dtype) for a float dtype target: floats, E4M3/E5M2 and 8-bit
// integers are widened exactly and rounded once to dtype.
func intCast(t Tensor, dtype DType) (Tensor, error) {
	if t.DType == dtype {
		return Tensor{DType: dtype, Shape: cloneShape(t.Shape), Data: append([]byte(nil), t.Data...)}, nil
	}
	var v []float32
	switch t.DType {
	case I8:
		v = make([]float32, len(t.Data))
		for i, b := range t.Data {
			v[i] = float32(int8(b))
		}
	case U8:
		v = make([]float32, len(t.Data))
		for i, b := range t.Data {
			v[i] = float32(b)
		}
	case BF16, F16, F32, F8E4M3, F8E5M2:
		var err error
		if v, err = Float32s(t); err != nil {
			return Tensor{}, err
		}
	default:
		return Tensor{}, fmt.Errorf("%w: cast %v to %v", ErrUnsupportedDType, t.DType, dtype)
	}
	return FromFloat32(dtype, t.Shape, v)
}
