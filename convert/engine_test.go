package convert

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/quantstream/quantstream/pipeline"
)

// noDataAllocator fails the test on any allocation: layer data is read into
// allocator memory, so a conversion that allocates nothing has read no tensor data.
type noDataAllocator struct {
	t *testing.T
	n atomic.Int64
}

func (a *noDataAllocator) Allocate(size int) []byte {
	a.n.Add(1)
	a.t.Errorf("tensor data read: Allocate(%d)", size)
	return make([]byte, size)
}
func (a *noDataAllocator) Reallocate(size int, b []byte) []byte { return a.Allocate(size) }
func (a *noDataAllocator) Free([]byte)                          {}

// TestEngineRefusesBeforeReadingData: --engine vllm with the MXFP4 recipe (ModelOpt
// writes quant_algo "mxfp4", which vLLM's loader rejects) is refused by Prepare, from
// the plan: no allocation (no tensor data read), no layer written, no output.
func TestEngineRefusesBeforeReadingData(t *testing.T) {
	out := filepath.Join(t.TempDir(), "out")
	mem := &noDataAllocator{t: t}
	_, err := Run(t.Context(), Options{Inputs: []string{tinyLlama}, Out: out, Recipe: "MXFP4_DEFAULT_CFG", Engine: "vllm",
		Allocator: mem, Progress: func(pipeline.Progress) { t.Error("a layer was written") }})
	if !errors.Is(err, ErrEngine) || !errors.Is(err, ErrPlan) {
		t.Fatalf("err = %v, want ErrEngine and ErrPlan", err)
	}
	for _, want := range []string{"vllm", "mxfp4", "QUANT_ALGOS"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
	if mem.n.Load() != 0 {
		t.Errorf("%d allocations", mem.n.Load())
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Errorf("output exists: %v", err)
	}

	// plan reports the same refusal as a problem.
	p, err := MakePlan(t.Context(), Options{Inputs: []string{tinyLlama}, Recipe: "MXFP4_DEFAULT_CFG", Engine: "vllm"})
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Problems) != 1 || !strings.Contains(p.Problems[0], "mxfp4") {
		t.Errorf("plan problems = %q, want the vLLM refusal", p.Problems)
	}
}

// TestEngineAccepts: an output the engine loads converts as without --engine.
func TestEngineAccepts(t *testing.T) {
	for _, tc := range []struct{ recipe, engine string }{
		{"W4A16_NVFP4_CFG", "vllm"},
		{"FP8_PER_CHANNEL_PER_TOKEN_CFG", "trtllm"},
		{"", "sglang"}, // passthrough of an unquantized model
	} {
		t.Run(tc.recipe+"/"+tc.engine, func(t *testing.T) {
			out := filepath.Join(t.TempDir(), "out")
			if _, err := Run(t.Context(), Options{Inputs: []string{tinyLlama}, Out: out, Recipe: tc.recipe, Engine: tc.engine}); err != nil {
				t.Fatal(err)
			}
		})
	}
}

// TestEngineShapeRule: vLLM's FP8_PB_WO loader needs both dims divisible by 128 and a
// 4-D block scale; the tiny model's 64-row projections (one block, a 0-dim scale) fail
// both, and the plan names them.
func TestEngineShapeRule(t *testing.T) {
	p, err := MakePlan(t.Context(), Options{Inputs: []string{tinyLlama}, Recipe: "FP8_2D_BLOCKWISE_WEIGHT_ONLY_CFG", Engine: "vllm"})
	if err != nil {
		t.Fatal(err)
	}
	var divisible, zeroDim bool
	for _, pr := range p.Problems {
		divisible = divisible || strings.Contains(pr, "k_proj.weight: FP8_PB_WO weight [64 128]") && strings.Contains(pr, "divisible by 128")
		zeroDim = zeroDim || strings.Contains(pr, "weight_scale [] (0-dim)")
	}
	if !divisible || !zeroDim {
		t.Errorf("plan problems do not name the 64-row k_proj and the 0-dim block scale:\n%s", strings.Join(p.Problems, "\n"))
	}
}
