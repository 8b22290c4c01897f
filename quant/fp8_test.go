package quant

import (
	"math"
	"testing"
)

// nearestCode is the brute-force oracle for the float8 and E2M1 encoders: the code
// among codes (non-negative magnitudes, in code order) whose value is nearest to a,
// ties to the code chosen by tie (a function of the two candidates).
func nearestCode(a float64, vals []float64, tie func(lo, hi int) int) int {
	best, bestD := 0, math.Inf(1)
	for c, v := range vals {
		d := math.Abs(v - a)
		switch {
		case d < bestD:
			best, bestD = c, d
		case d == bestD:
			best = tie(best, c)
		}
	}
	return best
}

func tieEven(lo, hi int) int {
	if lo%2 == 0 {
		return lo
	}
	return hi
}

// e4m3Oracle is F32ToE4M3 by definition: nearest finite E4M3 magnitude, ties to the
// even code, NaN beyond 464 (the midpoint of 448 and the missing 480).
func e4m3Oracle(x float32) uint8 {
	var sign uint8
	if math.Signbit(float64(x)) {
		sign = 0x80
	}
	a := math.Abs(float64(x))
	if math.IsNaN(a) || a > 464 {
		return sign | 0x7F
	}
	vals := make([]float64, 0x7F)
	for c := range vals {
		vals[c] = float64(e4m3Decode(uint8(c)))
	}
	return sign | uint8(nearestCode(a, vals, tieEven))
}

func e5m2Oracle(x float32) uint8 {
	var sign uint8
	if math.Signbit(float64(x)) {
		sign = 0x80
	}
	a := math.Abs(float64(x))
	if math.IsNaN(a) {
		return sign | 0x7F
	}
	vals := make([]float64, 0x7D) // 0x7C is infinity: it takes part as the value 65536
	for c := range vals {
		vals[c] = float64(E5M2ToF32(uint8(c)))
	}
	vals[0x7C] = 65536
	if a >= 65536 {
		return sign | 0x7C
	}
	return sign | uint8(nearestCode(a, vals, tieEven))
}

func TestE4M3AllCodes(t *testing.T) {
	for c := range 256 {
		f := E4M3ToF32(uint8(c))
		if c&0x7F == 0x7F {
			if !math.IsNaN(float64(f)) {
				t.Errorf("code %#02x = %v, want NaN", c, f)
			}
			if got := F32ToE4M3(f); got != uint8(c)&0x80|0x7F {
				t.Errorf("NaN code %#02x re-encodes to %#02x", c, got)
			}
			continue
		}
		if got := F32ToE4M3(f); got != uint8(c) {
			t.Errorf("code %#02x = %v re-encodes to %#02x", c, f, got)
		}
		if got := bf16ToE4M3(F32ToBF16(f)); got != uint8(c) {
			t.Errorf("bf16ToE4M3 of code %#02x = %#02x", c, got)
		}
	}
	for _, tc := range []struct {
		c    uint8
		want float32
	}{
		{0x01, 1.0 / 512}, {0x07, 7.0 / 512}, {0x08, 1.0 / 64}, {0x38, 1}, {0x7E, 448}, {0xFE, -448}, {0x80, 0},
	} {
		if got := E4M3ToF32(tc.c); got != tc.want {
			t.Errorf("E4M3ToF32(%#02x) = %v, want %v", tc.c, got, tc.want)
		}
	}
	if !math.Signbit(float64(E4M3ToF32(0x80))) {
		t.Error("0x80 is not -0")
	}
}

func TestE4M3NamedCases(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   float32
		want uint8
	}{
		{"max", 448, 0x7E},
		{"tie at 464 to even 448", 464, 0x7E},
		{"just above 464 is NaN", math.Nextafter32(464, 500), 0x7F},
		{"480 is NaN", 480, 0x7F},
		{"-500 is negative NaN", -500, 0xFF},
		{"inf is NaN", float32(math.Inf(1)), 0x7F},
		{"-inf", float32(math.Inf(-1)), 0xFF},
		{"NaN", float32(math.NaN()), 0x7F},
		{"-0 kept", float32(math.Copysign(0, -1)), 0x80},
		{"half smallest subnormal ties to 0", 1.0 / 1024, 0x00},
		{"above half smallest subnormal", math.Nextafter32(1.0/1024, 1), 0x01},
		{"small negative to -0", -1.0 / 2048, 0x80},
		{"1.5 subnormal units tie to 2", 3.0 / 1024, 0x02},
		{"2.5 subnormal units tie to 2", 5.0 / 1024, 0x02},
		{"subnormal rounds up to min normal", 15.0 / 1024, 0x08},
		{"1+1/16 ties to 1", 1 + 1.0/16, 0x38},
		{"1+3/16 ties to 1.25", 1 + 3.0/16, 0x3A},
		{"2^-9 exact", 1.0 / 512, 0x01},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := F32ToE4M3(tc.in); got != tc.want {
				t.Errorf("F32ToE4M3(%g) = %#02x, want %#02x", tc.in, got, tc.want)
			}
			if got := e4m3Oracle(tc.in); got != tc.want {
				t.Errorf("oracle(%g) = %#02x, want %#02x", tc.in, got, tc.want)
			}
		})
	}
}

