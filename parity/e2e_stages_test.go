package parity

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/quantstream/quantstream/modelopt"
	"github.com/quantstream/quantstream/quant"
)

func loadGolden(t *testing.T) *Manifest {
	t.Helper()
	m, err := Load("../testdata/golden")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	return m
}

// TestE2EState converts every calibrated end-to-end case (base weights + quant state
// + quantizers.json) and compares the output directory with ModelOpt's.
func TestE2EState(t *testing.T) {
	m := loadGolden(t)
	n := 0
	for _, e := range m.E2E {
		if e.DataFree {
			continue
		}
		n++
		t.Run(strings.TrimPrefix(e.ID, "e2e/"), func(t *testing.T) {
			if err := RunE2E(t.Context(), e, VariantState, t.TempDir()); err != nil {
				t.Fatal(err)
			}
		})
	}
	if n == 0 {
		t.Fatal("no calibrated e2e cases in the manifest")
	}
}

// TestE2EDataFreeCalibrated feeds the data-free cases to the stages with amax from
// another source: the recipe's quantizer attributes (quantizers.json) and a max
// calibration of each weight quantizer on its weight (quant.CalibrateAmax), as
// mtq.quantize(forward_loop=None) does. It checks that the planner and stage take a
// quantizer table and amax from anywhere; the data-free variant's own loader belongs to
// the modelopt package.
func TestE2EDataFreeCalibrated(t *testing.T) {
	m := loadGolden(t)
	for _, e := range m.E2E {
		if !e.DataFree {
			continue
		}
		t.Run(strings.TrimPrefix(e.ID, "e2e/"), func(t *testing.T) {
			sd, err := LoadShards(e)
			if err != nil {
				t.Fatal(err)
			}
			qs, err := modelopt.LoadQuantizersJSON(e.Path(e.QuantizersFile))
			if err != nil {
				t.Fatal(err)
			}
			for _, n := range qs.Names() {
				q := qs[n]
				if !q.Enabled {
					continue
				}
				var w quant.Tensor
				switch {
				case strings.HasSuffix(n, ".weight_quantizer"):
					w = sd[strings.TrimSuffix(n, ".weight_quantizer")+".weight"]
				case strings.Contains(n, "_weight_quantizers."):
					i := strings.LastIndex(n, "_weight_quantizers.")
					e, err := strconv.Atoi(n[i+len("_weight_quantizers."):])
					src, ok := sd[n[:i]]
					if err != nil || !ok || len(src.Shape) != 3 {
						t.Fatalf("%s: no fused experts tensor", n)
					}
					per := len(src.Data) / int(src.Shape[0])
					w = quant.Tensor{DType: src.DType, Shape: src.Shape[1:], Data: src.Data[e*per : (e+1)*per]}
				default:
					continue
				}
				a, err := quant.CalibrateAmax(q, w)
				if errors.Is(err, quant.ErrNoAmax) {
					continue
				}
				if err != nil {
					t.Fatalf("%s: %v", n, err)
				}
				sd[n+"._amax"] = a
			}
			cfg, err := os.ReadFile(filepath.Join(e.Path(e.InputDir), "config.json"))
			if err != nil {
				t.Fatal(err)
			}
			out := filepath.Join(t.TempDir(), "out")
			if err := ConvertInMemory(t.Context(), sd, cfg, qs, nil, out, 1); err != nil {
				t.Fatal(err)
			}
			if err := CompareCheckpointDirs(out, e.Path(e.ExpectedDir), e.Compare); err != nil {
				t.Fatal(err)
			}
		})
	}
}
