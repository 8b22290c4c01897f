package pipeline

import (
	"context"
	"fmt"
	"sync"
)

// budget counts the bytes and layers in flight. Only the source goroutine acquires,
// so a one-slot wake channel is enough: a release that lands between a failed check
// and the wait leaves its token behind and the acquirer checks again.
type budget struct {
	maxBytes  int64 // 0: no byte limit
	maxLayers int
	wake      chan struct{}

	mu         sync.Mutex
	bytes      int64
	layers     int
	peakBytes  int64
	peakLayers int
}

func newBudget(maxBytes int64, maxLayers int) *budget {
	return &budget{maxBytes: maxBytes, maxLayers: maxLayers, wake: make(chan struct{}, 1)}
}

// acquire charges n bytes and one layer, blocking until both fit or ctx is done.
func (b *budget) acquire(ctx context.Context, n int64) error {
	if b.maxBytes > 0 && n > b.maxBytes {
		// Plan.Check refuses this first; waiting here would never end.
		return fmt.Errorf("%w: %d bytes, over the memory budget of %d bytes", ErrOverBudget, n, b.maxBytes)
	}
	for {
		b.mu.Lock()
		if b.layers < b.maxLayers && (b.maxBytes == 0 || b.bytes+n <= b.maxBytes) {
			b.bytes += n
			b.layers++
			b.peakBytes = max(b.peakBytes, b.bytes)
			b.peakLayers = max(b.peakLayers, b.layers)
			b.mu.Unlock()
			return nil
		}
		b.mu.Unlock()
		select {
		case <-b.wake:
		case <-ctx.Done():
			return context.Cause(ctx)
		}
	}
}

// shrink returns n bytes of a layer that stays in flight.
func (b *budget) shrink(n int64) { b.release(n, 0) }

// done returns a layer's last n bytes and its place.
func (b *budget) done(n int64) { b.release(n, 1) }

func (b *budget) release(n int64, layers int) {
	if n == 0 && layers == 0 {
		return
	}
	b.mu.Lock()
	b.bytes -= n
	b.layers -= layers
	if b.bytes < 0 || b.layers < 0 {
		b.mu.Unlock()
		panic("pipeline: budget released more than was acquired")
	}
	b.mu.Unlock()
	select {
	case b.wake <- struct{}{}:
	default:
	}
}

// Stats are what the budget saw during a run.
type Stats struct {
	PeakBytes  int64 // largest sum of charges in flight
	PeakLayers int   // largest number of layers in flight
}

func (b *budget) stats() Stats {
	b.mu.Lock()
	defer b.mu.Unlock()
	return Stats{PeakBytes: b.peakBytes, PeakLayers: b.peakLayers}
}
