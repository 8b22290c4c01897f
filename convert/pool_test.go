package convert

import (
	"testing"
	"unsafe"
)

func TestPoolAllocatorReusesAndZeroes(t *testing.T) {
	p := NewPoolAllocator()
	b := p.Allocate(3 << 20)
	if len(b) != 3<<20 || cap(b) != 4<<20 {
		t.Fatalf("len %d cap %d", len(b), cap(b))
	}
	if uintptr(unsafe.Pointer(&b[0]))%64 != 0 {
		t.Fatal("not 64-byte aligned")
	}
	for i := range b {
		b[i] = 0xAB
	}
	p.Free(b)
	c := p.Allocate(4 << 20)
	for i, v := range c {
		if v != 0 {
			t.Fatalf("reused buffer not zeroed at %d", i)
		}
	}
	small := p.Allocate(100)
	if len(small) != 100 {
		t.Fatalf("small len %d", len(small))
	}
	p.Free(small)
	g := p.Reallocate(5<<20, c)
	if len(g) != 5<<20 {
		t.Fatalf("realloc len %d", len(g))
	}
}
