package arrowio_test

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/quantstream/quantstream"
	"github.com/quantstream/quantstream/arrowio"
	"github.com/quantstream/quantstream/internal/testgen"
)

// The benchmark checkpoint is generated once per run: QS_BENCH_SIZE bytes
// (default 256MB; e.g. QS_BENCH_SIZE=2GB), tensors ≤ 64 MB, 1 GB shards.
var (
	benchOnce sync.Once
	benchDir  string
	benchErr  error
)

func TestMain(m *testing.M) {
	code := m.Run()
	if benchDir != "" {
		os.RemoveAll(benchDir)
	}
	os.Exit(code)
}

func benchCheckpoint(b *testing.B) *arrowio.Checkpoint {
	b.Helper()
	benchOnce.Do(func() {
		size := int64(256_000_000)
		if s := os.Getenv("QS_BENCH_SIZE"); s != "" {
			if size, benchErr = arrowio.ParseSize(s); benchErr != nil {
				return
			}
		}
		benchDir, benchErr = os.MkdirTemp("", "qs-bench-")
		if benchErr != nil {
			return
		}
		_, benchErr = testgen.WriteSyntheticLlama(filepath.Join(benchDir, "ck"), size, 64_000_000,
			arrowio.WriteOptions{PlanOptions: arrowio.PlanOptions{MaxShardSize: 1_000_000_000}})
	})
	if benchErr != nil {
		b.Fatal(benchErr)
	}
	c, err := arrowio.OpenCheckpoint(filepath.Join(benchDir, "ck"))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close() })
	return c
}

func checkpointBytes(c *arrowio.Checkpoint) int64 {
	var n int64
	for _, li := range c.Layers() {
		b, _ := li.DataBytes()
		n += b
	}
	return n
}

// BenchmarkReadLayers reads every layer into Arrow records (page cache warm).
func BenchmarkReadLayers(b *testing.B) {
	c := benchCheckpoint(b)
	mem := memory.NewGoAllocator()
	b.SetBytes(checkpointBytes(c))
	for b.Loop() {
		for _, li := range c.Layers() {
			l, err := c.ReadLayer(b.Context(), mem, li)
			if err != nil {
				b.Fatal(err)
			}
			l.Release()
		}
	}
}

// BenchmarkSequentialCopy is the baseline for BenchmarkReadLayers: a plain
// sequential io.Copy of the same shard files to io.Discard.
func BenchmarkSequentialCopy(b *testing.B) {
	c := benchCheckpoint(b)
	b.SetBytes(checkpointBytes(c))
	shards, _ := filepath.Glob(filepath.Join(benchDir, "ck", "*.safetensors"))
	for b.Loop() {
		for _, s := range shards {
			f, err := os.Open(s)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := io.Copy(io.Discard, f); err != nil {
				b.Fatal(err)
			}
			f.Close()
		}
	}
}

// BenchmarkWrite writes the checkpoint's layers (held in memory) into a new
// sharded checkpoint, including fsync and the final rename, with 1 and 4 writers.
func BenchmarkWrite(b *testing.B) {
	c := benchCheckpoint(b)
	mem := memory.NewGoAllocator()
	var layers []*quantstream.Layer
	var infos []quantstream.TensorInfo
	for _, li := range c.Layers() {
		l, err := c.ReadLayer(b.Context(), mem, li)
		if err != nil {
			b.Fatal(err)
		}
		layers = append(layers, l)
		infos = append(infos, li.Tensors...)
	}
	defer func() {
		for _, l := range layers {
			l.Release()
		}
	}()
	for _, workers := range []int{1, 4} {
		b.Run(fmt.Sprintf("workers=%d", workers), func(b *testing.B) {
			b.SetBytes(checkpointBytes(c))
			for b.Loop() {
				out := filepath.Join(b.TempDir(), "out")
				w, err := arrowio.Create(out, infos, arrowio.WriteOptions{PlanOptions: arrowio.PlanOptions{MaxShardSize: 1_000_000_000}})
				if err != nil {
					b.Fatal(err)
				}
				next := make(chan *quantstream.Layer)
				errs := make(chan error, workers)
				var wg sync.WaitGroup
				for range workers {
					wg.Go(func() {
						for l := range next {
							if err := w.Write(b.Context(), l); err != nil {
								errs <- err
							}
						}
					})
				}
				for _, l := range layers {
					next <- l
				}
				close(next)
				wg.Wait()
				close(errs)
				if err := <-errs; err != nil {
					b.Fatal(err)
				}
				if err := w.Commit(); err != nil {
					b.Fatal(err)
				}
				os.RemoveAll(out)
			}
		})
	}
}

func BenchmarkParseHeader(b *testing.B) {
	path := filepath.Join("..", "testdata", "tiny_moe", "model-00001-of-00002.safetensors")
	f, err := os.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	st, _ := f.Stat()
	h, err := arrowio.ReadHeader(f, st.Size(), path)
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(h.DataOff)
	for b.Loop() {
		if _, err := arrowio.ReadHeader(f, st.Size(), path); err != nil {
			b.Fatal(err)
		}
	}
}

// reusingAllocator hands freed buffers back out by size, as a pipeline's pool
// would; it shows the read path's cost without fresh-memory page faults.
type reusingAllocator struct {
	mu   sync.Mutex
	free map[int][][]byte
}

func (a *reusingAllocator) Allocate(n int) []byte {
	a.mu.Lock()
	defer a.mu.Unlock()
	if l := a.free[n]; len(l) > 0 {
		b := l[len(l)-1]
		a.free[n] = l[:len(l)-1]
		return b
	}
	return make([]byte, n)
}

func (a *reusingAllocator) Reallocate(n int, b []byte) []byte {
	nb := a.Allocate(n)
	copy(nb, b)
	a.Free(b)
	return nb
}

func (a *reusingAllocator) Free(b []byte) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.free[cap(b)] = append(a.free[cap(b)], b[:cap(b)])
}

// BenchmarkReadLayersReused is BenchmarkReadLayers with buffers reused.
func BenchmarkReadLayersReused(b *testing.B) {
	c := benchCheckpoint(b)
	mem := &reusingAllocator{free: map[int][][]byte{}}
	b.SetBytes(checkpointBytes(c))
	for b.Loop() {
		for _, li := range c.Layers() {
			l, err := c.ReadLayer(b.Context(), mem, li)
			if err != nil {
				b.Fatal(err)
			}
			l.Release()
		}
	}
}
