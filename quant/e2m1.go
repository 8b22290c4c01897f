package quant

import "math"

// E2M1 (FP4) and E8M0 element codecs.
//
// An E2M1 nibble is sign<<3 | code, code 0..7 standing for the magnitudes
// 0, 0.5, 1, 1.5, 2, 3, 4, 6. ModelOpt rounds to this grid in two different ways:
// NVFP4 (NVFP4QTensor._cast_fp4) sends ties to the even code and takes the sign
// from x < 0; MXFP4 (MXFP4QTensor.quantize) sends ties to the smaller magnitude and
// takes the sign from torch.sign, so every zero gets the sign bit.

// E2M1Max is the largest E2M1 magnitude.
const E2M1Max = 6.0

// e2m1Mag is the magnitude of each 3-bit code. These values are part of the
// checkpoint format.
var e2m1Mag = [8]float32{0, 0.5, 1, 1.5, 2, 3, 4, 6}

// e2m1Bounds are the midpoints between neighbouring magnitudes.
var e2m1Bounds = [7]float32{0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5}

// E2M1ToF32 decodes a nibble as NVFP4QTensor's table does: nibble 8 is +0.
func E2M1ToF32(n uint8) float32 {
	v := e2m1Mag[n&7]
	if n&8 != 0 && v != 0 {
		v = -v
	}
	return v
}

// e2m1SignedMX decodes a nibble as MXFP4QTensor.dequantize does: the sign is a
// factor ±1, so nibble 8 is −0.
func e2m1SignedMX(n uint8) float32 {
	v := e2m1Mag[n&7]
	if n&8 != 0 {
		v = -v
	}
	return v
}

// e2m1NVRef is the definition of the NVFP4 rounding (NVFP4QTensor._cast_fp4): the
// number of bounds strictly below |y| (torch.searchsorted, NaN sorting last), plus
// one on the ties 0.75, 1.75 and 3.5 so that every tie lands on the even code;
// the sign bit is y < 0, so −0 and NaN are positive.
func e2m1NVRef(y float32) uint8 {
	if y != y {
		return 7
	}
	a := float32(math.Abs(float64(y)))
	var code uint8
	for _, b := range e2m1Bounds {
		if b < a {
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

// e2m1MXRef is the definition of the MXFP4 rounding (MXFP4QTensor.quantize's
// cast_fp4): the number of bounds strictly below |y|, so ties go to the smaller
// magnitude, and sign bit (2 − sign(y)) // 2, which is 1 for y < 0 and for ±0.
// For NaN torch casts NaN to uint8, which is 0 on x86; we return 0.
func e2m1MXRef(y float32) uint8 {
	if y != y {
		return 0
	}
	a := float32(math.Abs(float64(y)))
	var code uint8
	for _, b := range e2m1Bounds {
		if a > b {
			code++
		}
	}
	if y <= 0 {
		code |= 8
	}
	return code
}

// The encoders look the nibble up by the float32's top 11 bits (sign, exponent,
// two mantissa bits) and one bit saying whether any lower mantissa bit is set.
// Every bound has at most two mantissa bits, so all floats sharing an index lie on
// the same side of every bound and are equal to a bound only when the lower bits
// are zero: one representative per index decides the whole class.
var e2m1NVTable, e2m1MXTable = func() (nv, mx *[4096]uint8) {
	nv, mx = new([4096]uint8), new([4096]uint8)
	for i := range 4096 {
		x := math.Float32frombits(uint32(i>>1)<<21 | uint32(i&1))
		nv[i] = e2m1NVRef(x)
		mx[i] = e2m1MXRef(x)
	}
	return
}()

func e2m1Index(u uint32) uint32 {
	low := u & 0x1FFFFF
	return u>>21<<1 | (low+0x1FFFFF)>>21
}

// F32ToE2M1Even encodes y as NVFP4 does: nearest E2M1 value, ties to the even code
// (0.25→0, 0.75→1, 1.25→1, 1.75→2, 2.5→2, 3.5→4, 5→4), saturating at 6; the sign bit
// is y < 0 (−0 → 0x0, a small negative that rounds to zero → 0x8, NaN → 0x7).
func F32ToE2M1Even(y float32) uint8 { return e2m1NVTable[e2m1Index(math.Float32bits(y))] }

// F32ToE2M1Down encodes y as MXFP4 does: nearest E2M1 value, ties to the smaller
// magnitude (0.75→0.5, 1.75→1.5, 3.5→3, 5→4), saturating at 6; the sign bit is set
// for y < 0 and for ±0 (zero encodes as 0x8). NaN gives 0.
func F32ToE2M1Down(y float32) uint8 { return e2m1MXTable[e2m1Index(math.Float32bits(y))] }

// E8M0Bias is the exponent bias of E8M0 scales (MXFP4, MXFP8).
const E8M0Bias = 127

// E8M0ToF32 decodes an E8M0 biased exponent: 2^(u−127); 255 is NaN. Codes 0 and 1
// decode to the float32 subnormals 2^-127 and 2^-126... exactly.
func E8M0ToF32(u uint8) float32 {
	if u == 255 {
		return float32(math.NaN())
	}
	return float32(math.Ldexp(1, int(u)-E8M0Bias))
}

// E8M0FromExponent encodes an unbiased exponent e (a float32 holding an integer, as
// ModelOpt computes it) the way ModelOpt stores it, (e + 127).to(torch.uint8).
// ModelOpt's exponents lie in [−127, 127]; outside [−127, 128] the cast wraps
// modulo 256 like the x86 integer conversion torch uses, and a non-finite e gives 0.
func E8M0FromExponent(e float32) uint8 {
	v := float64(e) + E8M0Bias
	if math.IsNaN(v) || math.IsInf(v, 0) || math.Abs(v) >= 1<<31 {
		return 0
	}
	return uint8(int32(v))
}

// ceilLog2F32 is torch.ceil(torch.log2(v)) on float32: the log is rounded to
// float32 before the ceiling (torch.log2 returns a float32 tensor), so
// 2^k·(1+2^-23) may give k.
//
// For a normal v = (1+f)·2^k the answer is k when f = 0 and k+1 when f ≥ 2^-10:
// then log2(1+f) ≥ 0.0014, far above half an ulp of any |k| ≤ 127, so the
// rounded log stays above k (and below or at k+1). Only tiny f, subnormals and
// non-finite v need the logarithm.
func ceilLog2F32(v float32) float32 {
	u := math.Float32bits(v)
	if exp := u >> 23 & 0xFF; u>>31 == 0 && exp != 0 && exp != 0xFF {
		k := float32(int(exp) - 127)
		switch man := u & 0x7FFFFF; {
		case man == 0:
			return k
		case man >= 1<<13:
			return k + 1
		}
	}
	return float32(math.Ceil(float64(float32(math.Log2(float64(v))))))
}
