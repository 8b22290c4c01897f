package arrowio_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/quantstream/quantstream"
	"github.com/quantstream/quantstream/arrowio"
	"github.com/quantstream/quantstream/internal/testgen"
	"github.com/quantstream/quantstream/quant"
)

var golden = filepath.Join("..", "testdata", "golden", "e2e")

func openCheckpoint(t *testing.T, dirs ...string) *arrowio.Checkpoint {
	t.Helper()
	c, err := arrowio.OpenCheckpoint(dirs...)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// readAllLayers reads every layer with a checked allocator and checks each tensor
// against a direct read from its file.
func readAllLayers(t *testing.T, c *arrowio.Checkpoint) {
	t.Helper()
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	total := 0
	for _, li := range c.Layers() {
		l, err := c.ReadLayer(t.Context(), mem, li)
		if err != nil {
			t.Fatal(err)
		}
		if n, _ := li.DataBytes(); l.Index() != li.Index || l.Prefix() != li.Prefix || l.Len() != len(li.Tensors) || l.DataBytes() != n {
			t.Fatalf("layer %d: got index %d prefix %q len %d", li.Index, l.Index(), l.Prefix(), l.Len())
		}
		for i, info := range li.Tensors {
			ref, ok := c.Lookup(info.Name)
			if !ok {
				t.Fatalf("layer %d lists %q, which the checkpoint lacks", li.Index, info.Name)
			}
			got := l.Tensor(i)
			want, err := ref.File.ReadTensor(ref.Name)
			if err != nil {
				t.Fatal(err)
			}
			if got.Name != ref.Name || got.DType != want.DType || !bytes.Equal(got.Data, want.Data) {
				t.Fatalf("layer %d tensor %q differs from its file", li.Index, ref.Name)
			}
		}
		total += l.Len()
		l.Release()
	}
	if total != len(c.Tensors()) {
		t.Fatalf("layers hold %d tensors, checkpoint %d", total, len(c.Tensors()))
	}
}

func TestCheckpointOverlay(t *testing.T) {
	base := filepath.Join(golden, "base_llama")
	input := filepath.Join(golden, "fp8", "input")
	c := openCheckpoint(t, base, input)
	b := openCheckpoint(t, base)
	q := openCheckpoint(t, input)
	if got, want := len(c.Tensors()), len(b.Tensors())+len(q.Tensors()); got != want {
		t.Fatalf("%d tensors, want %d", got, want)
	}
	ref, ok := c.Lookup("model.layers.0.mlp.down_proj.input_quantizer._amax")
	if !ok || filepath.Base(ref.File.Path) != "quant_state.safetensors" {
		t.Fatalf("amax from %+v", ref)
	}
	layers := c.Layers()
	if len(layers) != 3 || layers[0].Index != 0 || layers[1].Index != 1 || layers[2].Index != quantstream.NonDecoder {
		t.Fatalf("layers %v", layers)
	}
	if layers[1].Prefix != "model.layers.1." || layers[2].Prefix != "" {
		t.Fatalf("prefixes %q %q", layers[1].Prefix, layers[2].Prefix)
	}
	for _, r := range layers[0].Tensors {
		if !strings.HasPrefix(r.Name, "model.layers.0.") {
			t.Fatalf("%q in layer 0", r.Name)
		}
	}
	if side := c.SideFiles(); side["config.json"] != filepath.Join(input, "config.json") || side["quant_recipe.json"] == "" {
		t.Fatalf("side files %v", side)
	}
	readAllLayers(t, c)

	// A tensor in a later directory replaces the earlier one.
	over := t.TempDir()
	w, err := arrowio.Create(over, []quantstream.TensorInfo{{Name: "model.norm.weight", DType: quant.F32, Shape: []int64{1}}}, arrowio.WriteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	w.WriteTensor("model.norm.weight", []byte{1, 2, 3, 4})
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
	c2 := openCheckpoint(t, base, over)
	if r, _ := c2.Lookup("model.norm.weight"); r.DType.String() != "F32" || len(c2.Tensors()) != len(b.Tensors()) {
		t.Fatalf("override: %+v", r)
	}
}

// TestCheckpointShardedIndex: a layer spread over several shards is grouped and read.
func TestCheckpointShardedIndex(t *testing.T) {
	c := openCheckpoint(t, filepath.Join(golden, "int4_awq", "saved"))
	files := map[string]bool{}
	for _, info := range c.Layers()[0].Tensors {
		r, _ := c.Lookup(info.Name)
		files[r.File.Path] = true
	}
	if len(files) < 2 {
		t.Fatalf("layer 0 in %d files; the test wants it split", len(files))
	}
	readAllLayers(t, c)
	readAllLayers(t, openCheckpoint(t, filepath.Join("..", "testdata", "tiny_llama")))
}

func TestCheckpointManyExperts(t *testing.T) {
	cfg := testgen.MoEConfig{
		LlamaConfig: testgen.LlamaConfig{Layers: 2, Hidden: 16, Intermediate: 32, Heads: 2, KVHeads: 1, Vocab: 32},
		Experts:     300, MoEIntermediate: 8, TopK: 2,
	}
	dir := filepath.Join(t.TempDir(), "moe")
	err := testgen.WriteCheckpoint(dir, testgen.MoETensors(cfg), 3,
		arrowio.WriteOptions{PlanOptions: arrowio.PlanOptions{MaxShardSize: 50_000}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	c := openCheckpoint(t, dir)
	layers := c.Layers()
	if len(layers) != 3 {
		t.Fatalf("%d layers", len(layers))
	}
	// 6 attention tensors, router, 3 per expert, 2 norms.
	if n := len(layers[1].Tensors); n != 6+1+3*cfg.Experts+2 {
		t.Fatalf("layer 1 has %d tensors", n)
	}
	readAllLayers(t, c)
}

func TestCheckpointTinyMoE(t *testing.T) {
	c := openCheckpoint(t, filepath.Join("..", "testdata", "tiny_moe"))
	if _, ok := c.Lookup("model.layers.1.mlp.experts.7.down_proj.weight"); !ok {
		t.Fatal("no expert 7")
	}
	if _, ok := c.Lookup("model.layers.0.mlp.gate.weight"); !ok {
		t.Fatal("no router")
	}
	readAllLayers(t, c)
}

func TestCheckpointErrors(t *testing.T) {
	tiny := filepath.Join("..", "testdata", "tiny_llama")
	copyDir := func(t *testing.T) string {
		t.Helper()
		dst := t.TempDir()
		entries, _ := os.ReadDir(tiny)
		for _, e := range entries {
			b, err := os.ReadFile(filepath.Join(tiny, e.Name()))
			if err != nil {
				t.Fatal(err)
			}
			os.WriteFile(filepath.Join(dst, e.Name()), b, 0o644)
		}
		return dst
	}
	cases := []struct {
		name  string
		setup func(t *testing.T, dir string)
		want  error
		names []string // each must appear in the message
	}{
		{"index names a missing shard", func(t *testing.T, dir string) {
			os.Remove(filepath.Join(dir, "model-00002-of-00002.safetensors"))
		}, arrowio.ErrBadIndex, []string{"model-00002-of-00002.safetensors", arrowio.IndexName}},
		{"index names a tensor absent from its shard", func(t *testing.T, dir string) {
			p := filepath.Join(dir, arrowio.IndexName)
			b, _ := os.ReadFile(p)
			b = bytes.Replace(b, []byte(`"lm_head.weight"`), []byte(`"lm_head.bias"`), 1)
			os.WriteFile(p, b, 0o644)
		}, arrowio.ErrBadIndex, []string{`"lm_head.bias"`, "model-00002-of-00002.safetensors"}},
		{"index maps a tensor to the wrong shard", func(t *testing.T, dir string) {
			p := filepath.Join(dir, arrowio.IndexName)
			b, _ := os.ReadFile(p)
			b = bytes.Replace(b, []byte(`"lm_head.weight": "model-00002`), []byte(`"lm_head.weight": "model-00001`), 1)
			os.WriteFile(p, b, 0o644)
		}, arrowio.ErrBadIndex, []string{`"lm_head.weight"`, "model-00001-of-00002.safetensors"}},
		{"corrupt shard", func(t *testing.T, dir string) {
			os.Truncate(filepath.Join(dir, "model-00001-of-00002.safetensors"), 1000)
		}, arrowio.ErrCorrupt, []string{"model-00001-of-00002.safetensors"}},
		{"duplicate tensor across files", func(t *testing.T, dir string) {
			os.Remove(filepath.Join(dir, arrowio.IndexName))
			b, _ := os.ReadFile(filepath.Join(dir, "model-00001-of-00002.safetensors"))
			os.WriteFile(filepath.Join(dir, "copy.safetensors"), b, 0o644)
		}, arrowio.ErrCorrupt, []string{"copy.safetensors", "model-00001-of-00002.safetensors", `"model.embed_tokens.weight"`}},
		{"no tensors", func(t *testing.T, dir string) {
			for _, n := range []string{arrowio.IndexName, "model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"} {
				os.Remove(filepath.Join(dir, n))
			}
		}, arrowio.ErrNotFound, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := copyDir(t)
			tc.setup(t, dir)
			_, err := arrowio.OpenCheckpoint(dir)
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			for _, n := range tc.names {
				if !strings.Contains(err.Error(), n) {
					t.Errorf("err = %v does not name %s", err, n)
				}
			}
		})
	}
	if _, err := arrowio.OpenCheckpoint(filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Fatal("missing directory accepted")
	}
}

// TestReadLayerAnyGroup: ReadLayer reads any group of the checkpoint's tensors, in
// the group's order, and refuses a tensor the checkpoint lacks or a header that
// differs from the checkpoint's, allocating nothing.
func TestReadLayerAnyGroup(t *testing.T) {
	c := openCheckpoint(t, filepath.Join("..", "testdata", "tiny_llama"))
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	l0, l1 := c.Layers()[0], c.Layers()[1]
	g := quantstream.LayerInfo{Index: 7, Prefix: "x.", Tensors: []quantstream.TensorInfo{l1.Tensors[2], l0.Tensors[0]}}
	l, err := c.ReadLayer(t.Context(), mem, g)
	if err != nil {
		t.Fatal(err)
	}
	if l.Index() != 7 || l.Prefix() != "x." || l.Len() != 2 {
		t.Fatalf("index %d prefix %q len %d", l.Index(), l.Prefix(), l.Len())
	}
	for i, info := range g.Tensors {
		ref, _ := c.Lookup(info.Name)
		want, err := ref.File.ReadTensor(info.Name)
		if err != nil {
			t.Fatal(err)
		}
		if got := l.Tensor(i); got.Name != info.Name || !bytes.Equal(got.Data, want.Data) {
			t.Errorf("row %d is %s, want %s with its file's bytes", i, got.Name, info.Name)
		}
	}
	l.Release()

	missing := g
	missing.Tensors = []quantstream.TensorInfo{{Name: "no.such.weight", DType: quant.BF16, Shape: []int64{1}}}
	if _, err := c.ReadLayer(t.Context(), mem, missing); !errors.Is(err, arrowio.ErrNotFound) || !strings.Contains(err.Error(), "no.such.weight") {
		t.Errorf("missing tensor: %v", err)
	}
	wrong := l0
	wrong.Tensors = []quantstream.TensorInfo{l0.Tensors[0]}
	wrong.Tensors[0].DType = quant.F32
	if _, err := c.ReadLayer(t.Context(), mem, wrong); err == nil || !strings.Contains(err.Error(), l0.Tensors[0].Name) {
		t.Errorf("wrong dtype: %v", err)
	}
}

// TestSourceReadsEveryLayer: Checkpoint.Source yields c.Layers() in order (or the
// groups it is given), then io.EOF.
func TestSourceReadsEveryLayer(t *testing.T) {
	c := openCheckpoint(t, filepath.Join("..", "testdata", "tiny_llama"))
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	for _, layers := range [][]quantstream.LayerInfo{nil, c.Layers()[1:2]} {
		src := c.Source(mem, layers)
		want := layers
		if want == nil {
			want = c.Layers()
		}
		if len(src.Layers()) != len(want) {
			t.Fatalf("Layers: %d, want %d", len(src.Layers()), len(want))
		}
		for _, li := range want {
			l, err := src.Next(t.Context())
			if err != nil {
				t.Fatal(err)
			}
			if l.Index() != li.Index || l.Len() != len(li.Tensors) {
				t.Errorf("layer %d: got index %d with %d tensors", li.Index, l.Index(), l.Len())
			}
			l.Release()
		}
		if _, err := src.Next(t.Context()); err != io.EOF {
			t.Fatalf("after the last layer: %v, want io.EOF", err)
		}
	}
}

func TestReadLayerCancelled(t *testing.T) {
	c := openCheckpoint(t, filepath.Join("..", "testdata", "tiny_llama"))
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := c.ReadLayer(ctx, mem, c.Layers()[0]); !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v", err)
	}
}

// TestTestdataUpToDate regenerates the committed tiny checkpoints and expects the
// same bytes (run `go run ./cmd/gentestdata -out testdata` after changing the generator).
func TestTestdataUpToDate(t *testing.T) {
	tmp := t.TempDir()
	if err := testgen.WriteTinyLlama(filepath.Join(tmp, "tiny_llama"), false); err != nil {
		t.Fatal(err)
	}
	if err := testgen.WriteTinyMoE(filepath.Join(tmp, "tiny_moe"), false); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"tiny_llama", "tiny_moe"} {
		entries, err := os.ReadDir(filepath.Join(tmp, d))
		if err != nil {
			t.Fatal(err)
		}
		committed, _ := os.ReadDir(filepath.Join("..", "testdata", d))
		if len(entries) != len(committed) {
			t.Fatalf("%s: %d files generated, %d committed", d, len(entries), len(committed))
		}
		for _, e := range entries {
			got, _ := os.ReadFile(filepath.Join(tmp, d, e.Name()))
			want, err := os.ReadFile(filepath.Join("..", "testdata", d, e.Name()))
			if err != nil || !bytes.Equal(got, want) {
				t.Errorf("testdata/%s/%s is stale (%v); run go run ./cmd/gentestdata -out testdata", d, e.Name(), err)
			}
		}
	}
}

func TestCopySideFiles(t *testing.T) {
	c := openCheckpoint(t, filepath.Join("..", "testdata", "tiny_llama"))
	out := filepath.Join(t.TempDir(), "out")
	infos := c.Layers()[0].Tensors
	w, err := arrowio.Create(out, infos, arrowio.WriteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, info := range c.Layers()[0].Tensors {
		r, _ := c.Lookup(info.Name)
		if err := w.WriteTensorFrom(r.Name, r.File.Section(r.TensorHeader)); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.CopySideFiles(c.SideFiles()); err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
	for name, src := range c.SideFiles() {
		got, _ := os.ReadFile(filepath.Join(out, name))
		want, _ := os.ReadFile(src)
		if !bytes.Equal(got, want) {
			t.Errorf("%s not copied", name)
		}
	}
	if len(c.SideFiles()) != 3 {
		t.Errorf("side files %v", c.SideFiles())
	}
}

// TestReadLayersConcurrently reads every layer from several goroutines at once
// (run with -race).
func TestReadLayersConcurrently(t *testing.T) {
	c := openCheckpoint(t, filepath.Join("..", "testdata", "tiny_moe"))
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	errs := make(chan error, 4*len(c.Layers()))
	var wg sync.WaitGroup
	for range 4 {
		for _, li := range c.Layers() {
			wg.Go(func() {
				l, err := c.ReadLayer(t.Context(), mem, li)
				if err == nil {
					l.Release()
				}
				errs <- err
			})
		}
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
}

// TestCheckpointGroupsLargeNonDecoderPerModule: embeddings larger than a decoder
// layer split the non-decoder tensors per top-level module, keeping a tied lm_head
// with the embeddings.
func TestCheckpointGroupsLargeNonDecoderPerModule(t *testing.T) {
	cfg := testgen.LlamaConfig{Layers: 2, Hidden: 32, Intermediate: 64, Heads: 2, KVHeads: 1, Vocab: 1024}
	for _, tc := range []struct {
		name   string
		config string
		groups [][]string // non-decoder groups, in order
	}{
		{"untied", `{"tie_word_embeddings": false}`, [][]string{{"lm_head.weight"}, {"model.embed_tokens.weight"}, {"model.norm.weight"}}},
		{"tied", `{"tie_word_embeddings": true}`, [][]string{{"lm_head.weight", "model.embed_tokens.weight"}, {"model.norm.weight"}}},
		{"unknown", `{}`, [][]string{{"lm_head.weight", "model.embed_tokens.weight"}, {"model.norm.weight"}}},
		{"untied in text_config", `{"text_config": {"tie_word_embeddings": false}}`, [][]string{{"lm_head.weight"}, {"model.embed_tokens.weight"}, {"model.norm.weight"}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "m")
			err := testgen.WriteCheckpoint(dir, testgen.LlamaTensors(cfg), 1, arrowio.WriteOptions{},
				map[string][]byte{"config.json": []byte(tc.config)})
			if err != nil {
				t.Fatal(err)
			}
			c := openCheckpoint(t, dir)
			layers := c.Layers()
			var got [][]string
			for _, li := range layers[cfg.Layers:] {
				if li.Index != quantstream.NonDecoder || li.Prefix != "" {
					t.Fatalf("group %d %q after the decoder", li.Index, li.Prefix)
				}
				var names []string
				for _, r := range li.Tensors {
					names = append(names, r.Name)
				}
				got = append(got, names)
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.groups) {
				t.Fatalf("non-decoder groups %v, want %v", got, tc.groups)
			}
			readAllLayers(t, c)
		})
	}
}
