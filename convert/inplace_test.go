package convert

import (
	"path/filepath"
	"testing"

	"github.com/quantstream/quantstream/arrowio"
	"github.com/quantstream/quantstream/internal/testgen"
)

// TestCalibrationAppendsInPlace: a data-free calibration whose per-block amax
// buffers are larger than quantstream.DefaultAppendRoom (INT4 blocks of 128 on
// 1 MB weights) still appends them in place, so a decoder layer is charged its
// bytes, the buffers and the export's output, never a copy of itself; the run
// (which checks every stage that claims to hand its input on) gives the bytes of a
// run without a budget.
func TestCalibrationAppendsInPlace(t *testing.T) {
	dir := t.TempDir()
	model := filepath.Join(dir, "model")
	c := testgen.LlamaConfig{Layers: 2, Hidden: 512, Intermediate: 1024, Heads: 4, KVHeads: 2, Vocab: 512}
	if err := testgen.WriteLlama(model, c, arrowio.WriteOptions{}); err != nil {
		t.Fatal(err)
	}
	opt := Options{Inputs: []string{model}, Recipe: "INT4_BLOCKWISE_WEIGHT_ONLY_CFG"}
	p, err := MakePlan(t.Context(), opt)
	if err != nil || len(p.Problems) > 0 {
		t.Fatalf("plan: %v %v", err, p.Problems)
	}
	lp := p.Layers[0]
	for _, l := range p.Layers {
		if l.Index == 0 {
			lp = l
		}
	}
	amax := lp.Bytes[1] - lp.Bytes[0]
	if amax <= 64<<10 {
		t.Fatalf("amax buffers of %d bytes: want more than the default append room", amax)
	}
	if lp.New[1] != amax || lp.Charge[0] != max(lp.Bytes[0]+amax, lp.Bytes[1]+lp.New[2]) {
		t.Errorf("layer 0: Bytes %v New %v Charge %v, want the calibration charged its %d bytes of buffers", lp.Bytes, lp.New, lp.Charge, amax)
	}
	ref := filepath.Join(dir, "ref")
	opt.Out = ref
	if _, err := Run(t.Context(), opt); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "out")
	opt.Out, opt.MaxMemory = out, p.MinMemory
	sum, err := Run(t.Context(), opt)
	if err != nil {
		t.Fatal(err)
	}
	if sum.MaxChargeB > p.MinMemory {
		t.Errorf("largest charge %d over the budget %d", sum.MaxChargeB, p.MinMemory)
	}
	assertSameDir(t, ref, out)
}
