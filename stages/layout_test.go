package stages

import (
	"errors"
	"slices"
	"strconv"
	"strings"
	"testing"

	quantstream "github.com/quantstream/quantstream"
	"github.com/quantstream/quantstream/quant"
)

// TestPlanRefusesUnknownExpertLayout: experts in a layout the family does not list,
// or a 3-D experts weight the quantizer table does not describe, are plan problems
// naming the tensor, found from headers; never an export along a guessed axis.
func TestPlanRefusesUnknownExpertLayout(t *testing.T) {
	bf := func(name string, shape ...int64) quantstream.TensorInfo {
		return quantstream.TensorInfo{Name: name, DType: quant.BF16, Shape: shape}
	}
	const p = "model.layers.0.mlp.experts."
	for _, tc := range []struct {
		name, config string
		inputs       []quantstream.TensorInfo
		qs           table
		want, not    []string
	}{
		{
			name:   "experts in a dense family",
			config: `{"model_type": "llama"}`,
			inputs: []quantstream.TensorInfo{bf(p+"0.gate_proj.weight", 32, 64)},
			qs:     table{p + "0.gate_proj.weight_quantizer": fp8Q(true)},
			want:   []string{p + "0.gate_proj.weight", "per_expert", "family llama", "no experts", "--arch"},
		},
		{
			// The golden gpt_oss data-free case as it was silently cut per expert: a
			// batched-matmul family whose table has per-expert quantizers.
			name:   "fused quantizers on batched-matmul experts",
			config: `{"model_type": "gpt_oss", "num_local_experts": 2}`,
			inputs: []quantstream.TensorInfo{bf(p+"gate_up_proj", 2, 64, 128), bf(p+"down_proj", 2, 64, 64)},
			qs: func() table {
				q := table{}
				for e := range 2 {
					q[p+"gate_up_proj_weight_quantizers."+strconv.Itoa(e)] = fp8Q(true)
					q[p+"down_proj_weight_quantizers."+strconv.Itoa(e)] = fp8Q(true)
				}
				return q
			}(),
			want: []string{p + "gate_up_proj", "fused_3d", "family gpt_oss", "[bmm]", "do not have that layout's shapes"},
			// The shapes are not fused_3d ones: listing the layout would cut them wrong.
			not: []string{"add the layout"},
		},
		{
			// Experts under names no layout knows pass through unquantized otherwise.
			name:   "3-D experts weights under unknown names",
			config: `{"model_type": "qwen3_moe"}`,
			inputs: []quantstream.TensorInfo{bf(p+"w13", 2, 128, 64), bf(p+"w2", 2, 64, 64), bf("model.layers.0.self_attn.q_proj.weight", 64, 64)},
			qs:     table{"model.layers.0.self_attn.q_proj.weight_quantizer": fp8Q(true)},
			want:   []string{p + "w13", p + "w2", "no experts layout knows"},
		},
		{
			// A singular input quantizer is no proof of batched-matmul experts.
			name:   "3-D experts weight with an input quantizer only",
			config: `{"model_type": "gpt_oss"}`,
			inputs: []quantstream.TensorInfo{bf(p+"gate_up_proj", 2, 64, 128), bf(p+"down_proj", 2, 64, 64)},
			qs:     table{p + "gate_up_proj_input_quantizer": fp8Q(true), p + "down_proj_input_quantizer": fp8Q(true)},
			want:   []string{p + "gate_up_proj", p + "down_proj", "no quantizer for its weight"},
		},
		{
			name:   "3-D experts weight without quantizers",
			config: `{"model_type": "qwen3_moe"}`,
			inputs: []quantstream.TensorInfo{bf(p+"gate_up_proj", 2, 128, 64), bf(p+"down_proj", 2, 64, 64), bf("model.layers.0.self_attn.q_proj.weight", 64, 64)},
			qs:     table{"model.layers.0.self_attn.q_proj.weight_quantizer": fp8Q(true)},
			want:   []string{p + "gate_up_proj", p + "down_proj", "no quantizer"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewPlan(tc.inputs, []byte(tc.config), tc.qs, Options{})
			if !errors.Is(err, ErrStructure) {
				t.Fatalf("got %v, want ErrStructure", err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error does not say %q: %v", w, err)
				}
			}
			for _, w := range tc.not {
				if strings.Contains(err.Error(), w) {
					t.Errorf("error says %q: %v", w, err)
				}
			}
		})
	}
}

