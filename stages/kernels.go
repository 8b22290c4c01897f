package stages

// The numeric kernels the export steps need. They mirror quant/'s planned kernels
// (owned by other helpers, not available when this package was written); each is a
// naive reference loop and keeps every PyTorch operation as its own rounded float32
// step, so Go never fuses a multiply-add.

import (
	"fmt"
	"math"

	"github.com/quantstream/quantstream/quant"
)

const (
	e4m3Max   = 448.0
	e2m1Max   = 6.0
	f32Tiny   = 1.17549435e-38
	nvfp4Lo   = 1.0 / 512 // 2^-9, the smallest E4M3 subnormal
	mxBiasE8  = 127
	int4Bound = 7.0
)

// floats decodes a BF16, F16 or F32 tensor to float32 (exact).
func floats(t quant.Tensor) ([]float32, error) {
	n := int(t.Numel())
	out := make([]float32, n)
	switch t.DType {
	case quant.BF16:
		if len(t.Data) != 2*n {
			return nil, fmt.Errorf("%w: %v %v has %d bytes", ErrShape, t.DType, t.Shape, len(t.Data))
		}
		for i := range out {
			out[i] = quant.BF16ToF32(uint16(t.Data[2*i]) | uint16(t.Data[2*i+1])<<8)
		}
	case quant.F16:
		if len(t.Data) != 2*n {
			return nil, fmt.Errorf("%w: %v %v has %d bytes", ErrShape, t.DType, t.Shape, len(t.Data))
		}
		for i := range out {
			out[i] = quant.F16ToF32(uint16(t.Data[2*i]) | uint16(t.Data[2*i+1])<<8)
		}
	case quant.F32:
		if len(t.Data) != 4*n {
			return nil, fmt.Errorf("%w: %v %v has %d bytes", ErrShape, t.DType, t.Shape, len(t.Data))
		}
		for i := range out {
			b := t.Data[4*i:]
			out[i] = math.Float32frombits(uint32(b[0]) | uint32(b[1])<<8 | uint32(b[2])<<16 | uint32(b[3])<<24)
		}
	default:
		return nil, fmt.Errorf("%w: %v is not a float dtype", ErrDType, t.DType)
	}
	return out, nil
}

// roundTo rounds a float32 to the precision of dt (BF16/F16/F32), as a tensor of
// that dtype would store it.
func roundTo(x float32, dt quant.DType) float32 {
	switch dt {
	case quant.BF16:
		return quant.BF16ToF32(quant.F32ToBF16(x))
	case quant.F16:
		return quant.F16ToF32(quant.F32ToF16(x))
	}
	return x
}

// encode stores float32 values as dt (BF16/F16/F32), rounding to nearest even.
func encode(vals []float32, dt quant.DType) []byte {
	switch dt {
	case quant.BF16, quant.F16:
		out := make([]byte, 2*len(vals))
		for i, v := range vals {
			var h uint16
			if dt == quant.BF16 {
				h = quant.F32ToBF16(v)
			} else {
				h = quant.F32ToF16(v)
			}
			out[2*i], out[2*i+1] = byte(h), byte(h>>8)
		}
		return out
	default:
		out := make([]byte, 4*len(vals))
		for i, v := range vals {
			u := math.Float32bits(v)
			out[4*i], out[4*i+1], out[4*i+2], out[4*i+3] = byte(u), byte(u>>8), byte(u>>16), byte(u>>24)
		}
		return out
	}
}

func f32Tensor(shape []int64, vals []float32) quant.Tensor {
	return quant.Tensor{DType: quant.F32, Shape: shape, Data: encode(vals, quant.F32)}
}

// absMax is max(|max(x)|, |min(x)|); NaN propagates like torch.max.
func absMax(x []float32) float32 {
	var m float32
	for _, v := range x {
		if v != v {
			return v
		}
		if a := float32(math.Abs(float64(v))); a > m {
			m = a
		}
	}
	return m
}

// fp8 converts like PyTorch's float32 -> float8_e4m3fn: round to nearest even, no
// saturation (|x| > 464 and NaN become 0x7F), sign kept.
func fp8(x float32) byte {
	const fp8Max = uint32(1087) << 20 // 480.0
	const denormMask = uint32(141) << 23
	bits := math.Float32bits(x)
	sign := bits & 0x80000000
	bits ^= sign
	var r uint32
	switch {
	case bits >= fp8Max:
		r = 0x7F
	case bits < uint32(121)<<23: // below 2^-6: subnormal range
		f := math.Float32frombits(bits) + math.Float32frombits(denormMask)
		r = math.Float32bits(f) - denormMask
	default:
		odd := (bits >> 20) & 1
		bits += 0xC4000000 + 0x7FFFF // (7-127)<<23 in two's complement: rebias the exponent
		bits += odd
		r = bits >> 20
	}
	return byte(r | sign>>24)
}

