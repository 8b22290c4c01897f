package stages

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/quantstream/quantstream/quant"
)

// TestFusedMembersApart: DenseSplit takes NVFP4 fusion groups (q/k/v, gate/up) apart
// when asked, naming the buffers they share; a member exported alone is refused until
// SetFusedAmax has the group's maxima (never exported with its own weight_scale_2 and
// input_scale), and then every member, each in a group of its own, exports the bytes
// of the whole layer. Asked to keep them, DenseSplit keeps them together.
func TestFusedMembersApart(t *testing.T) {
	sd, qs := tinyLlama(1)
	// Different maxima in each member, so that its own would show.
	for _, n := range []string{"mlp.up_proj.weight_quantizer._amax", "mlp.gate_proj.input_quantizer._amax", "self_attn.k_proj.input_quantizer._amax"} {
		v, _ := quant.Float32s(sd["model.layers.0."+n])
		sd["model.layers.0."+n] = bf16Tensor([]int64{}, []float32{v[0] * 3})
	}
	plan, err := NewPlan(infosOf(sd), []byte(tinyLlamaConfig), qs, Options{})
	if err != nil {
		t.Fatal(err)
	}
	whole := processLayer(t, plan, sd, 0)

	units, shared, err := plan.DenseSplit(0, func(FusionGroup) bool { return false })
	if err != nil || len(shared) > 0 || !together(units, "mlp.gate_proj.weight", "mlp.up_proj.weight") {
		t.Fatalf("kept together: shared %q, units %q, %v", shared, units, err)
	}
	var asked []FusionGroup
	units, shared, err = plan.DenseSplit(0, func(g FusionGroup) bool { asked = append(asked, g); return true })
	if err != nil {
		t.Fatal(err)
	}
	if len(asked) != 2 || asked[0].Bytes == 0 || !slices.Equal(asked[1].Members, []string{"model.layers.0.mlp.gate_proj", "model.layers.0.mlp.up_proj"}) {
		t.Fatalf("asked about %+v, want q/k/v and gate/up", asked)
	}
	// (q/k/v stay in one unit all the same: the KV cache's k_bmm/v_bmm amax, tensors
	// of no module, go with every module of self_attn.)
	if together(units, "mlp.gate_proj.weight", "mlp.up_proj.weight") || together(units, "mlp.gate_proj.weight", "post_attention_layernorm.weight") {
		t.Fatalf("fusion members not apart: %q", units)
	}
	// NVFP4: input amax and per-tensor weight amax of the 5 fused modules.
	if len(shared) != 10 || !slices.Contains(shared, "model.layers.0.mlp.up_proj.weight_quantizer._amax") {
		t.Fatalf("shared %q", shared)
	}
	gate := func(n string) bool { return strings.Contains(n, ".mlp.gate_proj.") }
	if _, err := processGroup(t, plan, sd, gate); !errors.Is(err, ErrPlanMismatch) || !strings.Contains(err.Error(), "without the group's maxima") {
		t.Fatalf("member processed apart without the group maxima: %v", err)
	}
	amax := map[string]quant.Tensor{}
	for _, n := range shared {
		amax[n] = sd[n]
	}
	if err := plan.SetFusedAmax(0, amax); err != nil {
		t.Fatal(err)
	}
	got := map[string]quant.Tensor{}
	for _, u := range units {
		out, err := processGroup(t, plan, sd, func(n string) bool { return slices.Contains(u, n) })
		if err != nil {
			t.Fatal(err)
		}
		for n, v := range out {
			got[n] = v
		}
	}
	if len(got) != len(whole) {
		t.Fatalf("groups produce %d tensors, the whole layer %d", len(got), len(whole))
	}
	for n, w := range whole {
		if g, ok := got[n]; !ok || g.DType != w.DType || !slices.Equal(g.Shape, w.Shape) || !slices.Equal(g.Data, w.Data) {
			t.Errorf("%s differs between the groups and the whole layer", n)
		}
	}
}

// together reports whether tensors a and b of layer 0 are in the same unit.
func together(units [][]string, a, b string) bool {
	for _, u := range units {
		if slices.Contains(u, "model.layers.0."+a) {
			return slices.Contains(u, "model.layers.0."+b)
		}
	}
	return false
}
