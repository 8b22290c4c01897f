package quant

import "math"

// BF16ToF32 widens a bfloat16 bit pattern exactly.
func BF16ToF32(h uint16) float32 { return math.Float32frombits(uint32(h) << 16) }

// F32ToBF16 rounds to the nearest bfloat16, ties to even, as PyTorch does;
// every NaN becomes the quiet NaN 0x7FC0.
func F32ToBF16(f float32) uint16 {
	if f != f {
		return 0x7FC0
	}
	u := math.Float32bits(f)
	bias := (u>>16)&1 + 0x7FFF
	return uint16((u + bias) >> 16)
}

// F16ToF32 widens an IEEE binary16 bit pattern exactly.
func F16ToF32(h uint16) float32 {
	sign := uint32(h>>15) << 31
	exp := uint32(h>>10) & 0x1F
	man := uint32(h) & 0x3FF
	switch {
	case exp == 0x1F:
		return math.Float32frombits(sign | 0x7F800000 | man<<13)
	case exp != 0:
		return math.Float32frombits(sign | (exp+112)<<23 | man<<13)
	case man == 0:
		return math.Float32frombits(sign)
	}
	// Subnormal: value = man * 2^-24, exact in float32.
	return math.Float32frombits(sign) + float32(man)*(1.0/(1<<24))*signOne(sign)
}

func signOne(sign uint32) float32 {
	if sign != 0 {
		return -1
	}
	return 1
}

// F32ToF16 rounds to the nearest IEEE binary16, ties to even, with subnormals and
// overflow to infinity, as PyTorch's cast does. NaN keeps its sign and becomes quiet.
func F32ToF16(f float32) uint16 {
	u := math.Float32bits(f)
	sign := uint16(u>>16) & 0x8000
	abs := u & 0x7FFFFFFF
	switch {
	case abs > 0x7F800000: // NaN
		return sign | 0x7E00
	case abs >= 0x477FF000: // rounds to >= 65536: infinity
		return sign | 0x7C00
	case abs >= 0x38800000: // normal half: exponent >= -14
		// Rebias exponent (127 -> 15) and round the 23-bit mantissa to 10 bits.
		v := abs - (112 << 23)
		v += 0xFFF + (v>>13)&1
		return sign | uint16(v>>13)
	case abs < 0x33000000: // below half the smallest subnormal (2^-25): zero
		return sign
	}
	// Subnormal half: value / 2^-24 rounded to an integer, ties to even.
	e := abs >> 23
	man := abs&0x7FFFFF | 0x800000
	shift := 126 - e // so that man >> shift counts units of 2^-24
	q := man >> shift
	rem := man & (1<<shift - 1)
	half := uint32(1) << (shift - 1)
	if rem > half || (rem == half && q&1 == 1) {
		q++
	}
	return sign | uint16(q)
}
