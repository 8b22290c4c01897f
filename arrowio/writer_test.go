package arrowio

import (
	"bytes"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	st "github.com/nlpodyssey/safetensors"

	"github.com/quantstream/quantstream"
	"github.com/quantstream/quantstream/quant"
)

func infosOf(hs []TensorHeader) []quantstream.TensorInfo {
	out := make([]quantstream.TensorInfo, len(hs))
	for i, h := range hs {
		out[i] = quantstream.TensorInfo{Name: h.Name, DType: h.DType, Shape: h.Shape}
	}
	return out
}

func sameFiles(t *testing.T, gotDir, wantDir string, names ...string) {
	t.Helper()
	for _, n := range names {
		got, err := os.ReadFile(filepath.Join(gotDir, n))
		if err != nil {
			t.Fatal(err)
		}
		want, err := os.ReadFile(filepath.Join(wantDir, n))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s differs from %s (%d vs %d bytes)", filepath.Join(gotDir, n), filepath.Join(wantDir, n), len(got), len(want))
		}
	}
}

// TestWriterReproducesGolden rewrites every single-file golden checkpoint that
// ModelOpt/transformers wrote, tensor by tensor, and expects identical bytes.
func TestWriterReproducesGolden(t *testing.T) {
	files, _ := filepath.Glob(filepath.Join("..", "testdata", "golden", "e2e", "*", "*", "model.safetensors"))
	if len(files) < 10 {
		t.Fatalf("only %d golden files", len(files))
	}
	for _, path := range files {
		t.Run(path, func(t *testing.T) {
			src, err := Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer src.Close()
			// Any input order gives the same file: reverse it to show that.
			hs := append([]TensorHeader(nil), src.Header.Tensors...)
			for i, j := 0, len(hs)-1; i < j; i, j = i+1, j-1 {
				hs[i], hs[j] = hs[j], hs[i]
			}
			out := filepath.Join(t.TempDir(), "out")
			w, err := Create(out, infosOf(hs), WriteOptions{})
			if err != nil {
				t.Fatal(err)
			}
			for _, h := range hs {
				if err := w.WriteTensorFrom(h.Name, src.Section(h)); err != nil {
					t.Fatal(err)
				}
			}
			if err := w.Commit(); err != nil {
				t.Fatal(err)
			}
			sameFiles(t, out, filepath.Dir(path), "model.safetensors")
		})
	}
}

// llamaStateDictOrder orders the tensors of a ModelOpt-quantized Llama as its
// state_dict does: per module its weight, then its quantizers' buffers.
func llamaStateDictOrder(names map[string]bool, layers int) []string {
	var out []string
	add := func(n string) {
		if names[n] {
			out = append(out, n)
			delete(names, n)
		}
	}
	add("model.embed_tokens.weight")
	for l := range layers {
		p := fmt.Sprintf("model.layers.%d.", l)
		for _, m := range []string{"self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"} {
			add(p + m + ".weight")
			add(p + m + ".input_quantizer._pre_quant_scale")
			add(p + m + ".input_quantizer._amax")
			add(p + m + ".weight_quantizer._amax")
		}
		add(p + "input_layernorm.weight")
		add(p + "post_attention_layernorm.weight")
	}
	add("model.norm.weight")
	add("lm_head.weight")
	return out
}

