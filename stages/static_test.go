package stages

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/quantstream/quantstream/quant"
)

// staticNVFP4Q is a static NVFP4 weight quantizer as a saved state describes it
// (ModelOpt's StaticBlockScaleQuantizer, alias NVFP4StaticQuantizer).
func staticNVFP4Q(class string) *quant.Quantizer {
	sb := quant.BitsE4M3
	return &quant.Quantizer{Class: class, Enabled: true, NumBits: quant.BitsE2M1, FakeQuant: true, Axis: []int{0}, AxisTuple: true,
		BlockSizes: &quant.BlockSizes{Dims: map[int]int{-1: 16}, Type: "static", ScaleBits: &sb}}
}

// staticLayer turns the tiny Llama's q/k/v weight quantizers static: per-block amax
// (the block maxima, [O·I/16, 1] F32) and a global amax of their own, different for
// each, so that the fusion group has something to unify.
func staticLayer(t *testing.T, class string) (map[string]quant.Tensor, table) {
	t.Helper()
	sd, qs := tinyLlama(1)
	for k, n := range []string{"q_proj", "k_proj", "v_proj"} {
		m := "model.layers.0.self_attn." + n
		w, _ := quant.Float32s(sd[m+".weight"])
		var blocks []float32
		for b := 0; b < len(w); b += 16 {
			blocks = append(blocks, absMax(w[b:b+16]))
		}
		amax, _ := quant.FromFloat32(quant.F32, []int64{int64(len(blocks)), 1}, blocks)
		g, _ := quant.FromFloat32(quant.F32, []int64{}, []float32{absMax(w) * float32(1+k)})
		sd[m+".weight_quantizer._amax"], sd[m+".weight_quantizer._global_amax"] = amax, g
		qs[m+".weight_quantizer"] = staticNVFP4Q(class)
	}
	return sd, qs
}

// TestStaticNVFP4Export: a static weight quantizer (one with a _global_amax, under
// either class name) exports through quant's static path, with the global amax
// unified over the q/k/v group (preprocess_linear_fusion's NVFP4StaticQuantizer
// branch) and the per-block amax left per module; the plan says nvfp4.
func TestStaticNVFP4Export(t *testing.T) {
	for _, class := range []string{"StaticBlockScaleQuantizer", "NVFP4StaticQuantizer"} {
		t.Run(class, func(t *testing.T) {
			sd, qs := staticLayer(t, class)
			plan, err := NewPlan(infosOf(sd), []byte(tinyLlamaConfig), qs, Options{})
			if err != nil {
				t.Fatal(err)
			}
			out := processLayer(t, plan, sd, 0)
			p := "model.layers.0.self_attn."
			vg, _ := quant.Scalar(sd[p+"v_proj.weight_quantizer._global_amax"]) // the largest of the three
			for _, n := range []string{"q_proj", "k_proj", "v_proj"} {
				m := p + n
				g, _ := quant.FromFloat32(quant.F32, []int64{}, []float32{vg})
				want, err := quant.ExportQuantizedWeight(&quant.Module{Name: m, WeightQuantizer: qs[m+".weight_quantizer"], InputQuantizer: qs[m+".input_quantizer"],
					Weight: sd[m+".weight"], WeightAmax: ptr(sd[m+".weight_quantizer._amax"]), GlobalAmax: &g, InputAmax: ptr(sd[m+".input_quantizer._amax"])}, quant.BF16, quant.DivIEEE)
				if err != nil {
					t.Fatal(err)
				}
				for k, w := range map[string]*quant.Tensor{"weight": &want.Weight, "weight_scale": want.WeightScale, "weight_scale_2": want.WeightScale2} {
					if got := out[m+"."+k]; !bytes.Equal(got.Data, w.Data) || got.DType != w.DType {
						t.Errorf("%s.%s differs from quant's static export with the group's global amax", m, k)
					}
				}
			}
			if len(plan.Modules["nvfp4"]) == 0 {
				t.Errorf("modules per format %v", plan.Modules)
			}
		})
	}
}

func ptr(t quant.Tensor) *quant.Tensor { return &t }

// TestStaticNVFP4Refusals: what would be exported wrongly is a plan problem, the
// same in plan and convert: a static class without a global amax, and a per-block
// amax that does not view as the weight's blocks.
func TestStaticNVFP4Refusals(t *testing.T) {
	sd, qs := staticLayer(t, "StaticBlockScaleQuantizer")
	delete(sd, "model.layers.0.self_attn.k_proj.weight_quantizer._global_amax")
	if _, err := NewPlan(infosOf(sd), []byte(tinyLlamaConfig), qs, Options{}); !errors.Is(err, ErrMissingAmax) || !strings.Contains(err.Error(), "k_proj") {
		t.Errorf("no global amax: %v", err)
	}
	sd, qs = staticLayer(t, "StaticBlockScaleQuantizer")
	a := sd["model.layers.0.self_attn.q_proj.weight_quantizer._amax"]
	a.Shape, a.Data = []int64{a.Shape[0] - 1, 1}, a.Data[4:]
	sd["model.layers.0.self_attn.q_proj.weight_quantizer._amax"] = a
	if _, err := NewPlan(infosOf(sd), []byte(tinyLlamaConfig), qs, Options{}); !errors.Is(err, ErrShape) || !strings.Contains(err.Error(), "block amaxes") {
		t.Errorf("short amax: %v", err)
	}
}