// fp8ToF32 decodes an E4M3FN byte exactly.
func fp8ToF32(b byte) float32 {
	sign := float32(1)
	if b&0x80 != 0 {
		sign = -1
	}
	e := int(b>>3) & 0xF
	m := int(b & 7)
	if e == 0xF && m == 7 {
		return float32(math.NaN())
	}
	if e == 0 {
		return sign * float32(math.Ldexp(float64(m), -9))
	}
	return sign * float32(math.Ldexp(float64(8+m), e-10))
}

// e2m1Even is the NVFP4 nibble of y: magnitude rounded to {0,.5,1,1.5,2,3,4,6} with
// ties to the even code, sign bit from y < 0, NaN -> 7.
func e2m1Even(y float32) byte {
	if y != y {
		return 7
	}
	a := float32(math.Abs(float64(y)))
	var code byte
	for _, b := range [...]float32{0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5} {
		if a > b {
			code++
		}
	}
	if a == 0.75 || a == 1.75 || a == 3.5 {
		code++
	}
	if y < 0 {
		code |= 8
	}
	return code
}

// nvfp4BlockScales is NVFP4QTensor.get_weights_scaling_factor: per block of B along
// the last dim, fp8(clamp(f32(amax / f32(6*wsf2)), 2^-9, 448)) with 0 -> 1.
func nvfp4BlockScales(w []float32, rows, cols, block int, wsf2 float32) []byte {
	nb := cols / block
	out := make([]byte, rows*nb)
	d := float32(6 * wsf2)
	for r := range rows {
		for j := range nb {
			a := absMax(w[r*cols+j*block : r*cols+(j+1)*block])
			s := a / d
			if s == 0 {
				s = 1
			}
			if s < nvfp4Lo {
				s = nvfp4Lo
			}
			if s > e4m3Max {
				s = e4m3Max
			}
			out[r*nb+j] = fp8(s)
		}
	}
	return out
}

// nvfp4Pack quantizes w (already in the export dtype) with E4M3 block scales and the
// global scale wsf2 and packs two nibbles per byte along the last dim (even element in
// the low nibble).
func nvfp4Pack(w []float32, rows, cols, block int, scales []byte, wsf2 float32) []byte {
	nb := cols / block
	out := make([]byte, rows*cols/2)
	for r := range rows {
		for j := range nb {
			div := float32(fp8ToF32(scales[r*nb+j]) * wsf2)
			for k := 0; k < block; k += 2 {
				i := r*cols + j*block + k
				lo := e2m1Even(w[i] / div)
				hi := e2m1Even(w[i+1] / div)
				out[i/2] = lo | hi<<4
			}
		}
	}
	return out
}

// exportAmax applies TensorQuantizer.export_amax's fix to a non-dynamic amax:
// 0 and NaN -> maxbound, then clamp to [f32 tiny, f32 max]. Values are those of the
// buffer dtype, so the fix happens before any .float().
func exportAmax(a []float32, maxbound float32) []float32 {
	out := make([]float32, len(a))
	for i, v := range a {
		if v == 0 || v != v {
			v = maxbound
		}
		if v < f32Tiny {
			v = f32Tiny
		}
		if v > math.MaxFloat32 {
			v = math.MaxFloat32
		}
		out[i] = v
	}
	return out
}

// packInt4 is pack_int4_in_uint8: q = clamp(rne(f32(w/s)), -8, 7) with the block
// scale of column c at s[r][c/B], pairs of consecutive rows packed into one byte.
func packInt4(w []float32, rows, cols int, s []float32, nb int) []byte {
	block := cols / nb
	out := make([]byte, rows/2*cols)
	q := func(r, c int) byte {
		v := float32(math.RoundToEven(float64(w[r*cols+c] / s[r*nb+c/block])))
		if v < -8 {
			v = -8
		}
		if v > 7 {
			v = 7
		}
		if v != v {
			v = 0 // torch's NaN -> int8 cast is undefined; ModelOpt never feeds NaN here
		}
		return byte(int8(v)) & 0xF
	}
	for r := 0; r < rows; r += 2 {
		for c := range cols {
			out[r/2*cols+c] = q(r, c) | q(r+1, c)<<4
		}
	}
	return out
}

// mxfp8 computes the E8M0 block scales and the FP8 codes of MXFP8QTensor.
func mxfp8(w []float32, rows, cols, block int, mode quant.DivMode) (q, scales []byte) {
	nb := cols / block
	q = make([]byte, rows*cols)
	scales = make([]byte, rows*nb)
	for r := range rows {
		for j := range nb {
			blk := w[r*cols+j*block : r*cols+(j+1)*block]
			d := quant.DivScalar(absMax(blk), e4m3Max, mode)
			e := -127.0
			if d > 0 {
				e = math.Ceil(float64(float32(math.Log2(float64(d)))))
			}
			e = max(-127, min(127, e))
			scales[r*nb+j] = byte(int(e) + mxBiasE8)
			p := math.Ldexp(1, -int(e))
			for k, v := range blk {
				y := float32(float64(v) * p)
				if y > e4m3Max {
					y = e4m3Max
				}
				if y < -e4m3Max {
					y = -e4m3Max
				}
				q[r*cols+j*block+k] = fp8(y)
			}
		}
	}
	return q, scales
}
