package parity

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/quantstream/quantstream/modelopt"
	"github.com/quantstream/quantstream/quant"
)

// TestDataFreeLinearsThroughModuleLayer exports every quantized linear of the
// data-free Llama cases whose quantizers need no cross-module fusion (per-channel,
// per-block and MX formats) with only the quant module layer: max-calibrate the weight
// quantizer on the base weight (quant.CalibrateAmax), then quant.ExportQuantizedWeight.
// Each exported weight and weight_scale must equal the golden checkpoint's bytes, and
// the checkpoint must hold no other tensor for the module.
func TestDataFreeLinearsThroughModuleLayer(t *testing.T) {
	m, err := Load(goldenDir)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	want := map[string]bool{"e2e/df_int8_wo": true, "e2e/df_int4_wo": true, "e2e/df_fp8_pc_pt": true,
		"e2e/df_fp8_pb_wo": true, "e2e/df_mxfp4": true, "e2e/df_mxfp8": true}
	ran := 0
	for _, e := range m.E2E {
		if !want[e.ID] {
			continue
		}
		ran++
		t.Run(strings.TrimPrefix(e.ID, "e2e/"), func(t *testing.T) {
			table, err := modelopt.LoadQuantizersJSON(e.Path(e.QuantizersFile))
			if err != nil {
				t.Fatal(err)
			}
			if len(e.InputShards) != 1 {
				t.Fatalf("input shards %v", e.InputShards)
			}
			base := calibOpen(t, e.Path(e.InputShards[0]))
			exp := calibOpen(t, filepath.Join(e.Path(e.ExpectedDir), "model.safetensors"))
			exported := 0
			for _, th := range base.Header.Tensors {
				mod, ok := strings.CutSuffix(th.Name, ".weight")
				if !ok {
					continue
				}
				wq, ok := table.Get(mod + ".weight_quantizer")
				if !ok {
					continue
				}
				iq, _ := table.Get(mod + ".input_quantizer")
				w, err := base.ReadTensor(th.Name)
				if err != nil {
					t.Fatal(err)
				}
				qm := &quant.Module{Name: mod, Weight: w, WeightQuantizer: wq, InputQuantizer: iq}
				if wq.Enabled {
					a, err := quant.CalibrateAmax(wq, w)
					switch {
					case errors.Is(err, quant.ErrNoAmax):
					case err != nil:
						t.Fatalf("%s: %v", mod, err)
					default:
						qm.WeightAmax = &a
					}
				}
				ex, err := quant.ExportQuantizedWeight(qm, w.DType, quant.DivIEEE)
				if err != nil {
					t.Fatalf("%s: %v", mod, err)
				}
				if ex == nil {
					continue
				}
				got := map[string]*quant.Tensor{"weight": &ex.Weight, "weight_scale": ex.WeightScale,
					"weight_scale_2": ex.WeightScale2, "input_scale": ex.InputScale}
				for suffix, g := range got {
					_, inExp := exp.Header.Lookup(mod + "." + suffix)
					if g == nil {
						if inExp {
							t.Errorf("%s.%s: expected in the checkpoint, not produced", mod, suffix)
						}
						continue
					}
					if !inExp {
						t.Errorf("%s.%s: produced, not in the checkpoint", mod, suffix)
						continue
					}
					wt, err := exp.ReadTensor(mod + "." + suffix)
					if err != nil {
						t.Fatal(err)
					}
					if err := CompareExact(*g, wt); err != nil {
						t.Errorf("%s.%s: %v", mod, suffix, err)
					}
				}
				exported++
			}
			if exported == 0 {
				t.Fatal("no quantized linear")
			}
			t.Logf("%d linears exported bit-exactly", exported)
		})
	}
	if ran != len(want) {
		t.Fatalf("%d of %d data-free cases in the manifest", ran, len(want))
	}
}
