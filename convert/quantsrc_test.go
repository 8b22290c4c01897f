package convert

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	"github.com/quantstream/quantstream/arrowio"
	"github.com/quantstream/quantstream/internal/parallel"
)

// TestCastDataFree: the MXFP4 → NVFP4 cast with a data-free weight-only recipe
// (--in SRC --recipe W4A16_NVFP4_CFG --cast-mxfp4-to-nvfp4, no calibration state)
// writes exactly ModelOpt's export of the same cast after calibration
// (gpt_oss_mxfp4-cast_w4a16_nvfp4, whose weight quantizers depend on the weights
// alone): every tensor byte for byte, config.json and hf_quant_config.json equal,
// at 1 and 4 workers.
func TestCastDataFree(t *testing.T) {
	want := filepath.Join(qsrcE2E, "gpt_oss_mxfp4-cast_w4a16_nvfp4", "expected")
	wt, err := arrowio.ReadAllTensors(want)
	if err != nil {
		t.Fatal(err)
	}
	for _, workers := range []int{1, 4} {
		if workers > 1 {
			defer func(n int) { parallel.ChunkBytes = n }(parallel.ChunkBytes)
			parallel.ChunkBytes = 1000
		}
		out := filepath.Join(t.TempDir(), "out")
		opt := Options{Inputs: []string{filepath.Join(qsrcE2E, "src_gpt_oss_mxfp4")}, Out: out, Recipe: "W4A16_NVFP4_CFG", CastMXFP4ToNVFP4: true, Workers: workers}
		if _, err := Run(t.Context(), opt); err != nil {
			t.Fatal(err)
		}
		gt, err := arrowio.ReadAllTensors(out)
		if err != nil {
			t.Fatal(err)
		}
		if len(gt) != len(wt) {
			t.Errorf("workers %d: %d tensors, want %d", workers, len(gt), len(wt))
		}
		for name, w := range wt {
			g, ok := gt[name]
			if !ok || g.DType != w.DType || !reflect.DeepEqual(g.Shape, w.Shape) || !bytes.Equal(g.Data, w.Data) {
				t.Errorf("workers %d: %s differs from ModelOpt's cast export", workers, name)
			}
		}
		for _, f := range []string{"config.json", "hf_quant_config.json"} {
			if g, w := readJSON(t, filepath.Join(out, f)), readJSON(t, filepath.Join(want, f)); !reflect.DeepEqual(g, w) {
				t.Errorf("workers %d: %s differs:\n%v\nwant\n%v", workers, f, g, w)
			}
		}
	}
}

func readJSON(t *testing.T, path string) any {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return v
}
