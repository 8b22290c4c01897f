package stages

import (
	"errors"
	"strings"
	"testing"

	"github.com/quantstream/quantstream/quant"
)

// recipe builds the weight and input quantizers of one format.
type recipe struct {
	name   string
	w, in  func() *quant.Quantizer
	pqs    bool
	format string
}

func recipes() []recipe {
	e43, e80 := quant.BitsE4M3, quant.BitsE8M0
	int8 := func(axis []int) func() *quant.Quantizer {
		return func() *quant.Quantizer {
			return &quant.Quantizer{Enabled: true, NumBits: quant.BitsInt8, Axis: axis, FakeQuant: true}
		}
	}
	off := func() *quant.Quantizer { return &quant.Quantizer{NumBits: quant.BitsInt8} }
	fp8 := func() *quant.Quantizer { return fp8Q(true) }
	nv := func(b int, sb quant.NumBits) func() *quant.Quantizer {
		return func() *quant.Quantizer {
			return &quant.Quantizer{Enabled: true, NumBits: quant.BitsE2M1, FakeQuant: true,
				BlockSizes: &quant.BlockSizes{Dims: map[int]int{-1: b}, Type: "dynamic", ScaleBits: &sb}}
		}
	}
	w4a8 := func() *quant.Quantizer {
		return &quant.Quantizer{Class: "SequentialQuantizer", Enabled: true, Sequential: []*quant.Quantizer{int4Q(), fp8Q(true)}}
	}
	return []recipe{
		{"int8_sq", int8([]int{0}), int8(nil), false, "int8_sq"},
		{"int8_wo", int8([]int{0}), off, false, "int8_wo"},
		{"int4_awq", int4Q, off, true, "int4_awq"},
		{"w4a8_awq", w4a8, fp8, true, "w4a8_awq"},
		{"nvfp4_awq", nv(16, e43), nv(16, e43), true, "nvfp4_awq"},
		{"w4a16_nvfp4", nv(16, e43), off, false, "w4a16_nvfp4"},
		{"w4a8_nvfp4_fp8", nv(32, e43), fp8, false, "w4a8_nvfp4_fp8"},
		{"w4a8_mxfp4_fp8", nv(32, e80), fp8, false, "w4a8_mxfp4_fp8"},
	}
}

// TestFormatsEndToEnd exports a tiny Llama in every format with amax calibrated on
// the weights (and random positive pre_quant_scales for AWQ): Process must produce
// exactly the planned headers, norms absorb the q/k/v and gate/up scales, and o_proj
// / down_proj keep theirs (except nvfp4_awq, which folds down_proj into up_proj).
func TestFormatsEndToEnd(t *testing.T) {
	for _, rc := range recipes() {
		t.Run(rc.name, func(t *testing.T) {
			sd, qs := formatLayer(t, rc)
			plan, err := NewPlan(infosOf(sd), []byte(tinyLlamaConfig), qs, Options{})
			if err != nil {
				t.Fatal(err)
			}
			if plan.ModelFormat != rc.format {
				t.Fatalf("model format %q, want %q", plan.ModelFormat, rc.format)
			}
			out := processLayer(t, plan, sd, 0)
			p := "model.layers.0."
			for _, n := range []string{"self_attn.q_proj", "mlp.gate_proj", "mlp.up_proj"} {
				if _, ok := out[p+n+".pre_quant_scale"]; ok {
					t.Errorf("%s kept its pre_quant_scale", n)
				}
			}
			if rc.pqs {
				if _, ok := out[p+"self_attn.o_proj.pre_quant_scale"]; !ok {
					t.Error("o_proj lost its pre_quant_scale (its size differs from v_proj's output)")
				}
				_, down := out[p+"mlp.down_proj.pre_quant_scale"]
				if down == (rc.format == "nvfp4_awq") {
					t.Errorf("down_proj pre_quant_scale kept = %v for %s", down, rc.format)
				}
			}
		})
	}
}

// formatLayer is a tiny Llama layer quantized with rc, with amax calibrated on the
// weights (and random positive pre_quant_scales for AWQ).
func formatLayer(t *testing.T, rc recipe) (map[string]quant.Tensor, table) {
	t.Helper()
	sd, base := tinyLlama(1)
	qs := table{}
	for n, q := range base {
		switch {
		case strings.HasSuffix(n, ".weight_quantizer") && q.Enabled:
			if rc.name == "w4a8_awq" {
				qs[n+".0"], qs[n+".1"] = int4Q(), fp8Q(true)
			} else {
				qs[n] = rc.w()
			}
		case strings.HasSuffix(n, ".input_quantizer") && q.Enabled:
			qs[n] = rc.in()
		default:
			qs[n] = q
		}
	}
	for n := range sd {
		if strings.Contains(n, "_quantizer._amax") && !strings.Contains(n, "bmm") {
			delete(sd, n)
		}
	}
	for n := range qs {
		if !strings.HasSuffix(n, ".weight_quantizer") && !strings.HasSuffix(n, ".weight_quantizer.0") && !strings.HasSuffix(n, ".weight_quantizer.1") {
			continue
		}
		mod := n[:strings.Index(n, ".weight_quantizer")]
		q, _ := qs.Get(n)
		if !q.Enabled {
			continue
		}
		a, err := quant.CalibrateAmax(q, sd[mod+".weight"])
		if errors.Is(err, quant.ErrNoAmax) {
			continue
		}
		if err != nil {
			t.Fatalf("%s: %v", n, err)
		}
		sd[n+"._amax"] = a
		iq := qs[mod+".input_quantizer"]
		if iq.Enabled && !iq.BlockSizes.Dynamic() || iq.Enabled && iq.NumBits == quant.BitsE2M1 {
			sd[mod+".input_quantizer._amax"] = bf16Tensor([]int64{}, []float32{2.5})
		}
		if rc.pqs {
			cols := int(sd[mod+".weight"].Shape[1])
			p := make([]float32, cols)
			for i := range p {
				p[i] = 0.5 + float32((i*7+len(mod))%11)/8
			}
			sd[mod+".input_quantizer._pre_quant_scale"] = bf16Tensor([]int64{int64(cols)}, p)
		}
	}
	return sd, qs
}