// TestNonGatedFusedExperts: transformers-5 fused experts without a gate (NemotronH:
// experts.up_proj [E, I, H], down_proj [E, H, I], one weight quantizer per expert and
// a singular input quantizer per projection) are fused experts, not batched-matmul
// ones; the same tensors under singular weight quantizers, or a batched-matmul
// projection without its partner, are refused, naming the container.
func TestNonGatedFusedExperts(t *testing.T) {
	bf := func(name string, shape ...int64) quantstream.TensorInfo {
		return quantstream.TensorInfo{Name: name, DType: quant.BF16, Shape: shape}
	}
	const p = "model.layers.0.mixer.experts."
	in := []quantstream.TensorInfo{bf(p+"up_proj", 2, 64, 128), bf(p+"down_proj", 2, 128, 64)}
	fused := table{p + "up_proj_input_quantizer": fp8Q(true), p + "down_proj_input_quantizer": fp8Q(true)}
	for e := range 2 {
		fused[p+"up_proj_weight_quantizers."+strconv.Itoa(e)] = fp8Q(true)
		fused[p+"down_proj_weight_quantizers."+strconv.Itoa(e)] = fp8Q(true)
	}
	plan, err := NewPlan(in, []byte(`{"model_type": "nemotron_h", "n_routed_experts": 2}`), fused, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if got := plan.Modules["fp8"]; len(got) != 4 || !slices.Contains(got, p+"1.up_proj") || !slices.Contains(got, p+"1.down_proj") {
		t.Fatalf("fp8 modules %q, want up_proj and down_proj of both experts", got)
	}

	bmm := table{p + "up_proj_weight_quantizer": fp8Q(true), p + "down_proj_weight_quantizer": fp8Q(true)}
	if _, err := NewPlan(in, []byte(`{"model_type": "nemotron_h"}`), bmm, Options{}); !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), "model.layers.0.mixer.experts") || !strings.Contains(err.Error(), "non-gated") {
		t.Fatalf("singular quantizers: got %v, want ErrUnsupported naming the experts", err)
	}
	const g = "model.layers.0.mlp.experts."
	lone := []quantstream.TensorInfo{bf(g+"gate_up_proj", 2, 64, 128)}
	if _, err := NewPlan(lone, []byte(`{"model_type": "gpt_oss"}`), table{g + "gate_up_proj_weight_quantizer": fp8Q(true)}, Options{}); !errors.Is(err, ErrShape) || !strings.Contains(err.Error(), "model.layers.0.mlp.experts") {
		t.Fatalf("lone projection: got %v, want ErrShape naming the experts", err)
	}
}

// TestPlanRefusesQuantizedConv: an enabled quantizer on a convolution weight (3-D) is
// a plan problem naming the module; a disabled one is listed as unquantized.
func TestPlanRefusesQuantizedConv(t *testing.T) {
	in := []quantstream.TensorInfo{{Name: "model.layers.0.mixer.conv1d.weight", DType: quant.BF16, Shape: []int64{64, 1, 4}}}
	_, err := NewPlan(in, []byte(`{"model_type": "llama"}`), table{"model.layers.0.mixer.conv1d.weight_quantizer": fp8Q(true)}, Options{})
	if !errors.Is(err, ErrStructure) || !strings.Contains(err.Error(), "model.layers.0.mixer.conv1d") || !strings.Contains(err.Error(), "3-D") {
		t.Fatalf("got %v, want ErrStructure naming the conv1d", err)
	}
	if _, err := NewPlan(in, []byte(`{"model_type": "llama"}`), table{"model.layers.0.mixer.conv1d.weight_quantizer": fp8Q(false)}, Options{}); err != nil {
		t.Fatalf("disabled: %v", err)
	}
}

