package convert

import (
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/quantstream/quantstream/arrowio"
	"github.com/quantstream/quantstream/internal/testgen"
)

// Benchmark sizes come from the environment so that CI (make bench BENCHTIME=1x)
// stays quick while scripts/rss.sh and people measure big models:
// QUANTSTREAM_BENCH_SIZE is the synthetic checkpoint's size in bytes (default
// 512 MB), QUANTSTREAM_BENCH_MEMORY the --max-memory of each conversion (default
// 1 GiB). QUANTSTREAM_BENCH_DIR keeps the generated models in that directory and
// reuses them on the next run (for profiling without regenerating).
func benchEnv(b *testing.B, name string, def int64) int64 {
	b.Helper()
	s := os.Getenv(name)
	if s == "" {
		return def
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil || v <= 0 {
		b.Fatalf("%s=%q: want a byte count", name, s)
	}
	return v
}

// BenchmarkConvert converts one synthetic Llama and one synthetic Qwen3-MoE of the
// same size (generated once, page cache warm after the first iteration) in each
// mode; MB/s are of input bytes.
func BenchmarkConvert(b *testing.B) {
	size := benchEnv(b, "QUANTSTREAM_BENCH_SIZE", 512e6)
	maxMem := benchEnv(b, "QUANTSTREAM_BENCH_MEMORY", 1<<30)
	dir := os.Getenv("QUANTSTREAM_BENCH_DIR")
	if dir == "" {
		dir = b.TempDir()
	} else {
		dir = filepath.Join(dir, strconv.FormatInt(size, 10))
		if err := os.MkdirAll(dir, 0o755); err != nil {
			b.Fatal(err)
		}
	}
	model, moe, fp8 := filepath.Join(dir, "model"), filepath.Join(dir, "moe"), filepath.Join(dir, "deepseek-fp8")
	c, err := testgen.SyntheticLlama(size, 256<<20)
	if err != nil {
		b.Fatal(err)
	}
	calib := map[string]string{}
	for _, f := range testgen.CalibFormats {
		calib[f] = filepath.Join(dir, "calib-"+f)
		calib["moe-"+f] = filepath.Join(dir, "calib-moe-"+f)
	}
	if _, err := os.Stat(filepath.Join(dir, "done")); err != nil {
		if _, err := testgen.WriteSyntheticLlama(model, size, 256<<20, arrowio.WriteOptions{Overwrite: true}); err != nil {
			b.Fatal(err)
		}
		for _, f := range testgen.CalibFormats {
			if err := testgen.WriteSyntheticCalib(calib[f], c, f, true); err != nil {
				b.Fatal(err)
			}
		}
		mc, err := testgen.WriteSyntheticMoE(moe, size, 256<<20, arrowio.WriteOptions{Overwrite: true})
		if err != nil {
			b.Fatal(err)
		}
		for _, f := range testgen.CalibFormats {
			every := func(int, int) (float32, bool) { return 4, true }
			if err := testgen.WriteSyntheticMoECalib(calib["moe-"+f], mc, f, every, true); err != nil {
				b.Fatal(err)
			}
		}
		dc, err := testgen.SyntheticDeepSeekFP8(size)
		if err != nil {
			b.Fatal(err)
		}
		if err := testgen.WriteDeepSeekFP8(fp8, dc, arrowio.WriteOptions{Overwrite: true}); err != nil {
			b.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, "done"), nil, 0o644); err != nil {
			b.Fatal(err)
		}
	}
	for _, bc := range []struct {
		name string
		opt  Options
	}{
		{"passthrough", Options{Inputs: []string{model}}},
		{"nvfp4", Options{Inputs: []string{model, calib["nvfp4"]}}},
		{"fp8", Options{Inputs: []string{model, calib["fp8"]}}},
		{"datafree_w4a16_nvfp4", Options{Inputs: []string{model}, Recipe: "W4A16_NVFP4_CFG"}},
		{"datafree_int4", Options{Inputs: []string{model}, Recipe: "INT4_BLOCKWISE_WEIGHT_ONLY_CFG"}},
		{"datafree_mxfp4", Options{Inputs: []string{model}, Recipe: "MXFP4_DEFAULT_CFG"}},
		// A Qwen3-MoE of the same size, mostly experts.
		{"moe_nvfp4", Options{Inputs: []string{moe, calib["moe-nvfp4"]}}},
		{"moe_fp8", Options{Inputs: []string{moe, calib["moe-fp8"]}}},
		{"moe_datafree_w4a16_nvfp4", Options{Inputs: []string{moe}, Recipe: "W4A16_NVFP4_CFG"}},
		{"moe_datafree_mxfp4", Options{Inputs: []string{moe}, Recipe: "MXFP4_DEFAULT_CFG"}},
		{"moe_datafree_int8_wo", Options{Inputs: []string{moe}, Recipe: "INT8_WEIGHT_ONLY_CFG"}},
		// A DeepSeek-shaped block-FP8 source (MB/s of FP8 bytes): decoded to BF16
		// on read, then exported.
		{"fp8block_dequantize", Options{Inputs: []string{fp8}, Dequantize: true}},
		{"fp8block_datafree_w4a16_nvfp4", Options{Inputs: []string{fp8}, Recipe: "W4A16_NVFP4_CFG"}},
		{"fp8block_datafree_fp8_pc_pt", Options{Inputs: []string{fp8}, Recipe: "FP8_PER_CHANNEL_PER_TOKEN_CFG"}},
	} {
		in := inputBytes(b, bc.opt.Inputs[0])
		b.Run(bc.name, func(b *testing.B) {
			opt := bc.opt
			opt.Out = filepath.Join(dir, "out")
			opt.Overwrite = true
			opt.MaxMemory = maxMem
			b.SetBytes(in)
			for b.Loop() {
				if _, err := Run(b.Context(), opt); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// inputBytes is the tensor bytes of the checkpoint in dir.
func inputBytes(b *testing.B, dir string) int64 {
	b.Helper()
	ck, err := arrowio.OpenCheckpoint(dir)
	if err != nil {
		b.Fatal(err)
	}
	defer ck.Close()
	var in int64
	for _, t := range ck.Tensors() {
		in += t.Size()
	}
	return in
}
