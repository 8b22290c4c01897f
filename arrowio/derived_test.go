package arrowio_test

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/quantstream/quantstream"
	"github.com/quantstream/quantstream/arrowio"
	"github.com/quantstream/quantstream/quant"
)

// TestDerive: a derived view hides stored tensors, shows computed ones under any
// name (here: the embedding doubled, read back through its source, and one norm
// under a second name), groups them into layers like stored ones, and reads them
// through Fill, which sees its sources in From order.
func TestDerive(t *testing.T) {
	base, err := arrowio.OpenCheckpoint(filepath.Join("..", "testdata", "tiny_llama"))
	if err != nil {
		t.Fatal(err)
	}
	emb, _ := base.Lookup("model.embed_tokens.weight")
	norm, _ := base.Lookup("model.layers.0.input_layernorm.weight")
	double := func(ctx context.Context, dst []byte, from []arrowio.TensorRef) error {
		half := make([]byte, from[0].Size())
		if err := from[0].File.ReadInto(from[0].TensorHeader, half); err != nil {
			return err
		}
		copy(dst, half)
		copy(dst[len(half):], half)
		return nil
	}
	alias := func(ctx context.Context, dst []byte, from []arrowio.TensorRef) error {
		_, err := from[0].Section().ReadAt(dst, 0)
		return err
	}
	v, err := base.Derive([]arrowio.Derived{
		{TensorInfo: quantstream.TensorInfo{Name: "model.embed_tokens.weight", DType: emb.DType, Shape: []int64{2 * emb.Shape[0], emb.Shape[1]}},
			From: []string{"model.embed_tokens.weight"}, Fill: double},
		{TensorInfo: quantstream.TensorInfo{Name: "model.layers.0.copy.weight", DType: norm.DType, Shape: norm.Shape},
			From: []string{norm.Name}, Fill: alias},
	}, []string{"model.embed_tokens.weight", "model.layers.1.mlp.up_proj.weight"})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	if err := base.Close(); err != nil {
		t.Fatal(err) // a no-op: the view owns the files
	}
	if _, ok := v.Lookup("model.layers.1.mlp.up_proj.weight"); ok {
		t.Error("hidden tensor still listed")
	}
	got, ok := v.Lookup("model.embed_tokens.weight")
	if !ok || !got.IsDerived() || got.Shape[0] != 2*emb.Shape[0] || got.Size() != 2*emb.Size() {
		t.Fatalf("derived embedding: %+v", got)
	}
	if f, ok := v.ShardOf("model.layers.0.copy.weight"); !ok || f != filepath.Base(norm.File.Path) {
		t.Errorf("ShardOf: %q %v, want the file of its source", f, ok)
	}
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	found := 0
	for _, li := range v.Layers() {
		l, err := v.ReadLayer(t.Context(), mem, li)
		if err != nil {
			t.Fatal(err)
		}
		for _, tn := range l.Tensors() {
			switch tn.Name {
			case "model.embed_tokens.weight":
				want, _ := emb.File.ReadTensor(emb.Name)
				if !bytes.Equal(tn.Data, append(append([]byte(nil), want.Data...), want.Data...)) {
					t.Error("derived embedding bytes differ")
				}
				found++
			case "model.layers.0.copy.weight":
				want, _ := norm.File.ReadTensor(norm.Name)
				if li.Index != 0 || !bytes.Equal(tn.Data, want.Data) {
					t.Errorf("alias in layer %d, bytes equal %v", li.Index, bytes.Equal(tn.Data, want.Data))
				}
				found++
			}
		}
		l.Release()
	}
	if found != 2 {
		t.Errorf("found %d derived tensors", found)
	}
}

func TestDeriveErrors(t *testing.T) {
	fill := func(context.Context, []byte, []arrowio.TensorRef) error { return errors.New("boom") }
	w := quantstream.TensorInfo{Name: "x.weight", DType: quant.BF16, Shape: []int64{2}}
	for _, tc := range []struct {
		name    string
		derived []arrowio.Derived
		hide    []string
		want    string
	}{
		{"unknown source", []arrowio.Derived{{TensorInfo: w, From: []string{"nope"}, Fill: fill}}, nil, "nope"},
		{"unknown hidden", nil, []string{"nope"}, "nope"},
		{"no fill", []arrowio.Derived{{TensorInfo: w, From: []string{"lm_head.weight"}}}, nil, "no sources or no Fill"},
		{"shadows a stored tensor", []arrowio.Derived{{TensorInfo: quantstream.TensorInfo{Name: "lm_head.weight", DType: quant.BF16, Shape: []int64{1}}, From: []string{"lm_head.weight"}, Fill: fill}}, nil, "not hidden"},
		{"bad dtype", []arrowio.Derived{{TensorInfo: quantstream.TensorInfo{Name: "y", Shape: []int64{1}}, From: []string{"lm_head.weight"}, Fill: fill}}, nil, "unknown dtype"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			base := openCheckpoint(t, filepath.Join("..", "testdata", "tiny_llama"))
			if _, err := base.Derive(tc.derived, tc.hide); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
	// A failing Fill names the tensor and leaves nothing allocated.
	base, _ := arrowio.OpenCheckpoint(filepath.Join("..", "testdata", "tiny_llama"))
	v, err := base.Derive([]arrowio.Derived{{TensorInfo: w, From: []string{"lm_head.weight"}, Fill: fill}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	_, err = v.ReadLayer(t.Context(), mem, quantstream.LayerInfo{Index: -1, Tensors: []quantstream.TensorInfo{w}})
	if err == nil || !strings.Contains(err.Error(), `"x.weight"`) || !strings.Contains(err.Error(), "boom") {
		t.Errorf("fill error: %v", err)
	}
}

// TestPlanShardsShardOf keeps a given layout: each tensor in the shard named for
// it, shards by name, an index when there are several.
func TestPlanShardsShardOf(t *testing.T) {
	ts := []quantstream.TensorInfo{
		{Name: "b", DType: quant.BF16, Shape: []int64{4}},
		{Name: "a", DType: quant.F32, Shape: []int64{2}},
		{Name: "c", DType: quant.BF16, Shape: []int64{1}},
	}
	of := map[string]string{"a": "model-00002-of-00002.safetensors", "b": "model-00001-of-00002.safetensors", "c": "model-00002-of-00002.safetensors"}
	p, err := arrowio.PlanShards(ts, arrowio.PlanOptions{ShardOf: func(n string) string { return of[n] }, MaxShardSize: 1})
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Shards) != 2 || p.Shards[0].Name != of["b"] || len(p.Shards[1].Tensors) != 2 || p.Index == nil ||
		p.Index.WeightMap["a"] != of["a"] || p.Index.Metadata["total_size"] != 8+8+2 {
		t.Fatalf("plan %+v index %+v", p.Shards, p.Index)
	}
	one, err := arrowio.PlanShards(ts, arrowio.PlanOptions{ShardOf: func(string) string { return "model.safetensors" }})
	if err != nil || len(one.Shards) != 1 || one.Index != nil {
		t.Fatalf("one shard: %v %+v", err, one)
	}
	if _, err := arrowio.PlanShards(ts, arrowio.PlanOptions{ShardOf: func(string) string { return "../x.safetensors" }}); !errors.Is(err, arrowio.ErrBadPlan) {
		t.Errorf("bad shard name: %v", err)
	}
}