// TestPlanRefusesUncoveredPrefix: decoder layers under a prefix the family's rules do
// not cover (their fusion rules and renames would match nothing) are a plan problem
// naming the prefix, a tensor and the fix.
func TestPlanRefusesUncoveredPrefix(t *testing.T) {
	sd, qs := tinyLlama(1)
	var in []quantstream.TensorInfo
	moved := table{}
	for _, h := range infosOf(sd) {
		h.Name = strings.Replace(h.Name, "model.layers.", "transformer.layers.", 1)
		in = append(in, h)
	}
	for n, q := range qs {
		moved[strings.Replace(n, "model.layers.", "transformer.layers.", 1)] = q
	}
	_, err := NewPlan(in, []byte(tinyLlamaConfig), moved, Options{})
	if !errors.Is(err, ErrStructure) {
		t.Fatalf("got %v, want ErrStructure", err)
	}
	for _, w := range []string{`"transformer."`, "transformer.layers.0.", "family llama", "layer_bases", "--arch"} {
		if !strings.Contains(err.Error(), w) {
			t.Errorf("error does not say %s: %v", w, err)
		}
	}
	if _, err := NewPlan(infosOf(sd), []byte(tinyLlamaConfig), qs, Options{}); err != nil {
		t.Fatalf("model. prefix: %v", err)
	}
}

// TestLinearWithoutQuantizersRefused: a linear weight of a decoder layer with no
// quantizer in the table (k_proj dropped from a calibration state), while the layer's
// other modules have them, is refused, naming it: it would pass through BF16, missing
// from exclude_modules, and q/v would fuse without it.
func TestLinearWithoutQuantizersRefused(t *testing.T) {
	sd, qs := tinyLlama(1)
	const k = "model.layers.0.self_attn.k_proj."
	n := 0
	for q := range qs {
		if strings.HasPrefix(q, k) {
			delete(qs, q)
			n++
		}
	}
	for t := range sd {
		if strings.HasPrefix(t, k) && strings.Contains(t, "_quantizer") {
			delete(sd, t)
		}
	}
	if n == 0 {
		t.Fatal("fixture has no k_proj quantizers")
	}
	_, err := NewPlan(infosOf(sd), []byte(tinyLlamaConfig), qs, Options{})
	if !errors.Is(err, ErrStructure) || !strings.Contains(err.Error(), k+"weight") || !strings.Contains(err.Error(), "no quantizer") {
		t.Fatalf("got %v, want ErrStructure naming %sweight", err, k)
	}
}

// TestPlanRefusesUnmatchedFusionMembers: modules named as a fusion group's members
// under a parent no fusion rule covers (self_attn renamed attention; experts under
// mlp.moe_experts.N) are refused, naming them, instead of exporting q/k/v (gate/up)
// with their own scales where ModelOpt fuses them.
func TestPlanRefusesUnmatchedFusionMembers(t *testing.T) {
	for _, tc := range []struct{ name, from, to, config, want string }{
		{"attention renamed", "self_attn.", "attention.", tinyLlamaConfig, "model.layers.0.attention.q_proj"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sd, qs := tinyLlama(1)
			in := infosOf(sd)
			for i := range in {
				in[i].Name = strings.Replace(in[i].Name, tc.from, tc.to, 1)
			}
			moved := table{}
			for n, q := range qs {
				moved[strings.Replace(n, tc.from, tc.to, 1)] = q
			}
			_, err := NewPlan(in, []byte(tc.config), moved, Options{})
			if !errors.Is(err, ErrStructure) || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "fusion rule") {
				t.Fatalf("got %v, want ErrStructure naming %s", err, tc.want)
			}
		})
	}
	sd, qs := moeFill()
	in := infosOf(sd)
	for i := range in {
		in[i].Name = strings.Replace(in[i].Name, ".mlp.experts.", ".mlp.moe_experts.", 1)
	}
	moved := table{}
	for n, q := range qs {
		moved[strings.Replace(n, ".mlp.experts.", ".mlp.moe_experts.", 1)] = q
	}
	_, err := NewPlan(in, []byte(qwenMoEConfig), moved, Options{})
	if !errors.Is(err, ErrStructure) || !strings.Contains(err.Error(), "model.layers.0.mlp.moe_experts.0.gate_proj") {
		t.Fatalf("moe_experts: got %v, want ErrStructure naming the gate/up projections", err)
	}
}
