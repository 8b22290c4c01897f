package quant

import (
	"math"
	"testing"
)

func TestF16RoundTripAllCodes(t *testing.T) {
	for h := 0; h < 1<<16; h++ {
		f := F16ToF32(uint16(h))
		got := F32ToF16(f)
		if f != f {
			if got&0x7C00 != 0x7C00 || got&0x3FF == 0 {
				t.Fatalf("NaN %#04x -> %#04x", h, got)
			}
			continue
		}
		if got != uint16(h) {
			t.Fatalf("%#04x -> %v -> %#04x", h, f, got)
		}
	}
}

func TestF16RoundingTies(t *testing.T) {
	for _, tc := range []struct {
		in   float32
		want uint16
	}{
		{1 + 1.0/2048, 0x3C00},           // tie between 1 and 1+2^-10: even is 1
		{1 + 3.0/2048, 0x3C02},           // tie: even is 1+2^-9
		{65504, 0x7BFF},                  // max
		{65520, 0x7C00},                  // tie at max rounds to inf
		{float32(math.Ldexp(1, -25)), 0}, // half the smallest subnormal: tie to 0
		{float32(math.Ldexp(1.5, -25)), 1},
		{float32(math.Ldexp(3, -25)), 2}, // 1.5 units: tie to even 2
	} {
		if got := F32ToF16(tc.in); got != tc.want {
			t.Errorf("F32ToF16(%g) = %#04x, want %#04x", tc.in, got, tc.want)
		}
	}
}

func TestF16NegativeZero(t *testing.T) {
	if got := F32ToF16(float32(math.Copysign(0, -1))); got != 0x8000 {
		t.Errorf("F32ToF16(-0) = %#04x, want 0x8000", got)
	}
}

func TestBF16(t *testing.T) {
	for _, tc := range []struct {
		in   float32
		want uint16
	}{
		{1, 0x3F80},
		{math.Float32frombits(0x3F808000), 0x3F80}, // tie to even (down)
		{math.Float32frombits(0x3F818000), 0x3F82}, // tie to even (up)
		{float32(math.NaN()), 0x7FC0},
		{float32(math.Inf(-1)), 0xFF80},
	} {
		if got := F32ToBF16(tc.in); got != tc.want {
			t.Errorf("F32ToBF16(%v) = %#04x, want %#04x", tc.in, got, tc.want)
		}
	}
	for h := 0; h < 1<<16; h++ {
		f := BF16ToF32(uint16(h))
		if f == f && F32ToBF16(f) != uint16(h) {
			t.Fatalf("bf16 %#04x does not round-trip", h)
		}
	}
}
