package stages

import (
	"errors"
	"slices"
	"testing"

	quantstream "github.com/quantstream/quantstream"
	"github.com/quantstream/quantstream/arch"
	"github.com/quantstream/quantstream/quant"
)

func mixtralArch(t *testing.T) *Arch {
	t.Helper()
	c, _ := ParseModelConfig([]byte(`{"architectures": ["MixtralForCausalLM"], "model_type": "mixtral"}`))
	a, err := DetectArch(c)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestMixtralHubNames(t *testing.T) {
	a := mixtralArch(t)
	for mem, hub := range map[string]string{
		"model.layers.0.mlp.experts.3.gate_proj.weight":          "model.layers.0.block_sparse_moe.experts.3.w1.weight",
		"model.layers.0.mlp.experts.3.up_proj.weight_scale_2":    "model.layers.0.block_sparse_moe.experts.3.w3.weight_scale_2",
		"model.layers.1.mlp.experts.12.down_proj.input_scale":    "model.layers.1.block_sparse_moe.experts.12.w2.input_scale",
		"model.layers.0.mlp.gate.weight":                         "model.layers.0.block_sparse_moe.gate.weight",
		"model.layers.0.self_attn.q_proj.weight":                 "model.layers.0.self_attn.q_proj.weight",
		"model.layers.0.block_sparse_moe.experts.3.w1.weight":    "model.layers.0.block_sparse_moe.experts.3.w1.weight", // hub names stay
		"model.layers.0.block_sparse_moe.gate.weight":            "model.layers.0.block_sparse_moe.gate.weight",
		"model.layers.0.mlp.experts.gate_up_proj_weight_scale_2": "model.layers.0.block_sparse_moe.experts.gate_up_proj_weight_scale_2",
	} {
		if got := a.HubName(mem); got != hub {
			t.Errorf("HubName(%s) = %s, want %s", mem, got, hub)
		}
	}
	for mem, hub := range map[string]string{
		"model.layers.0.mlp.gate":         "model.layers.0.block_sparse_moe.gate",
		"model.layers.0.mlp.gate*":        "model.layers.0.block_sparse_moe.gate*",
		"model.layers.*":                  "model.layers.*",
		"model.layers.0.mlp.experts.1.w*": "model.layers.0.block_sparse_moe.experts.1.w*",
		"lm_head":                         "lm_head",
	} {
		got, err := a.HubModule(mem)
		if err != nil || got != hub {
			t.Errorf("HubModule(%s) = %s, %v, want %s", mem, got, err, hub)
		}
	}
}

// A rule that matches across the end of a module name (ModelOpt's nemotron_h defect,
// an unanchored "." eating the sentinel) is refused, not written.
func TestRenameEatsSentinel(t *testing.T) {
	a, err := arch.Parse("x.json", []byte(`{"name": "x", "model_types": ["x"], "renames": [{"pattern": "embed.", "replace": "embedding"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.HubModule("lm_head"); err != nil {
		t.Fatalf("lm_head: %v", err)
	}
	if got, err := a.HubModule("model.embed"); err == nil {
		t.Fatalf("model.embed mapped to %q, want an error", got)
	} else if !errors.Is(err, arch.ErrFamily) {
		t.Fatalf("error %v, want arch.ErrFamily", err)
	}
	if _, err := arch.Parse("x.json", []byte(`{"name": "x", "model_types": ["x"], "renames": [{"pattern": "(", "replace": ""}]}`)); !errors.Is(err, arch.ErrFamily) {
		t.Fatalf("bad pattern: %v, want arch.ErrFamily", err)
	}
}

func TestRenameOutputs(t *testing.T) {
	a := mixtralArch(t)
	ts := &tensorSet{hdr: map[string]quantstream.TensorInfo{}, data: map[string]quant.Tensor{}}
	ts.set("model.layers.0.mlp.gate.weight", bf16Tensor([]int64{2}, []float32{1, 2}))
	ts.set("model.layers.0.mlp.experts.0.gate_proj.weight_scale", bf16Tensor([]int64{1}, []float32{3}))
	job := &rowJob{outs: []string{"model.layers.0.mlp.experts.0.gate_proj.weight"}, outBytes: []int64{4}}
	ts.setLater(job.outs[0], quant.U8, []int64{4}, job, 0)
	if err := renameOutputs(ts, a); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, h := range infos(ts) {
		names = append(names, h.Name)
	}
	want := []string{"model.layers.0.block_sparse_moe.experts.0.w1.weight", "model.layers.0.block_sparse_moe.experts.0.w1.weight_scale", "model.layers.0.block_sparse_moe.gate.weight"}
	if !slices.Equal(names, want) {
		t.Fatalf("names %v, want %v", names, want)
	}
	if job.outs[0] != want[0] || ts.later[want[0]].job != job {
		t.Fatalf("the row job writes %q", job.outs[0])
	}
	if _, err := ts.get(want[2]); err != nil {
		t.Fatal(err)
	}
	// A hub-named tensor beside the in-memory one of the same module: a collision.
	ts.set("model.layers.0.mlp.gate.weight", bf16Tensor([]int64{2}, []float32{1, 2}))
	if err := renameOutputs(ts, a); !errors.Is(err, ErrPlanMismatch) {
		t.Fatalf("collision: %v, want ErrPlanMismatch", err)
	}
}
