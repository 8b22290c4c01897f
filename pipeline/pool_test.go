package pipeline

import (
	"runtime"
	"testing"
	"unsafe"
)

func TestPoolAllocatorReusesAndZeroes(t *testing.T) {
	p := NewPoolAllocator()
	defer p.Trim()
	b := p.Allocate(3<<20 + 1)
	if len(b) != 3<<20+1 || cap(b) != 3<<20+1<<18 {
		t.Fatalf("len %d cap %d", len(b), cap(b))
	}
	if uintptr(unsafe.Pointer(&b[0]))%64 != 0 {
		t.Fatal("not 64-byte aligned")
	}
	for i := range b {
		b[i] = 0xAB
	}
	p.Free(b)
	c := p.Allocate(3<<20 + 100)
	if unsafe.SliceData(c) != unsafe.SliceData(b) {
		t.Fatal("same class not reused")
	}
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
	c[0] = 7
	g := p.Reallocate(5<<20, c)
	if len(g) != 5<<20 || g[0] != 7 || g[len(g)-1] != 0 {
		t.Fatalf("realloc len %d", len(g))
	}
	p.Free(g)
	p.Free(make([]byte, 4<<20)) // not the pool's: ignored
}

func TestPoolClassesWasteAtMostAnEighth(t *testing.T) {
	for size := MinPooled; size < 1<<34; size = size*9/8 + 12345 {
		c := classCap(size)
		if c < size || float64(c-size) > float64(size)/8+4096 || c%4096 != 0 {
			t.Fatalf("size %d: class %d", size, c)
		}
	}
}

func TestPoolLimitUnmapsIdle(t *testing.T) {
	p := NewPoolAllocator()
	p.SetLimit(10 << 20)
	a := p.Allocate(4 << 20)
	b := p.Allocate(4 << 20)
	p.Free(a)
	// 8 MiB mapped, 4 idle; 6 more need the idle buffer gone.
	c := p.Allocate(6 << 20)
	if got := p.PeakMapped(); got > 10<<20 {
		t.Errorf("peak mapped %d over the 10 MiB limit", got)
	}
	p.Free(b)
	p.Free(c)
	p.Trim()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.mapped != 0 || p.idle != 0 || len(p.live) != 0 {
		t.Errorf("after Trim: mapped %d idle %d live %d", p.mapped, p.idle, len(p.live))
	}
}

func TestPoolReusesALargerIdleBuffer(t *testing.T) {
	p := NewPoolAllocator()
	defer p.Trim()
	a := p.Allocate(6 << 20)
	a[0] = 1
	p.Free(a)
	b := p.Allocate(4 << 20) // a fits (within twice the size): no new mapping
	if unsafe.SliceData(b) != unsafe.SliceData(a) || b[0] != 0 || len(b) != 4<<20 {
		t.Fatal("idle 6 MiB buffer not reused, or not zeroed")
	}
	c := p.Allocate(2 << 20) // none idle within 4 MiB
	p.Free(b)
	p.Free(c)
	if got := p.PeakMapped(); got != 8<<20 {
		t.Errorf("peak mapped %d, want 8 MiB", got)
	}
	d := p.Allocate(2 << 20) // its own class again
	if unsafe.SliceData(d) != unsafe.SliceData(c) {
		t.Error("own class not preferred")
	}
	p.Free(d)
}

func TestPoolReallocateZeroesGrowth(t *testing.T) {
	p := NewPoolAllocator()
	b := p.Allocate(2 << 20)
	for i := range b {
		b[i] = 0xFF
	}
	p.Free(b)
	c := p.Allocate(1<<20 + 4096) // reuses the 2 MiB buffer: capacity beyond the request
	if cap(c) < 2<<20 {
		t.Fatalf("the idle 2 MiB buffer was not reused (capacity %d)", cap(c))
	}
	g := p.Reallocate(2<<20, c)
	for i, v := range g {
		if v != 0 {
			t.Fatalf("grown buffer holds a stale byte %#x at %d", v, i)
		}
	}
	p.Free(g)
}

func TestPoolReleasesTailOfReusedBuffer(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("pages are given back with madvise on Linux only")
	}
	p := NewPoolAllocator()
	b := p.AllocateUninitialized(2 << 20)
	for i := range b {
		b[i] = 0xFF
	}
	p.Free(b)
	c := p.AllocateUninitialized(1<<20 + 4096)
	if cap(c) < 2<<20 {
		t.Fatalf("the idle 2 MiB buffer was not reused (capacity %d)", cap(c))
	}
	// MADV_DONTNEED on a private anonymous mapping: the released pages read as zero.
	tail := c[:cap(c)][1<<20+8192:]
	for i, v := range tail {
		if v != 0 {
			t.Fatalf("tail byte %d is %#x: the pages past the request stayed resident", i, v)
		}
	}
	p.Free(c)
}
