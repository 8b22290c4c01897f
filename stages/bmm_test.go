package stages

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/quantstream/quantstream/quant"
)

const gptOSSConfig = `{"architectures": ["GptOssForCausalLM"], "model_type": "gpt_oss", "dtype": "bfloat16"}`

func mxfp4Q(enabled bool) *quant.Quantizer {
	sb := quant.BitsE8M0
	return &quant.Quantizer{Class: "TensorQuantizer", Enabled: enabled, NumBits: quant.BitsE2M1, FakeQuant: true, Dynamic: true,
		BlockSizes: &quant.BlockSizes{Dims: map[int]int{-1: 32}, Type: "dynamic", ScaleBits: &sb}}
}

// bmmLayer is one GPT-OSS-style MoE block: experts.gate_up_proj [E, H, 2F] and
// experts.down_proj [E, F, H] with singular quantizers, plus the router.
func bmmLayer(q func(bool) *quant.Quantizer, withAmax bool) (map[string]quant.Tensor, table) {
	const E, H, F = 2, 32, 32
	r := rand.New(rand.NewPCG(3, 4))
	p := "model.layers.0.mlp."
	sd := map[string]quant.Tensor{
		p + "experts.gate_up_proj":      bf16Tensor([]int64{E, H, 2 * F}, randVals(r, E*H*2*F, 0.1)),
		p + "experts.gate_up_proj_bias": bf16Tensor([]int64{E, 2 * F}, randVals(r, E*2*F, 0.1)),
		p + "experts.down_proj":         bf16Tensor([]int64{E, F, H}, randVals(r, E*F*H, 0.1)),
		p + "router.weight":             bf16Tensor([]int64{E, H}, randVals(r, E*H, 0.1)),
	}
	qs := table{}
	for _, a := range bmmAttrs {
		qs[p+"experts."+a+"_weight_quantizer"] = q(true)
		qs[p+"experts."+a+"_input_quantizer"] = q(true)
		if withAmax {
			w, _ := quant.Float32s(sd[p+"experts."+a])
			sd[p+"experts."+a+"_weight_quantizer._amax"] = bf16Tensor([]int64{}, []float32{absMax(w)})
		}
	}
	if withAmax {
		sd[p+"experts.gate_up_proj_input_quantizer._amax"] = bf16Tensor([]int64{}, []float32{3})
	}
	return sd, qs
}

func TestBMMExpertsPlan(t *testing.T) {
	p := "model.layers.0.mlp."
	for _, tc := range []struct {
		name string
		q    func(bool) *quant.Quantizer
		amax bool
		want map[string]string
	}{
		{"nvfp4", nvfp4Q, true, map[string]string{
			"experts.gate_up_proj": "U8 [2 16 64]", "experts.gate_up_proj_weight_scale": "F8_E4M3 [2 2 64]",
			"experts.gate_up_proj_weight_scale_2": "F32 []", "experts.gate_up_proj_input_scale": "F32 []",
			// down_proj's input amax is filled from gate_up_proj's (max of the batch).
			"experts.down_proj": "U8 [2 16 32]", "experts.down_proj_input_scale": "F32 []",
			"experts.down_proj_weight_scale": "F8_E4M3 [2 2 32]", "experts.down_proj_weight_scale_2": "F32 []",
			"experts.gate_up_proj_bias": "BF16 [2 64]", "router.weight": "BF16 [2 32]"}},
		{"mxfp4", mxfp4Q, false, map[string]string{
			"experts.gate_up_proj": "U8 [2 32 32]", "experts.gate_up_proj_weight_scale": "U8 [2 32 2]",
			"experts.down_proj": "U8 [2 32 16]", "experts.down_proj_weight_scale": "U8 [2 32 1]",
			"experts.gate_up_proj_bias": "BF16 [2 64]", "router.weight": "BF16 [2 32]"}},
		// No amax at all: weights take max|gate_up_proj|, inputs 0.5.
		{"fp8 uncalibrated", fp8Q, false, map[string]string{
			"experts.gate_up_proj": "F8_E4M3 [2 32 64]", "experts.gate_up_proj_weight_scale": "F32 []",
			"experts.gate_up_proj_input_scale": "F32 []", "experts.down_proj": "F8_E4M3 [2 32 32]",
			"experts.down_proj_weight_scale": "F32 []", "experts.down_proj_input_scale": "F32 []",
			"experts.gate_up_proj_bias": "BF16 [2 64]", "router.weight": "BF16 [2 32]"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sd, qs := bmmLayer(tc.q, tc.amax)
			plan, err := NewPlan(infosOf(sd), []byte(gptOSSConfig), qs, Options{})
			if err != nil {
				t.Fatal(err)
			}
			got := map[string]string{}
			for _, o := range plan.Layer(0).Outputs {
				got[o.Name[len(p):]] = o.DType.String() + " " + fmtShape(o.Shape)
			}
			for k, v := range tc.want {
				if got[k] != v {
					t.Errorf("%s: %q, want %q", k, got[k], v)
				}
			}
			if len(got) != len(tc.want) {
				t.Errorf("outputs %v", got)
			}
			out := processLayer(t, plan, sd, 0) // Process checks its headers against the plan
			hq, _ := plan.HFQuantConfigJSON()
			if !bytes.Contains(hq, []byte(`"model.layers.0.mlp.router"`)) {
				t.Errorf("router not excluded:\n%s", hq)
			}
			if tc.name == "fp8 uncalibrated" {
				w, _ := quant.Float32s(sd[p+"experts.gate_up_proj"])
				for _, k := range []string{"experts.gate_up_proj_weight_scale", "experts.down_proj_weight_scale"} {
					if v := scalarOf(t, out[p+k]); v != absMax(w)/448 {
						t.Errorf("%s = %v, want max|gate_up_proj|/448 = %v", k, v, absMax(w)/448)
					}
				}
				if v := scalarOf(t, out[p+"experts.down_proj_input_scale"]); v != float32(0.5)/448 {
					t.Errorf("input scale %v, want 0.5/448", v)
				}
			}
		})
	}
}

