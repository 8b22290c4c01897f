package convert

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/quantstream/quantstream/arrowio"
	"github.com/quantstream/quantstream/internal/parallel"
	"github.com/quantstream/quantstream/pipeline"
)

const tinyLlama = "../testdata/tiny_llama"

func TestPassthroughKeepsEveryTensorByte(t *testing.T) {
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	out := filepath.Join(t.TempDir(), "out")
	sum, err := Run(t.Context(), Options{Inputs: []string{tinyLlama}, Out: out, Workers: 3, MaxShardSize: 300_000, Allocator: mem})
	if err != nil {
		t.Fatal(err)
	}
	if sum.Shards < 2 {
		t.Errorf("max shard size 300kB gave %d shard(s)", sum.Shards)
	}
	in, err := arrowio.ReadAllTensors(tinyLlama)
	if err != nil {
		t.Fatal(err)
	}
	got, err := arrowio.ReadAllTensors(out)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(in) {
		t.Fatalf("%d tensors out, %d in", len(got), len(in))
	}
	for name, want := range in {
		g, ok := got[name]
		if !ok {
			t.Fatalf("tensor %q missing", name)
		}
		if g.DType != want.DType || !bytes.Equal(g.Data, want.Data) || len(g.Shape) != len(want.Shape) {
			t.Errorf("tensor %q differs", name)
		}
	}
	for _, side := range []string{"config.json", "generation_config.json", "tokenizer.json"} {
		a, _ := os.ReadFile(filepath.Join(tinyLlama, side))
		b, err := os.ReadFile(filepath.Join(out, side))
		if err != nil || !bytes.Equal(a, b) {
			t.Errorf("side file %s not copied unchanged: %v", side, err)
		}
	}
}

func TestOutputIndependentOfWorkers(t *testing.T) {
	dirs := map[int]string{}
	for _, workers := range []int{1, 4} {
		out := filepath.Join(t.TempDir(), "out")
		if _, err := Run(t.Context(), Options{Inputs: []string{tinyLlama}, Out: out, Workers: workers, MaxShardSize: 400_000}); err != nil {
			t.Fatal(err)
		}
		dirs[workers] = out
	}
	assertSameDir(t, dirs[1], dirs[4])
}

// assertWorkersIndependent converts opt twice and compares the outputs file by file:
// once with 1 worker on a checked allocator (every Arrow buffer must be released),
// once with 4 workers and 4 procs splitting rows into 1000-byte pieces, on a pool
// whose uninitialised buffers are poisoned, so that a byte the conversion forgets to
// write, or writes depending on the split, shows up as a difference.
func assertWorkersIndependent(t *testing.T, opt Options) {
	t.Helper()
	defer func(n int) { parallel.ChunkBytes = n }(parallel.ChunkBytes)
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(0))

	checked := memory.NewCheckedAllocator(pipeline.NewPoolAllocator())
	one := opt
	one.Out, one.Workers, one.Allocator, one.MaxShardSize = filepath.Join(t.TempDir(), "out"), 1, checked, 400_000
	if _, err := Run(t.Context(), one); err != nil {
		t.Fatal(err)
	}
	checked.AssertSize(t, 0)

	parallel.ChunkBytes = 1000
	runtime.GOMAXPROCS(4)
	four := opt
	four.Out, four.Workers, four.Allocator, four.MaxShardSize = filepath.Join(t.TempDir(), "out"), 4, poisonAllocator{pipeline.NewPoolAllocator()}, 400_000
	if _, err := Run(t.Context(), four); err != nil {
		t.Fatal(err)
	}
	assertSameDir(t, one.Out, four.Out)
}

// poisonAllocator fills the buffers callers promise to overwrite entirely.
type poisonAllocator struct{ *pipeline.PoolAllocator }

func (p poisonAllocator) AllocateUninitialized(size int) []byte {
	b := p.PoolAllocator.AllocateUninitialized(size)
	for i := range b {
		b[i] = 0xA5
	}
	return b
}

func assertSameDir(t *testing.T, a, b string) {
	t.Helper()
	ea, _ := os.ReadDir(a)
	eb, _ := os.ReadDir(b)
	if len(ea) != len(eb) || len(ea) == 0 {
		t.Fatalf("%d files vs %d", len(ea), len(eb))
	}
	for _, e := range ea {
		x, _ := os.ReadFile(filepath.Join(a, e.Name()))
		y, err := os.ReadFile(filepath.Join(b, e.Name()))
		if err != nil || !bytes.Equal(x, y) {
			t.Errorf("%s differs between runs", e.Name())
		}
	}
}

