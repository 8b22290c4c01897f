package quant

import (
	"math"
	"testing"
)

// e2m1Oracle is the brute-force E2M1 encoder: the nearest of the eight magnitudes,
// ties resolved by tie; the sign is chosen by the caller's rule.
func e2m1Oracle(y float32, tie func(lo, hi int) int, zeroSigned bool) uint8 {
	a := math.Abs(float64(y))
	vals := make([]float64, 8)
	for i, v := range e2m1Mag {
		vals[i] = float64(v)
	}
	code := uint8(nearestCode(a, vals, tie))
	if a >= 6 { // above the grid every distance may round to the same float64
		code = 7
	}
	neg := y < 0 || (zeroSigned && y == 0)
	if neg {
		code |= 8
	}
	return code
}

func tieDown(lo, hi int) int { return min(lo, hi) }

func TestE2M1AllCodes(t *testing.T) {
	want := []float32{0, 0.5, 1, 1.5, 2, 3, 4, 6, 0, -0.5, -1, -1.5, -2, -3, -4, -6}
	for n := range 16 {
		if got := E2M1ToF32(uint8(n)); got != want[n] {
			t.Errorf("E2M1ToF32(%#x) = %v, want %v", n, got, want[n])
		}
		v := E2M1ToF32(uint8(n))
		if n == 8 {
			continue // +0: both encoders give 0 (NVFP4) or 8 (MXFP4) by their zero rules
		}
		if got := F32ToE2M1Even(v); got != uint8(n) {
			t.Errorf("F32ToE2M1Even(%v) = %#x, want %#x", v, got, n)
		}
		if n != 0 {
			if got := F32ToE2M1Down(v); got != uint8(n) {
				t.Errorf("F32ToE2M1Down(%v) = %#x, want %#x", v, got, n)
			}
		}
	}
	if !math.Signbit(float64(e2m1SignedMX(8))) || math.Signbit(float64(E2M1ToF32(8))) {
		t.Error("nibble 8: MXFP4 decodes -0, NVFP4 +0")
	}
}

func TestE2M1NamedCases(t *testing.T) {
	negZero := float32(math.Copysign(0, -1))
	for _, tc := range []struct {
		name     string
		in       float32
		nv, mx   uint8
		nvOracle bool // the nearest-value oracle also defines the NVFP4 answer
	}{
		{"zero", 0, 0x0, 0x8, true},
		{"negative zero", negZero, 0x0, 0x8, false},
		{"tie 0.25", 0.25, 0x0, 0x0, true},
		{"tie 0.75", 0.75, 0x2, 0x1, true},
		{"tie 1.25", 1.25, 0x2, 0x2, true},
		{"tie 1.75", 1.75, 0x4, 0x3, true},
		{"tie 2.5", 2.5, 0x4, 0x4, true},
		{"tie 3.5", 3.5, 0x6, 0x5, true},
		{"tie 5", 5, 0x6, 0x6, true},
		{"negative tie -3.5", -3.5, 0xE, 0xD, true},
		{"above 5", math.Nextafter32(5, 6), 0x7, 0x7, true},
		{"saturate", 100, 0x7, 0x7, true},
		{"-inf", float32(math.Inf(-1)), 0xF, 0xF, true},
		{"small negative rounds to zero", -0.1, 0x8, 0x8, true},
		{"negative subnormal", -math.SmallestNonzeroFloat32, 0x8, 0x8, true},
		{"NaN", float32(math.NaN()), 0x7, 0x0, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := F32ToE2M1Even(tc.in); got != tc.nv {
				t.Errorf("F32ToE2M1Even(%v) = %#x, want %#x", tc.in, got, tc.nv)
			}
			if got := F32ToE2M1Down(tc.in); got != tc.mx {
				t.Errorf("F32ToE2M1Down(%v) = %#x, want %#x", tc.in, got, tc.mx)
			}
			if tc.nvOracle {
				if got := e2m1Oracle(tc.in, tieEven, false); got != tc.nv {
					t.Errorf("even oracle(%v) = %#x, want %#x", tc.in, got, tc.nv)
				}
				if got := e2m1Oracle(tc.in, tieDown, true); got != tc.mx {
					t.Errorf("down oracle(%v) = %#x, want %#x", tc.in, got, tc.mx)
				}
			}
		})
	}
}

