package convert

import (
	"encoding/binary"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/quantstream/quantstream/arrowio"
	"github.com/quantstream/quantstream/internal/parallel"
	"github.com/quantstream/quantstream/internal/testgen"
	"github.com/quantstream/quantstream/pipeline"
	"github.com/quantstream/quantstream/quant"
)

// codedDeepSeek is DeepSeek-V3's layout with partial edge blocks in both
// directions: hidden 448 (3.5 column blocks), experts of 144, MLA ranks of 160
// and 96 (kv_a_proj_with_mqa 112 rows).
var codedDeepSeek = testgen.DeepSeekConfig{Layers: 2, Hidden: 448, Heads: 2, QLoRA: 160, KVLoRA: 96, Nope: 32, Rope: 16, V: 32,
	Experts: 3, MoEIntermediate: 144, Vocab: 64}

// patchTensor rewrites the stored bytes of tensor name in the checkpoint at dir.
func patchTensor(t *testing.T, dir, name string, f func([]byte)) {
	t.Helper()
	ck, err := arrowio.OpenCheckpoint(dir)
	if err != nil {
		t.Fatal(err)
	}
	ref, ok := ck.Lookup(name)
	if !ok {
		t.Fatalf("no %s", name)
	}
	b := make([]byte, ref.Size())
	if err := ref.File.ReadInto(ref.TensorHeader, b); err != nil {
		t.Fatal(err)
	}
	path, off := ref.File.Path, ref.File.Header.DataOff+ref.Begin
	ck.Close()
	f(b)
	fh, err := os.OpenFile(path, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	if _, err := fh.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

// runFP8 converts opt with the coded route on or off and returns the output
// directory and how many weights went coded.
func runFP8(t *testing.T, opt Options, fused bool, workers int) (string, int, error) {
	t.Helper()
	defer func(f bool) { fuseFP8 = f }(fuseFP8)
	fuseFP8 = fused
	mem := memory.NewCheckedAllocator(pipeline.NewPoolAllocator())
	opt.Out, opt.Workers, opt.Allocator, opt.MaxShardSize = filepath.Join(t.TempDir(), "out"), workers, mem, 300_000
	j, err := Prepare(t.Context(), opt)
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	_, err = j.Run(t.Context())
	mem.AssertSize(t, 0)
	coded := 0
	for _, st := range j.chain {
		if cs, ok := st.(*calibrateStage); ok {
			coded = len(cs.fp8)
		}
	}
	return opt.Out, coded, err
}

// TestFP8CodedRoute: a block-FP8 source exported to NVFP4 with its weights handed
// on coded (codes and scales, the fused amax and kernel) gives the bytes of the
// route that decodes them to BF16 first, at 1 and 4 workers (small pieces), over
// partial edge blocks, routed and shared experts, MLA shapes, a zero block scale
// and an all-zero block; every FP8 linear goes coded. A NaN code is refused by
// both routes in the same words; a recipe with no NVFP4 weights codes nothing.
func TestFP8CodedRoute(t *testing.T) {
	src := filepath.Join(t.TempDir(), "src")
	if err := testgen.WriteDeepSeekFP8(src, codedDeepSeek, arrowio.WriteOptions{PlanOptions: arrowio.PlanOptions{MaxShardSize: 1e6}}); err != nil {
		t.Fatal(err)
	}
	patchTensor(t, src, "model.layers.0.mlp.experts.1.down_proj.weight_scale_inv", func(b []byte) {
		binary.LittleEndian.PutUint32(b[4:], 0) // block [0][1]
	})
	patchTensor(t, src, "model.layers.1.self_attn.kv_a_proj_with_mqa.weight", func(b []byte) {
		for r := range codedDeepSeek.KVLoRA + codedDeepSeek.Rope { // block [0][0] (112 rows) all ±0
			for c := range 128 {
				b[r*codedDeepSeek.Hidden+c] &= 0x80
			}
		}
	})
	fp8Linears := codedDeepSeek.Layers * (5 + 3*(codedDeepSeek.Experts+1))
	for _, tc := range []struct {
		recipe string
		coded  int
	}{
		{"W4A16_NVFP4_CFG", fp8Linears},
		{"FP8_PER_CHANNEL_PER_TOKEN_CFG", 0},
	} {
		t.Run(tc.recipe, func(t *testing.T) {
			opt := Options{Inputs: []string{src}, Recipe: tc.recipe}
			ref, n, err := runFP8(t, opt, false, 1)
			if err != nil || n != 0 {
				t.Fatalf("decoded route: %v, %d coded", err, n)
			}
			for _, workers := range []int{1, 4} {
				if workers > 1 {
					defer func(n int) { parallel.ChunkBytes = n }(parallel.ChunkBytes)
					parallel.ChunkBytes = 5000
				}
				out, n, err := runFP8(t, opt, true, workers)
				if err != nil {
					t.Fatal(err)
				}
				if n != tc.coded {
					t.Fatalf("%d weights coded, want %d", n, tc.coded)
				}
				assertSameDir(t, ref, out)
			}
		})
	}
	t.Run("nan", func(t *testing.T) {
		bad := filepath.Join(t.TempDir(), "bad")
		if err := os.CopyFS(bad, os.DirFS(src)); err != nil {
			t.Fatal(err)
		}
		patchTensor(t, bad, "model.layers.1.mlp.experts.2.up_proj.weight", func(b []byte) { b[100*codedDeepSeek.Hidden+77] = 0xFF })
		opt := Options{Inputs: []string{bad}, Recipe: "W4A16_NVFP4_CFG"}
		// The first line: how many shards were complete when it stopped is not the point.
		first := func(err error) string {
			if err == nil {
				return "no error"
			}
			return strings.SplitN(err.Error(), "\n", 2)[0]
		}
		_, _, werr := runFP8(t, opt, false, 1)
		_, _, gerr := runFP8(t, opt, true, 1)
		want, got := first(werr), first(gerr)
		if !strings.Contains(want, "element [100][77] is an E4M3 NaN (0xFF)") || got != want {
			t.Fatalf("coded route: %v\ndecoded route: %v", got, want)
		}
	})
}

// TestFP8CodedAmax: the per-tensor amax of a block-FP8 weight from its codes
// (largest magnitude code of each block under its scale, rounded to BF16) is the
// amax of the weight decoded to BF16: bf16(f32(q)·s) is monotone in |q| for s ≥ 0,
// so each block's largest |W| is its largest code's, the maximum over blocks
// commutes with the monotone rounding, and zero scales, signed zeros, products
// below the BF16 normals and products that round to infinity agree. A NaN code is
// refused by both, naming the element.
func TestFP8CodedAmax(t *testing.T) {
	for _, tc := range []struct {
		rows, cols, bi, bj int
		scale              func(k int) float32
		code               func(i int) byte
	}{
		{300, 448, 128, 128, func(k int) float32 { return float32(math.Ldexp(1+float64(k%5)/7, -9-k%6)) }, func(i int) byte { return byte(i*37) &^ 0x01 }},
		{130, 160, 128, 128, func(k int) float32 { return []float32{0, 1e-3}[k%2] }, func(i int) byte { return byte(i * 13) }},
		{64, 256, 32, 64, func(k int) float32 { return 0 }, func(i int) byte { return 0x7E }},
		{40, 128, 16, 32, func(k int) float32 { return float32(math.Ldexp(1, -130-k%10)) }, func(i int) byte { return byte(i) }},
		{40, 128, 16, 32, func(k int) float32 { return float32(math.Ldexp(1, 120+k%8)) }, func(i int) byte { return byte(i * 7) }},
		{17, 96, 16, 32, func(k int) float32 { return 1 }, func(i int) byte { return []byte{0, 0x80}[i%2] }},
	} {
		b := quant.FP8Block{Rows: tc.rows, Cols: tc.cols, BlockRows: tc.bi, BlockCols: tc.bj}
		ss := b.ScaleShape()
		for k := range ss[0] * ss[1] {
			b.Scale = append(b.Scale, tc.scale(k))
		}
		q := make([]byte, tc.rows*tc.cols)
		for i := range q {
			if q[i] = tc.code(i); q[i]&0x7F == 0x7F {
				q[i] = 0x7E
			}
		}
		w := quant.Tensor{DType: quant.BF16, Shape: []int64{int64(tc.rows), int64(tc.cols)}, Data: make([]byte, 2*len(q))}
		if err := b.DequantRows(w.Data, q, 0, tc.rows); err != nil {
			t.Fatal(err)
		}
		want := quant.MaxMagnitude16(w.Data)
		got, err := b.AmaxBF16(q, 0, tc.rows)
		if err != nil || uint32(got) != want {
			t.Errorf("%d×%d in %d×%d: amax from codes 0x%04X (%v), decoded 0x%04X", tc.rows, tc.cols, tc.bi, tc.bj, got, err, want)
		}
		// Through the calibration stage's coded route, by pieces.
		slot := make([]byte, 2*len(q))
		copy(slot, q)
		if err := b.PutCodedScales(slot[len(q) : len(q)+4*len(b.Scale)]); err != nil {
			t.Fatal(err)
		}
		defer func(n int) { parallel.ChunkBytes = n }(parallel.ChunkBytes)
		parallel.ChunkBytes = 3 * 2 * tc.cols
		f, err := fp8Amax(quant.FP8Block{Rows: b.Rows, Cols: b.Cols, BlockRows: b.BlockRows, BlockCols: b.BlockCols}, quant.Tensor{DType: quant.BF16, Shape: w.Shape, Data: slot}, "w")
		if err != nil {
			t.Fatal(err)
		}
		if err := parallel.Run(t.Context(), f.tasks); err != nil {
			t.Fatal(err)
		}
		var m uint32
		for _, p := range f.parts {
			m = max(m, p)
		}
		if m != want {
			t.Errorf("%d×%d: calibration's coded amax 0x%04X, decoded 0x%04X", tc.rows, tc.cols, m, want)
		}
		q[len(q)/2+3] = 0xFF
		_, derr := b.AmaxBF16(q, 0, tc.rows)
		werr := b.DequantRows(w.Data, q, 0, tc.rows)
		if derr == nil || werr == nil || derr.Error() != werr.Error() {
			t.Errorf("NaN code: amax from codes %v, decode %v", derr, werr)
		}
	}
}