func TestTruncatedShardFailsAndLeavesNothing(t *testing.T) {
	in := filepath.Join(t.TempDir(), "in")
	if err := os.CopyFS(in, os.DirFS(tinyLlama)); err != nil {
		t.Fatal(err)
	}
	shard := filepath.Join(in, "model-00002-of-00002.safetensors")
	st, _ := os.Stat(shard)
	if err := os.Truncate(shard, st.Size()-100); err != nil {
		t.Fatal(err)
	}
	parent := t.TempDir()
	out := filepath.Join(parent, "out")
	_, err := Run(t.Context(), Options{Inputs: []string{in}, Out: out})
	if !errors.Is(err, arrowio.ErrCorrupt) || !strings.Contains(err.Error(), "model-00002-of-00002.safetensors") {
		t.Fatalf("error %v: want ErrCorrupt naming the shard", err)
	}
	left, _ := os.ReadDir(parent)
	if len(left) != 0 {
		t.Errorf("left behind: %v", left)
	}
}

func TestCancelLeavesNothing(t *testing.T) {
	parent := t.TempDir()
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	_, err := Run(ctx, Options{Inputs: []string{tinyLlama}, Out: filepath.Join(parent, "out")})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("error %v, want context.Canceled", err)
	}
	left, _ := os.ReadDir(parent)
	if len(left) != 0 {
		t.Errorf("left behind: %v", left)
	}
}

func TestExistingOutputNotOverwritten(t *testing.T) {
	out := t.TempDir()
	keep := filepath.Join(out, "mine.txt")
	os.WriteFile(keep, []byte("x"), 0o644)
	_, err := Run(t.Context(), Options{Inputs: []string{tinyLlama}, Out: out})
	if !errors.Is(err, arrowio.ErrExists) {
		t.Fatalf("error %v, want ErrExists", err)
	}
	if _, err := os.Stat(keep); err != nil {
		t.Errorf("existing output touched: %v", err)
	}
}

// TestExportOutputIndependentOfWorkers: the export stages split layers over cores
// by row ranges; bytes must not depend on workers nor on the split (the second run
// cuts weights into pieces of a few rows).
func TestExportOutputIndependentOfWorkers(t *testing.T) {
	golden := filepath.Join("..", "testdata", "golden", "e2e")
	for _, tc := range []struct {
		name string
		opt  Options
	}{
		{"datafree_w4a16_nvfp4", Options{Inputs: []string{tinyLlama}, Recipe: "W4A16_NVFP4_CFG"}},
		{"fp8", Options{Inputs: []string{filepath.Join(golden, "base_llama"), filepath.Join(golden, "fp8", "input")}}},
		{"nvfp4", Options{Inputs: []string{filepath.Join(golden, "base_llama"), filepath.Join(golden, "nvfp4", "input")}}},
	} {
		t.Run(tc.name, func(t *testing.T) { assertWorkersIndependent(t, tc.opt) })
	}
}

// TestPassthroughSplitsLayersForBudget: a budget below the largest layer but above
// the largest tensor converts by runs of tensors, with the same bytes out.
func TestPassthroughSplitsLayersForBudget(t *testing.T) {
	ref := filepath.Join(t.TempDir(), "ref")
	if _, err := Run(t.Context(), Options{Inputs: []string{tinyLlama}, Out: ref}); err != nil {
		t.Fatal(err)
	}
	p, err := MakePlan(t.Context(), Options{Inputs: []string{tinyLlama}, MaxMemory: 200_000})
	if err != nil || len(p.Problems) > 0 {
		t.Fatalf("plan: %v %v", err, p.Problems)
	}
	if p.MinMemory > 200_000 || len(p.Layers) <= 4 {
		t.Fatalf("%d groups needing %d bytes", len(p.Layers), p.MinMemory)
	}
	out := filepath.Join(t.TempDir(), "out")
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	sum, err := Run(t.Context(), Options{Inputs: []string{tinyLlama}, Out: out, MaxMemory: 200_000, Allocator: mem})
	if err != nil {
		t.Fatal(err)
	}
	mem.AssertSize(t, 0)
	if sum.MaxChargeB > 200_000 {
		t.Errorf("largest charge %d over the budget", sum.MaxChargeB)
	}
	assertSameDir(t, ref, out)

	// A budget below the largest tensor converts too: a passthrough's tensors are
	// copied from file to file, never held (direct groups).
	p, err = MakePlan(t.Context(), Options{Inputs: []string{tinyLlama}, MaxMemory: 1 << 10})
	if err != nil || len(p.Problems) != 0 || p.MinMemory != 0 {
		t.Fatalf("plan: %v %v, needs %d bytes", err, p.Problems, p.MinMemory)
	}
	tiny := filepath.Join(t.TempDir(), "tiny")
	if _, err := Run(t.Context(), Options{Inputs: []string{tinyLlama}, Out: tiny, MaxMemory: 1 << 10, Allocator: mem}); err != nil {
		t.Fatal(err)
	}
	mem.AssertSize(t, 0)
	assertSameDir(t, ref, tiny)
}