// TestWriterReproducesSavePretrainedShards: given the state-dict order and
// max_shard_size="1MB", the plan splits as save_pretrained did and every shard and
// the index come out byte-identical.
func TestWriterReproducesSavePretrainedShards(t *testing.T) {
	dir := filepath.Join("..", "testdata", "golden", "e2e", "int4_awq", "saved")
	ck, err := OpenCheckpoint(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer ck.Close()
	names := map[string]bool{}
	for _, r := range ck.Tensors() {
		names[r.Name] = true
	}
	order := llamaStateDictOrder(names, 2)
	if len(names) != 0 {
		t.Fatalf("tensors not placed in state-dict order: %v", names)
	}
	var infos []quantstream.TensorInfo
	for _, n := range order {
		r, _ := ck.Lookup(n)
		infos = append(infos, r.Info())
	}
	max, err := ParseSize("1MB")
	if err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "out")
	w, err := Create(out, infos, WriteOptions{PlanOptions: PlanOptions{
		MaxShardSize:  max,
		IndexMetadata: map[string]int64{"total_parameters": 1312000}, // parameters only; not derivable
	}})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range ck.Tensors() {
		if err := w.WriteTensorFrom(r.Name, r.File.Section(r.TensorHeader)); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
	sameFiles(t, out, dir, "model-00001-of-00003.safetensors", "model-00002-of-00003.safetensors",
		"model-00003-of-00003.safetensors", IndexName)
}

func TestPlanShards(t *testing.T) {
	ti := func(name string, n int64) quantstream.TensorInfo {
		return quantstream.TensorInfo{Name: name, DType: quant.U8, Shape: []int64{n}}
	}
	// huggingface_hub's documented example: limit 10, sizes [6,6,2,6,2,2] → [6],[6+2],[6+2+2].
	p, err := PlanShards([]quantstream.TensorInfo{ti("a", 6), ti("b", 6), ti("c", 2), ti("d", 6), ti("e", 2), ti("f", 2)}, PlanOptions{MaxShardSize: 10})
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, s := range p.Shards {
		var names []string
		for _, t := range s.Tensors {
			names = append(names, t.Name)
		}
		got = append(got, s.Name+":"+strings.Join(names, ","))
	}
	want := "model-00001-of-00003.safetensors:a model-00002-of-00003.safetensors:b,c model-00003-of-00003.safetensors:d,e,f"
	if strings.Join(got, " ") != want {
		t.Fatalf("got %v\nwant %v", got, want)
	}
	if p.Index == nil || p.Index.TotalSize() != 24 || p.Index.WeightMap["e"] != "model-00003-of-00003.safetensors" {
		t.Fatalf("index %+v", p.Index)
	}
	// An oversized tensor goes into a shard of its own, before the shard being filled.
	p, _ = PlanShards([]quantstream.TensorInfo{ti("a", 3), ti("big", 30), ti("b", 3)}, PlanOptions{MaxShardSize: 10})
	if len(p.Shards) != 2 || p.Shards[0].Tensors[0].Name != "big" || len(p.Shards[1].Tensors) != 2 {
		t.Fatalf("oversize plan: %+v", p.Shards)
	}
	// One shard: model.safetensors and no index; also with no tensors at all.
	for _, ts := range [][]quantstream.TensorInfo{{ti("a", 3)}, nil} {
		p, _ = PlanShards(ts, PlanOptions{})
		if len(p.Shards) != 1 || p.Shards[0].Name != "model.safetensors" || p.Index != nil {
			t.Fatalf("single-shard plan: %+v", p)
		}
	}
}

func TestPlanShardsErrors(t *testing.T) {
	cases := []struct {
		name   string
		in     []quantstream.TensorInfo
		tensor string
	}{
		{"duplicate", []quantstream.TensorInfo{{Name: "a", DType: quant.U8, Shape: []int64{1}}, {Name: "a", DType: quant.U8, Shape: []int64{1}}}, "a"},
		{"unknown dtype", []quantstream.TensorInfo{{Name: "w", DType: quant.Invalid, Shape: []int64{1}}}, "w"},
		{"negative dim", []quantstream.TensorInfo{{Name: "w", DType: quant.U8, Shape: []int64{-1}}}, "w"},
		{"half a byte", []quantstream.TensorInfo{{Name: "w", DType: quant.F4, Shape: []int64{3}}}, "w"},
		{"overflow", []quantstream.TensorInfo{{Name: "w", DType: quant.F64, Shape: []int64{1 << 40, 1 << 40}}}, "w"},
		{"no name", []quantstream.TensorInfo{{DType: quant.U8, Shape: []int64{1}}}, ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Create(filepath.Join(t.TempDir(), "out"), tc.in, WriteOptions{})
			if !errors.Is(err, ErrBadPlan) || !strings.Contains(err.Error(), `"`+tc.tensor+`"`) && tc.tensor != "" {
				t.Fatalf("err = %v, want ErrBadPlan naming %q", err, tc.tensor)
			}
		})
	}
}

func TestParseSize(t *testing.T) {
	cases := []struct {
		in   string
		want int64
	}{
		{"5GB", 5_000_000_000}, {"5gb", 5_000_000_000}, {"1MB", 1_000_000}, {"256MiB", 256 << 20},
		{"2GiB", 2 << 30}, {"10KB", 10_000}, {"10KiB", 10 << 10}, {"1TB", 1e12}, {"123", 123},
		{"123B", 123}, {" 7 MB ", 7_000_000},
	}
	for _, tc := range cases {
		if got, err := ParseSize(tc.in); err != nil || got != tc.want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", tc.in, got, err, tc.want)
		}
	}
	for _, bad := range []string{"", "GB", "-1GB", "0", "1.5GB", "5XB", "99999999999TB"} {
		if _, err := ParseSize(bad); err == nil {
			t.Errorf("ParseSize(%q) accepted", bad)
		}
	}
}