// TestE2M1TableMatchesReference checks the lookup encoders against the reference
// definitions at every class boundary and around every bound.
func TestE2M1TableMatchesReference(t *testing.T) {
	check := func(u uint32) {
		x := math.Float32frombits(u)
		if got, want := F32ToE2M1Even(x), e2m1NVRef(x); got != want {
			t.Fatalf("F32ToE2M1Even(%g [%#08x]) = %#x, ref %#x", x, u, got, want)
		}
		if got, want := F32ToE2M1Down(x), e2m1MXRef(x); got != want {
			t.Fatalf("F32ToE2M1Down(%g [%#08x]) = %#x, ref %#x", x, u, got, want)
		}
	}
	for i := range uint32(1 << 11) {
		base := i << 21
		for _, d := range []uint32{0, 1, 2, 0xFFFFF, 0x100000, 0x1FFFFE, 0x1FFFFF} {
			check(base | d)
		}
	}
}

func fuzzE2M1(t *testing.T, u uint32) {
	x := math.Float32frombits(u)
	if x != x {
		return // NaN has no nearest value; the named cases pin it
	}
	if got, want := F32ToE2M1Even(x), e2m1Oracle(x, tieEven, false); got != want {
		t.Fatalf("F32ToE2M1Even(%g [%#08x]) = %#x, oracle %#x", x, u, got, want)
	}
	if got, want := F32ToE2M1Down(x), e2m1Oracle(x, tieDown, true); got != want {
		t.Fatalf("F32ToE2M1Down(%g [%#08x]) = %#x, oracle %#x", x, u, got, want)
	}
}

func FuzzE2M1(f *testing.F) {
	fuzzSeeds(f)
	f.Fuzz(fuzzE2M1)
}

func TestE8M0AllCodes(t *testing.T) {
	for u := range 256 {
		f := E8M0ToF32(uint8(u))
		if u == 255 {
			if !math.IsNaN(float64(f)) {
				t.Errorf("E8M0ToF32(255) = %v, want NaN", f)
			}
			continue
		}
		if want := math.Ldexp(1, u-127); float64(f) != want {
			t.Errorf("E8M0ToF32(%d) = %v, want %v", u, f, want)
		}
		e := float32(u - 127)
		if got := E8M0FromExponent(e); got != uint8(u) {
			t.Errorf("E8M0FromExponent(%v) = %d, want %d", e, got, u)
		}
		if got := mxExp2(e); got != f {
			t.Errorf("mxExp2(%v) = %v, want %v", e, got, f)
		}
	}
	for _, tc := range []struct {
		e    float32
		want uint8
	}{{128, 255}, {float32(math.NaN()), 0}, {float32(math.Inf(1)), 0}} {
		if got := E8M0FromExponent(tc.e); got != tc.want {
			t.Errorf("E8M0FromExponent(%v) = %d, want %d", tc.e, got, tc.want)
		}
	}
}

func TestBlockExponents(t *testing.T) {
	for _, tc := range []struct {
		name       string
		amax       float32
		mx4, mx8   float32
		mode       DivMode
		checkMXFP8 bool
	}{
		{"zero", 0, -127, -127, DivIEEE, true},
		{"six is 2^0", 6, 0, -6, DivIEEE, true},
		{"just above six", math.Nextafter32(6, 7), 1, -6, DivIEEE, true},
		{"448", 448, 7, 0, DivIEEE, true},
		{"huge", math.MaxFloat32, 126, 120, DivIEEE, true},
		{"tiny clamps", 1e-45, -127, -127, DivIEEE, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := MXFP4BlockExponent(tc.amax, tc.mode); got != tc.mx4 {
				t.Errorf("MXFP4BlockExponent(%g) = %v, want %v", tc.amax, got, tc.mx4)
			}
			if got := MXFP8BlockExponent(tc.amax, tc.mode); tc.checkMXFP8 && got != tc.mx8 {
				t.Errorf("MXFP8BlockExponent(%g) = %v, want %v", tc.amax, got, tc.mx8)
			}
		})
	}
	if e := MXFP8BlockExponent(float32(math.NaN()), DivIEEE); e != -127 {
		t.Errorf("MXFP8 NaN amax: %v, want -127", e)
	}
	if e := MXFP4BlockExponent(float32(math.NaN()), DivIEEE); e == e {
		t.Errorf("MXFP4 NaN amax: %v, want NaN", e)
	}
}

// TestCeilLog2Shortcut compares the shortcut with the float32-rounded logarithm on
// every mantissa pattern class near the switch-over and across exponents.
func TestCeilLog2Shortcut(t *testing.T) {
	slow := func(v float32) float32 { return float32(math.Ceil(float64(float32(math.Log2(float64(v)))))) }
	for exp := uint32(0); exp < 255; exp++ {
		for _, man := range []uint32{0, 1, 2, 3, 1<<13 - 1, 1 << 13, 1<<13 + 1, 1 << 20, 0x7FFFFF} {
			v := math.Float32frombits(exp<<23 | man)
			if got, want := ceilLog2F32(v), slow(v); got != want {
				t.Errorf("ceilLog2F32(%g [%#08x]) = %v, want %v", v, exp<<23|man, got, want)
			}
		}
	}
}