// TestBMMNVFP4Transposed: an NVFP4 BMM expert [E, in, out] is the 2-D export of each
// transposed expert, transposed back.
func TestBMMNVFP4Transposed(t *testing.T) {
	sd, qs := bmmLayer(nvfp4Q, true)
	plan, err := NewPlan(infosOf(sd), []byte(gptOSSConfig), qs, Options{})
	if err != nil {
		t.Fatal(err)
	}
	out := processLayer(t, plan, sd, 0)
	p := "model.layers.0.mlp.experts."
	w := sd[p+"gate_up_proj"]
	s2 := out[p+"gate_up_proj_weight_scale_2"]
	v2 := scalarOf(t, s2)
	wt, err := quant.TransposeLast2(w)
	if err != nil {
		t.Fatal(err)
	}
	sc, err := quant.NVFP4{Block: 16, Scale2: []float32{v2}}.AppendBlockScales(nil, wt, 0, 2*64)
	if err != nil {
		t.Fatal(err)
	}
	scale := quant.Tensor{DType: quant.F8E4M3, Shape: []int64{2, 64, 2}, Data: sc}
	q, err := quant.ToQuantizedWeight(wt, &scale, &s2, "nvfp4", 16, quant.DivIEEE)
	if err != nil {
		t.Fatal(err)
	}
	qb, _ := quant.TransposeLast2(q)
	sb, _ := quant.TransposeLast2(scale)
	if !bytes.Equal(out[p+"gate_up_proj"].Data, qb.Data) || !slices.Equal(out[p+"gate_up_proj"].Shape, qb.Shape) {
		t.Error("packed weight differs from the transposed 2-D export")
	}
	if !bytes.Equal(out[p+"gate_up_proj_weight_scale"].Data, sb.Data) {
		t.Error("block scales differ from the transposed 2-D export")
	}
}

func fmtShape(s []int64) string {
	var b bytes.Buffer
	b.WriteByte('[')
	for i, d := range s {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(itoa(d))
	}
	b.WriteByte(']')
	return b.String()
}

func itoa(d int64) string {
	if d == 0 {
		return "0"
	}
	var buf [20]byte
	i := len(buf)
	for d > 0 {
		i--
		buf[i] = byte('0' + d%10)
		d /= 10
	}
	return string(buf[i:])
}

// TestBMMLayoutRefused: singular (batched-matmul) quantizers on experts tensors of
// the transformers-5 fused layout [E, 2I, H] / [E, H, I] are refused before any
// tensor is read, naming the container and the check to make; a per-channel FP8
// amax other than one per expert is refused too.
func TestBMMLayoutRefused(t *testing.T) {
	sd, qs := bmmLayer(nvfp4Q, true)
	p := "model.layers.0.mlp.experts."
	// E=2, H=32, I=16: the fused layout of the same sizes.
	sd[p+"gate_up_proj"] = bf16Tensor([]int64{2, 32, 32}, make([]float32, 2*32*32))
	sd[p+"down_proj"] = bf16Tensor([]int64{2, 32, 16}, make([]float32, 2*32*16))
	_, err := NewPlan(infosOf(sd), []byte(gptOSSConfig), qs, Options{})
	if !errors.Is(err, ErrShape) || !strings.Contains(err.Error(), "model.layers.0.mlp.experts: gate_up_proj [2 32 32] and down_proj [2 32 16]") || !strings.Contains(err.Error(), "check the quantizer table") {
		t.Fatalf("err %v, want ErrShape naming the experts and the fix", err)
	}

	pc := func(enabled bool) *quant.Quantizer {
		return &quant.Quantizer{Class: "TensorQuantizer", Enabled: enabled, NumBits: quant.BitsE4M3, Axis: []int{0}}
	}
	sd, qs = bmmLayer(pc, false)
	for _, a := range bmmAttrs {
		qs[p+a+"_input_quantizer"] = &quant.Quantizer{Class: "TensorQuantizer", NumBits: quant.BitsE4M3}
		sd[p+a+"_weight_quantizer._amax"] = bf16Tensor([]int64{2, 1, 1}, []float32{1, 2})
	}
	if _, err := NewPlan(infosOf(sd), []byte(gptOSSConfig), qs, Options{}); err != nil {
		t.Fatalf("per-expert FP8 amax: %v", err)
	}
	sd[p+"down_proj_weight_quantizer._amax"] = bf16Tensor([]int64{1, 1, 32}, make([]float32, 32))
	_, err = NewPlan(infosOf(sd), []byte(gptOSSConfig), qs, Options{})
	if !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), "experts.down_proj: per-channel FP8 amax [1 1 32]") {
		t.Fatalf("per-column FP8 amax: %v, want ErrUnsupported naming it", err)
	}
}