func twoTensors() []quantstream.TensorInfo {
	return []quantstream.TensorInfo{
		{Name: "a", DType: quant.F32, Shape: []int64{2}},
		{Name: "b", DType: quant.U8, Shape: []int64{3}},
	}
}

func TestWriterMisuse(t *testing.T) {
	out := filepath.Join(t.TempDir(), "out")
	w, err := Create(out, twoTensors(), WriteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	check := func(err error, want error, tensor string) {
		t.Helper()
		if !errors.Is(err, want) || !strings.Contains(err.Error(), `"`+tensor+`"`) {
			t.Fatalf("err = %v, want %v naming %q", err, want, tensor)
		}
	}
	check(w.WriteTensor("zz", []byte{1}), ErrWrite, "zz")
	check(w.WriteTensor("a", []byte{1, 2, 3}), ErrWrite, "a")
	if err := w.WriteTensor("a", make([]byte, 8)); err != nil {
		t.Fatal(err)
	}
	check(w.WriteTensor("a", make([]byte, 8)), ErrWrite, "a")
	check(w.WriteTensorFrom("b", strings.NewReader("x")), ErrWrite, "b") // short source
	tmp := w.TempDir()
	err = w.Commit()
	check(err, ErrWrite, "b")
	if !strings.Contains(err.Error(), "model.safetensors") {
		t.Errorf("err = %v does not name the file", err)
	}
	for _, p := range []string{out, tmp} {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s left behind after a failed commit", p)
		}
	}
	if err := w.WriteTensor("b", []byte{1, 2, 3}); !errors.Is(err, ErrClosed) {
		t.Fatalf("write after commit: %v", err)
	}
}

