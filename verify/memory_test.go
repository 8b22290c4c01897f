package verify_test

import (
	"path/filepath"
	"runtime"
	"runtime/metrics"
	"sync"
	"testing"
	"time"

	"github.com/quantstream/quantstream/arrowio"
	"github.com/quantstream/quantstream/convert"
	"github.com/quantstream/quantstream/internal/testgen"
	"github.com/quantstream/quantstream/verify"
)

// TestBoundedMemory: the data checks and --against read a module a chunk at a time.
// On a model whose MLP weights are 8 Mi elements each (a whole-module float32
// comparison would hold 64 MiB of dequantized and source values at once), the Go heap
// never grows by more than 32 MiB over the run. The heap is sampled every
// millisecond, which can only miss peaks, never invent them.
func TestBoundedMemory(t *testing.T) {
	if testing.Short() || raceEnabled {
		t.Skip("writes and converts a 70 MB model; a memory bound, single goroutine: nothing for the race detector")
	}
	c := testgen.LlamaConfig{Layers: 1, Hidden: 2048, Intermediate: 4096, Heads: 16, KVHeads: 4, Vocab: 256}
	src := filepath.Join(t.TempDir(), "src")
	if err := testgen.WriteCheckpoint(src, testgen.LlamaTensors(c), 1, arrowio.WriteOptions{}, map[string][]byte{"config.json": testgen.LlamaConfigJSON(c)}); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "out")
	if _, err := convert.Run(t.Context(), convert.Options{Inputs: []string{src}, Out: out, Recipe: "W4A16_NVFP4_CFG"}); err != nil {
		t.Fatal(err)
	}

	sample := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	heap := func() uint64 { metrics.Read(sample); return sample[0].Value.Uint64() }
	runtime.GC()
	base := heap()
	var peak uint64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				peak = max(peak, heap())
			}
		}
	}()
	r, err := verify.Verify(t.Context(), out, verify.Options{Against: src})
	close(stop)
	wg.Wait()
	if err != nil {
		t.Fatal(err)
	}
	assertSound(t, r)
	if len(r.SNR) != 7 {
		t.Errorf("%d modules compared, want the 7 linears", len(r.SNR))
	}
	const bound = 32 << 20
	if peak > base && peak-base > bound {
		t.Errorf("heap grew by %d MiB during verify, bound %d MiB", (peak-base)>>20, bound>>20)
	}
	t.Logf("heap growth %.1f MiB", float64(peak-min(peak, base))/(1<<20))
}
