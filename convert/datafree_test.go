package convert

import (
	"encoding/binary"
	"math/rand/v2"
	"testing"
)

func TestAbsMax16MatchesLoop(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for n := range 70 {
		for range 50 {
			data := make([]byte, 2*n+n%2)
			for i := range data {
				data[i] = byte(rng.Uint32())
			}
			var want uint16
			for i := 0; i+1 < len(data); i += 2 {
				want = max(want, binary.LittleEndian.Uint16(data[i:])&0x7FFF)
			}
			if got := absMax16(data); got != uint32(want) {
				t.Fatalf("n %d: got %#x want %#x", n, got, want)
			}
		}
	}
}

func BenchmarkAbsMax16(b *testing.B) {
	data := make([]byte, 8<<20)
	for i := range data {
		data[i] = byte(i * 7)
	}
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		absMax16(data)
	}
}
