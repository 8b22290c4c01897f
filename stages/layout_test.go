package stages

import (
	"errors"
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
		want         []string
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
			want: []string{p + "gate_up_proj", "fused_3d", "family gpt_oss", "[bmm]"},
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
		})
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