// TestBF16ToE4M3AllInputs checks the lookup table against the oracle on every bf16.
func TestBF16ToE4M3AllInputs(t *testing.T) {
	for h := range 1 << 16 {
		f := BF16ToF32(uint16(h))
		if got, want := bf16ToE4M3(uint16(h)), e4m3Oracle(f); got != want {
			t.Fatalf("bf16 %#04x (%g): %#02x, oracle %#02x", h, f, got, want)
		}
	}
}

func TestE5M2AllCodes(t *testing.T) {
	for c := range 256 {
		f := E5M2ToF32(uint8(c))
		got := F32ToE5M2(f)
		if c&0x7F > 0x7C {
			if !math.IsNaN(float64(f)) || got&0x7F <= 0x7C {
				t.Errorf("code %#02x: %v -> %#02x, want NaN", c, f, got)
			}
			continue
		}
		if got != uint8(c) {
			t.Errorf("code %#02x = %v re-encodes to %#02x", c, f, got)
		}
	}
	for _, tc := range []struct {
		in   float32
		want uint8
	}{
		{57344, 0x7B}, {61440, 0x7C}, {math.Nextafter32(61440, 0), 0x7B}, {-65536, 0xFC},
		{float32(math.Ldexp(1, -17)), 0}, {float32(math.Ldexp(3, -17)), 2}, {1.125, 0x3C}, {1.375, 0x3E},
	} {
		if got := F32ToE5M2(tc.in); got != tc.want {
			t.Errorf("F32ToE5M2(%g) = %#02x, want %#02x", tc.in, got, tc.want)
		}
	}
}

func fuzzSeeds(f *testing.F) {
	for _, v := range []float32{0, 1, -1, 448, 464, 465, 1.0 / 1024, 3.0 / 1024, 0.25, 0.75, 1.25, 1.75, 2.5, 3.5, 5,
		6, 7, 57344, 61440, 1e-30, -1e30, float32(math.NaN()), float32(math.Inf(-1)), 0.3, -2.9} {
		f.Add(math.Float32bits(v))
	}
}

func FuzzE4M3(f *testing.F) {
	fuzzSeeds(f)
	f.Fuzz(func(t *testing.T, u uint32) {
		x := math.Float32frombits(u)
		if got, want := F32ToE4M3(x), e4m3Oracle(x); got != want {
			t.Fatalf("F32ToE4M3(%g [%#08x]) = %#02x, oracle %#02x", x, u, got, want)
		}
	})
}

func FuzzE5M2(f *testing.F) {
	fuzzSeeds(f)
	f.Fuzz(func(t *testing.T, u uint32) {
		x := math.Float32frombits(u)
		if got, want := F32ToE5M2(x), e5m2Oracle(x); got != want {
			t.Fatalf("F32ToE5M2(%g [%#08x]) = %#02x, oracle %#02x", x, u, got, want)
		}
	})
}

// TestF32ToE4M3FastTable checks the lookup against the branchy encoder around every
// table class: both ends of each class and the guard/sticky patterns.
func TestF32ToE4M3FastTable(t *testing.T) {
	for i := range uint32(1 << 13) {
		for _, low := range []uint32{0, 1, 0x3FFFF, 0x40000, 0x40001, 0x7FFFF} {
			u := i<<19 | low
			x := math.Float32frombits(u)
			if got, want := f32ToE4M3Fast(x), F32ToE4M3(x); got != want {
				t.Fatalf("f32ToE4M3Fast(%g [%#08x]) = %#02x, want %#02x", x, u, got, want)
			}
		}
	}
}

func FuzzE4M3Fast(f *testing.F) {
	fuzzSeeds(f)
	f.Fuzz(func(t *testing.T, u uint32) {
		x := math.Float32frombits(u)
		if got, want := f32ToE4M3Fast(x), e4m3Oracle(x); got != want {
			t.Fatalf("f32ToE4M3Fast(%g [%#08x]) = %#02x, oracle %#02x", x, u, got, want)
		}
	})
}