func TestWriterTargets(t *testing.T) {
	write := func(t *testing.T, w *Writer) {
		t.Helper()
		if err := w.WriteTensor("a", make([]byte, 8)); err != nil {
			t.Fatal(err)
		}
		if err := w.WriteTensor("b", []byte{1, 2, 3}); err != nil {
			t.Fatal(err)
		}
	}
	t.Run("refuses a non-empty directory", func(t *testing.T) {
		out := t.TempDir()
		os.WriteFile(filepath.Join(out, "keep"), []byte("x"), 0o644)
		if _, err := Create(out, twoTensors(), WriteOptions{}); !errors.Is(err, ErrExists) || !strings.Contains(err.Error(), out) {
			t.Fatalf("err = %v, want ErrExists naming %s", err, out)
		}
	})
	t.Run("refuses a file", func(t *testing.T) {
		out := filepath.Join(t.TempDir(), "f")
		os.WriteFile(out, []byte("x"), 0o644)
		_, err := Create(out, twoTensors(), WriteOptions{Overwrite: true})
		if !errors.Is(err, ErrNotDir) || errors.Is(err, ErrExists) || strings.Contains(err.Error(), "not empty") || !strings.Contains(err.Error(), out+" is a regular file") {
			t.Fatalf("err = %v, want one message: ErrNotDir, %s is a regular file", err, out)
		}
		if siblings, _ := os.ReadDir(filepath.Dir(out)); len(siblings) != 1 {
			t.Fatalf("left beside the file: %v", siblings)
		}
	})
	t.Run("unwritable parent", func(t *testing.T) {
		parent := filepath.Join(t.TempDir(), "file")
		os.WriteFile(parent, []byte("x"), 0o644)
		out := filepath.Join(parent, "out")
		if _, err := Create(out, twoTensors(), WriteOptions{}); err == nil || !strings.Contains(err.Error(), out) {
			t.Fatalf("err = %v, want an error naming %s", err, out)
		}
	})
	t.Run("fills an empty directory", func(t *testing.T) {
		out := t.TempDir()
		w, err := Create(out, twoTensors(), WriteOptions{})
		if err != nil {
			t.Fatal(err)
		}
		write(t, w)
		if err := w.Commit(); err != nil {
			t.Fatal(err)
		}
		if _, err := Open(filepath.Join(out, "model.safetensors")); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("overwrite swaps the whole directory", func(t *testing.T) {
		out := t.TempDir()
		os.WriteFile(filepath.Join(out, "stale.safetensors"), []byte("x"), 0o644)
		w, err := Create(out, twoTensors(), WriteOptions{Overwrite: true})
		if err != nil {
			t.Fatal(err)
		}
		write(t, w)
		if _, err := os.Stat(filepath.Join(out, "stale.safetensors")); err != nil {
			t.Fatal("old output touched before Commit")
		}
		if err := w.Commit(); err != nil {
			t.Fatal(err)
		}
		entries, _ := os.ReadDir(out)
		if len(entries) != 1 || entries[0].Name() != "model.safetensors" {
			t.Fatalf("output holds %v", entries)
		}
		siblings, _ := os.ReadDir(filepath.Dir(out))
		if len(siblings) != 1 {
			t.Fatalf("temporary directories left: %v", siblings)
		}
	})
	t.Run("abort removes everything", func(t *testing.T) {
		out := filepath.Join(t.TempDir(), "out")
		w, err := Create(out, twoTensors(), WriteOptions{})
		if err != nil {
			t.Fatal(err)
		}
		write(t, w)
		if err := w.Abort(); err != nil {
			t.Fatal(err)
		}
		siblings, _ := os.ReadDir(filepath.Dir(out))
		if len(siblings) != 0 {
			t.Fatalf("left behind: %v", siblings)
		}
	})
}

// allDTypes are every dtype with a shape that fills whole bytes.
var allDTypes = []struct {
	dt    quant.DType
	shape []int64
}{
	{quant.BOOL, []int64{3}}, {quant.U8, []int64{2, 3}}, {quant.I8, []int64{5}}, {quant.I16, []int64{2, 2}},
	{quant.U16, []int64{3}}, {quant.I32, []int64{1, 2}}, {quant.U32, []int64{2}}, {quant.I64, []int64{2}},
	{quant.U64, []int64{1}}, {quant.F16, []int64{3, 1}}, {quant.BF16, []int64{}}, {quant.F32, []int64{2, 0}},
	{quant.F64, []int64{2}}, {quant.F8E4M3, []int64{4, 4}}, {quant.F8E5M2, []int64{3}}, {quant.F8E8M0, []int64{2}},
	{quant.F4, []int64{2, 4}}, {quant.F6E2M3, []int64{8}}, {quant.F6E3M2, []int64{4}}, {quant.C64, []int64{2}},
}

// randomTensors returns one tensor per dtype with random bytes, keyed by name.
func randomTensors(seed uint64) ([]quantstream.TensorInfo, map[string][]byte) {
	rng := rand.New(rand.NewPCG(seed, 0))
	var infos []quantstream.TensorInfo
	data := map[string][]byte{}
	for i, c := range allDTypes {
		name := fmt.Sprintf("t%02d.%s", i, c.dt)
		n, _ := byteLen(c.dt, c.shape)
		b := make([]byte, n)
		for j := range b {
			b[j] = byte(rng.Uint32())
		}
		infos = append(infos, quantstream.TensorInfo{Name: name, DType: c.dt, Shape: c.shape})
		data[name] = b
	}
	return infos, data
}

// TestWriterIndependentReader writes shards concurrently, then reads them back
// with github.com/nlpodyssey/safetensors (for the dtypes it knows) and with ours.
func TestWriterIndependentReader(t *testing.T) {
	infos, data := randomTensors(7)
	out := filepath.Join(t.TempDir(), "out")
	w, err := Create(out, infos, WriteOptions{PlanOptions: PlanOptions{MaxShardSize: 40}})
	if err != nil {
		t.Fatal(err)
	}
	if len(w.Plan().Shards) < 2 {
		t.Fatalf("want several shards, got %d", len(w.Plan().Shards))
	}
	var wg sync.WaitGroup
	errs := make(chan error, len(infos))
	for _, ti := range infos {
		wg.Go(func() { errs <- w.WriteTensor(ti.Name, data[ti.Name]) })
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
	ix, err := ReadIndex(filepath.Join(out, IndexName))
	if err != nil {
		t.Fatal(err)
	}
	known := 0
	for _, ti := range infos {
		shard := filepath.Join(out, ix.WeightMap[ti.Name])
		raw, err := os.ReadFile(shard)
		if err != nil {
			t.Fatal(err)
		}
		f, err := Open(shard)
		if err != nil {
			t.Fatal(err)
		}
		ours, err := f.ReadTensor(ti.Name)
		f.Close()
		if err != nil || !bytes.Equal(ours.Data, data[ti.Name]) {
			t.Fatalf("%s: our reader: %v", ti.Name, err)
		}
		if _, err := st.ParseDType(ti.DType.String()); err != nil {
			continue // a dtype the independent reader does not know
		}
		// It rejects a whole file with a dtype it does not know, so only files whose
		// dtypes it knows are checked.
		sf, err := st.Deserialize(raw)
		if err != nil {
			continue
		}
		tv, ok := sf.Tensor(ti.Name)
		if !ok || tv.DType().String() != ti.DType.String() || !bytes.Equal(tv.Data(), data[ti.Name]) || len(tv.Shape()) != len(ti.Shape) {
			t.Fatalf("%s: independent reader disagrees", ti.Name)
		}
		known++
	}
	if known < 8 {
		t.Fatalf("independent reader checked only %d tensors", known)
	}
}
