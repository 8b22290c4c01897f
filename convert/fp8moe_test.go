package convert

import (
	"path/filepath"
	"testing"

	"github.com/quantstream/quantstream/arrowio"
	"github.com/quantstream/quantstream/internal/parallel"
	"github.com/quantstream/quantstream/internal/testgen"
)

// smallDeepSeek is DeepSeek-V3's layer layout (MLA, routed experts plus a shared
// one, the F32 router bias, block FP8 with partial edge blocks in the attention) at
// a size a test converts quickly: each MoE layer is 5.1 MB of FP8, 10 MB once BF16.
var smallDeepSeek = testgen.DeepSeekConfig{Layers: 2, Hidden: 512, Heads: 4, QLoRA: 192, KVLoRA: 128, Nope: 64, Rope: 32, V: 64,
	Experts: 12, MoEIntermediate: 256, Vocab: 256}

// fp8Budget is below one FP8 layer and far below its BF16 form: only expert groups
// (an expert, 0.8 MB of BF16, at a time) fit.
const fp8Budget = 4 << 20

// TestFP8MoEInExpertGroups: a DeepSeek-shaped block-FP8 MoE source larger than the
// budget dequantizes and requantizes in expert groups — the plan accepts it, every
// charge stays within the budget, and the output is byte-identical to the run
// without a budget, at 1 and 4 workers; --dequantize streams within it too.
func TestFP8MoEInExpertGroups(t *testing.T) {
	src := filepath.Join(t.TempDir(), "src")
	if err := testgen.WriteDeepSeekFP8(src, smallDeepSeek, arrowio.WriteOptions{PlanOptions: arrowio.PlanOptions{MaxShardSize: 4e6}}); err != nil {
		t.Fatal(err)
	}
	layer := int64(0)
	ck, err := arrowio.OpenCheckpoint(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, li := range ck.Layers() {
		if li.Index == 0 {
			layer, _ = li.DataBytes()
		}
	}
	ck.Close()
	if layer <= fp8Budget {
		t.Fatalf("an FP8 layer is %d bytes, not over the %d budget", layer, fp8Budget)
	}
	for _, opt := range []Options{
		{Inputs: []string{src}, Recipe: "W4A16_NVFP4_CFG"},
		{Inputs: []string{src}, Recipe: "FP8_PER_CHANNEL_PER_TOKEN_CFG"},
		{Inputs: []string{src}, Dequantize: true},
	} {
		name := opt.Recipe
		if opt.Dequantize {
			name = "dequantize"
		}
		t.Run(name, func(t *testing.T) {
			opt.MaxMemory = fp8Budget
			p, err := MakePlan(t.Context(), opt)
			if err != nil || len(p.Problems) > 0 {
				t.Fatalf("plan: %v %v", err, p.Problems)
			}
			groups := map[int]int{}
			for _, lp := range p.Layers {
				groups[lp.Index]++
			}
			if groups[0] < 4 || groups[1] < 4 || p.MinMemory > fp8Budget {
				t.Fatalf("groups per layer %v, min memory %d", groups, p.MinMemory)
			}
			opt.MaxMemory = 0
			ref, want := convertMoE(t, opt, 0, 1)
			for _, workers := range []int{1, 4} {
				if workers > 1 {
					defer func(n int) { parallel.ChunkBytes = n }(parallel.ChunkBytes)
					parallel.ChunkBytes = 1000
				}
				out, got := convertMoE(t, opt, fp8Budget, workers)
				assertSameDir(t, ref, out)
				// (A passthrough's summary counts the runs it read as layers.)
				if got.MaxChargeB > fp8Budget || got.Tensors != want.Tensors || (!opt.Dequantize && got.Layers != want.Layers) {
					t.Errorf("largest charge %d (budget %d); %d layers, %d tensors; whole %d, %d", got.MaxChargeB, fp8Budget, got.Layers, got.Tensors, want.Layers, want.Tensors)
				}
			}
		})
	}
}
