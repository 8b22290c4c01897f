package quant

import "math"

// E4M3 and E5M2 element codecs. The encoders reproduce PyTorch's float32 →
// float8_e4m3fn / float8_e5m2 casts (c10 Float8_*.h), which ModelOpt relies on.

// E4M3Max is the largest finite float8_e4m3fn value (0x7E).
const E4M3Max = 448.0

// e4m3NaN is the positive float8_e4m3fn NaN; 0xFF is the negative one.
const e4m3NaN = 0x7F

// e4m3Overflow is the float32 bit pattern of 480: every |x| from here up (and every
// NaN and infinity) is NaN in float8_e4m3fn. Values in (464, 480) round up into the
// 0x7F pattern on their own, so they become NaN as well.
const e4m3Overflow = 0x43F00000

// e4m3SubMagic is 2^14 (float32 bits 141<<23): its ulp is 2^-9, the E4M3
// subnormal step, so adding it to |x| < 2^-6 rounds |x| to the subnormal grid
// with IEEE round-to-nearest-even and leaves the code in the low mantissa bits.
const e4m3SubMagic = 141 << 23

// F32ToE4M3 converts to float8_e4m3fn as PyTorch's non-saturating cast does:
// round to nearest even (subnormals included), |x| > 464 and NaN → 0x7F with the
// sign of x, and the sign kept on zero (−0 → 0x80).
//
// Reference (slow) definition: the E4M3 value nearest to x, ties to the even code,
// NaN when that value would exceed 448 or x is not finite.
func F32ToE4M3(x float32) uint8 {
	u := math.Float32bits(x)
	sign := uint8(u>>24) & 0x80
	abs := u & 0x7FFFFFFF
	if abs >= e4m3Overflow {
		return sign | e4m3NaN
	}
	if abs < 121<<23 { // below 2^-6: subnormal range
		f := math.Float32frombits(abs) + math.Float32frombits(e4m3SubMagic)
		return sign | uint8(math.Float32bits(f)-e4m3SubMagic)
	}
	// Rebias 127 → 7 and round the 23-bit mantissa to 3 bits, ties to even.
	v := abs - 120<<23
	v += 0x7FFFF + (v>>20)&1
	return sign | uint8(v>>20)
}

// E4M3ToF32 widens a float8_e4m3fn code exactly; 0x7F and 0xFF are NaN.
func E4M3ToF32(c uint8) float32 { return e4m3Table[c] }

var e4m3Table = func() (t [256]float32) {
	for c := range 256 {
		t[c] = e4m3Decode(uint8(c))
	}
	return
}()

func e4m3Decode(c uint8) float32 {
	exp := int(c>>3) & 0xF
	man := float64(c & 7)
	var v float64
	switch {
	case c&0x7F == 0x7F:
		v = math.NaN()
	case exp == 0:
		v = math.Ldexp(man, -9)
	default:
		v = math.Ldexp(8+man, exp-10)
	}
	if c&0x80 != 0 {
		v = -v
	}
	return float32(v)
}

// e4m3FromBF16 maps every bfloat16 bit pattern to its E4M3 code. bf16 → f32 is
// exact, so this equals F32ToE4M3(BF16ToF32(h)) and is what the FP8 kernels use
// when the quotient is rounded to bf16 first (FP8 per-tensor, newFP8PerTensor).
var e4m3FromBF16 = func() *[1 << 16]uint8 {
	var t [1 << 16]uint8
	for h := range 1 << 16 {
		t[h] = F32ToE4M3(BF16ToF32(uint16(h)))
	}
	return &t
}()

// e4m3FromF32Top maps a float32's top 13 bits (sign, exponent, 4 mantissa bits)
// and a sticky bit (any lower bit set) to its E4M3 code. The cast rounds at the
// third mantissa bit at the earliest (E4M3 normals; subnormals round higher up), so
// the fourth bit is the guard and the rest only matter as sticky: one
// representative per index decides every float sharing it. 16 KiB.
var e4m3FromF32Top = func() *[1 << 14]uint8 {
	var t [1 << 14]uint8
	for i := range 1 << 14 {
		t[i] = F32ToE4M3(math.Float32frombits(uint32(i>>1)<<19 | uint32(i&1)))
	}
	return &t
}()

// f32ToE4M3Fast is F32ToE4M3 by table lookup.
func f32ToE4M3Fast(x float32) uint8 {
	u := math.Float32bits(x)
	low := u & 0x7FFFF
	return e4m3FromF32Top[u>>19<<1|(low+0x7FFFF)>>19]
}

// bf16ToE4M3 converts a bfloat16 bit pattern to float8_e4m3fn (table lookup).
func bf16ToE4M3(h uint16) uint8 { return e4m3FromBF16[h] }

// e5m2Overflow is 65536 in float32 bits: from here up the cast gives infinity.
const e5m2Overflow = 143 << 23

// e5m2SubMagic is 2^7 (bits 134<<23); its ulp is 2^-16, the E5M2 subnormal step.
const e5m2SubMagic = 134 << 23

// F32ToE5M2 converts to float8_e5m2 as PyTorch does: round to nearest even with
// subnormals, overflow to ±infinity (0x7C), NaN → 0x7F with the sign of x.
func F32ToE5M2(x float32) uint8 {
	u := math.Float32bits(x)
	sign := uint8(u>>24) & 0x80
	abs := u & 0x7FFFFFFF
	switch {
	case abs > 0x7F800000:
		return sign | 0x7F
	case abs >= e5m2Overflow:
		return sign | 0x7C
	case abs < 113<<23: // below 2^-14: subnormal range
		f := math.Float32frombits(abs) + math.Float32frombits(e5m2SubMagic)
		return sign | uint8(math.Float32bits(f)-e5m2SubMagic)
	}
	v := abs - 112<<23
	v += 0xFFFFF + (v>>21)&1
	return sign | uint8(v>>21)
}

// E5M2ToF32 widens a float8_e5m2 code exactly (it is the top byte of a binary16).
func E5M2ToF32(c uint8) float32 { return F16ToF32(uint16(c) << 8) }
