package pipeline

import (
	"math/bits"
	"sync"
	"unsafe"

	"github.com/apache/arrow-go/v18/arrow/memory"
)

// PoolAllocator is an Arrow allocator that recycles large buffers. Layer buffers
// are hundreds of MB and short-lived; taking fresh ones from the Go heap for every
// layer costs page faults and GC work that dominate a conversion (arrowio's read
// benchmark: 3.3 GB/s fresh vs 13.9 GB/s reused), and the Go heap grows to twice
// its live size before a collection returns anything, so the process would hold
// about twice the memory budget.
//
// Buffers of at least MinPooled bytes are therefore mapped outside the Go heap
// (anonymous mmap where the OS has it) and kept, when freed, in size classes
// eight per octave (a buffer wastes at most 1/8 of its size, so resident memory
// follows the bytes in flight); smaller ones go to the Go allocator. A freed buffer
// is kept for reuse while the pool's mapped bytes stay within its limit
// (SetLimit) and unmapped otherwise; Trim unmaps every idle buffer. Buffers are
// zeroed on Allocate, as Go's allocator does; AllocateUninitialized skips that for
// callers that overwrite every byte. Safe for concurrent use.
//
// A pooled buffer must not be touched after Free: its memory may be unmapped.
type PoolAllocator struct {
	small memory.GoAllocator

	mu     sync.Mutex
	free   map[int][][]byte // idle buffers by capacity
	live   map[*byte]int    // every mapped buffer (idle or in use) by first byte: its capacity
	idle   int64            // bytes in free
	mapped int64            // bytes in live
	peak   int64            // largest mapped
	limit  int64            // 0: keep every freed buffer
}

// MinPooled is the smallest buffer PoolAllocator recycles.
const MinPooled = 1 << 20

var _ memory.Allocator = (*PoolAllocator)(nil)

// NewPoolAllocator returns an empty pool without a limit.
func NewPoolAllocator() *PoolAllocator {
	return &PoolAllocator{free: map[int][][]byte{}, live: map[*byte]int{}}
}

// SetLimit makes the pool keep freed buffers only while all its mapped buffers
// (in use and idle) total at most n bytes, and unmap idle buffers of other sizes
// before mapping a new one past n. In-use buffers are never refused: n bounds
// what the pool keeps, the caller's budget what is in use. 0 removes the limit.
func (p *PoolAllocator) SetLimit(n int64) {
	p.mu.Lock()
	p.limit = n
	p.mu.Unlock()
}

// Trim unmaps every idle buffer.
func (p *PoolAllocator) Trim() {
	p.mu.Lock()
	var drop [][]byte
	for c, l := range p.free {
		drop = append(drop, l...)
		delete(p.free, c)
	}
	p.idle = 0
	for _, b := range drop {
		p.forget(b)
	}
	p.mu.Unlock()
	for _, b := range drop {
		unmapBytes(b)
	}
}

// PeakMapped is the largest number of bytes the pool had mapped at once.
func (p *PoolAllocator) PeakMapped() int64 {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.peak
}

// classCap is the capacity of size's class: size rounded up to four significant
// bits (eight classes per octave) and to whole pages.
func classCap(size int) int {
	shift := max(bits.Len(uint(size-1))-4, 12)
	return ((size-1)>>shift + 1) << shift
}

// Allocate returns a zeroed, 64-byte aligned buffer of size bytes.
func (p *PoolAllocator) Allocate(size int) []byte {
	if size < MinPooled {
		return p.small.Allocate(size)
	}
	b, reused := p.get(size)
	if reused {
		clear(b)
	}
	return b
}

// AllocateUninitialized is Allocate without zeroing a reused buffer: for callers
// that write every byte before reading any (a layer read from a file, an output
// buffer filled tensor by tensor). Found by type assertion on a memory.Allocator.
func (p *PoolAllocator) AllocateUninitialized(size int) []byte {
	if size < MinPooled {
		return p.small.Allocate(size)
	}
	b, _ := p.get(size)
	return b
}

func (p *PoolAllocator) get(size int) (b []byte, reused bool) {
	c := classCap(size)
	p.mu.Lock()
	// The buffer's own class, else the smallest idle one up to twice the size: an
	// idle buffer is resident already, while a new mapping adds fresh pages (which
	// the kernel must zero) to the footprint.
	best := 0
	if len(p.free[c]) > 0 {
		best = c
	} else {
		for k, l := range p.free {
			if len(l) > 0 && k > c && k <= 2*size && (best == 0 || k < best) {
				best = k
			}
		}
	}
	if best > 0 {
		l := p.free[best]
		b = l[len(l)-1]
		p.free[best] = l[:len(l)-1]
		p.idle -= int64(best)
		p.mu.Unlock()
		if best > c {
			// The pages past the request were written by the buffer's last user and
			// would stay resident, unaccounted by the budget, which counts requests.
			releaseTail(b, size)
		}
		return b[:size], true
	}
	var drop [][]byte
	for p.limit > 0 && p.mapped+int64(c) > p.limit && p.idle > 0 {
		// Unmap the largest idle buffers first: fewest syscalls for the room.
		big := 0
		for k, l := range p.free {
			if len(l) > 0 && k > big {
				big = k
			}
		}
		l := p.free[big]
		d := l[len(l)-1]
		p.free[big] = l[:len(l)-1]
		p.idle -= int64(big)
		p.forget(d)
		drop = append(drop, d)
	}
	p.mapped += int64(c)
	p.peak = max(p.peak, p.mapped)
	p.mu.Unlock()
	for _, d := range drop {
		unmapBytes(d)
	}
	b = mapBytes(c)
	p.mu.Lock()
	p.live[unsafe.SliceData(b)] = c
	p.mu.Unlock()
	return b[:size], false
}

// forget drops b from live; p.mu is held.
func (p *PoolAllocator) forget(b []byte) {
	delete(p.live, unsafe.SliceData(b))
	p.mapped -= int64(cap(b))
}

// Reallocate grows b, keeping its contents.
func (p *PoolAllocator) Reallocate(size int, b []byte) []byte {
	if cap(b) >= size {
		// A reused buffer's capacity holds its last user's bytes: zero the growth,
		// as a fresh allocation would be.
		grown := b[:size]
		if size > len(b) {
			clear(grown[len(b):])
		}
		return grown
	}
	nb := p.AllocateUninitialized(size)
	copy(nb, b)
	clear(nb[len(b):])
	p.Free(b)
	return nb
}

// Free returns a pooled buffer for reuse; the caller must not touch b afterwards.
// Buffers the pool did not map are left to the garbage collector.
func (p *PoolAllocator) Free(b []byte) {
	if cap(b) < MinPooled {
		return
	}
	full := b[:cap(b)]
	p.mu.Lock()
	c, ok := p.live[unsafe.SliceData(full)]
	if !ok || c != cap(full) {
		p.mu.Unlock()
		return
	}
	if p.limit > 0 && p.mapped > p.limit {
		p.forget(full)
		p.mu.Unlock()
		unmapBytes(full)
		return
	}
	p.free[c] = append(p.free[c], full)
	p.idle += int64(c)
	p.mu.Unlock()
}
