package parity

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/quantstream/quantstream/arrowio"
	"github.com/quantstream/quantstream/modelopt"
	"github.com/quantstream/quantstream/quant"
)

// TestCalibrateAmaxMatchesGoldenState recalibrates every weight quantizer of the
// golden end-to-end states on its weight and compares with the stored _amax: dtype,
// shape and bytes. ModelOpt's max calibration always runs on the weight tensor
// itself, so the state must be reproducible from the weights alone (for AWQ cases, from
// the rescaled weights stored in quant_state).
func TestCalibrateAmaxMatchesGoldenState(t *testing.T) {
	cases := []string{"fp8", "fp8_pc_pt", "fp8_pb_wo", "nvfp4", "int4_awq", "w4a8_awq"}
	for _, name := range cases {
		t.Run(name, func(t *testing.T) {
			dir := filepath.Join(goldenDir, "e2e", name, "input")
			if _, err := os.Stat(dir); err != nil {
				t.Fatal(err)
			}
			table, err := modelopt.LoadQuantizersJSON(filepath.Join(dir, "quantizers.json"))
			if err != nil {
				t.Fatal(err)
			}
			state := calibOpen(t, filepath.Join(dir, "quant_state.safetensors"))
			base := calibOpen(t, filepath.Join(goldenDir, "e2e", "base_llama", "model.safetensors"))
			weight := func(n string) quant.Tensor {
				t.Helper()
				for _, f := range []*arrowio.File{state, base} {
					if _, ok := f.Header.Lookup(n); ok {
						w, err := f.ReadTensor(n)
						if err != nil {
							t.Fatal(err)
						}
						return w
					}
				}
				t.Fatalf("weight %q not found", n)
				return quant.Tensor{}
			}
			checked := 0
			for _, th := range state.Header.Tensors {
				key := th.Name
				if !strings.HasSuffix(key, "._amax") || !strings.Contains(key, "weight_quantizer") {
					continue
				}
				qname := strings.TrimSuffix(key, "._amax")
				q, ok := table.Get(qname)
				if !ok {
					t.Fatalf("%s: no quantizer attributes", qname)
				}
				mod := qname[:strings.Index(qname, ".weight_quantizer")]
				got, err := quant.CalibrateAmax(q, weight(mod+".weight"))
				if err != nil {
					t.Errorf("%s: %v", key, err)
					continue
				}
				want, err := state.ReadTensor(key)
				if err != nil {
					t.Fatal(err)
				}
				if err := CompareExact(got, want); err != nil {
					t.Errorf("%s: %v", key, err)
				}
				checked++
			}
			if checked == 0 {
				t.Fatal("no weight amax in the state")
			}
			t.Logf("%d weight amax buffers reproduced", checked)
		})
	}
}

func calibOpen(t *testing.T, path string) *arrowio.File {
	t.Helper()
	f, err := arrowio.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}
