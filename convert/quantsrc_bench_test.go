//go:build unix

package convert

import (
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/quantstream/quantstream/arrowio"
	"github.com/quantstream/quantstream/internal/rss"
	"github.com/quantstream/quantstream/internal/testgen"
	"github.com/quantstream/quantstream/quant"
)

// BenchmarkFP8BlockSource converts a block-FP8 checkpoint of DeepSeek-V3's own
// layer shape (hidden 7168, routed experts of 2048 plus the shared one, MLA with
// partial edge blocks; cmd/gentestdata -deepseek-fp8-experts) with a small
// vocabulary, so that nearly all of it is FP8 weights, in the modes a block-FP8
// source is converted in. MB/s are of FP8 source bytes (codes and scales); the
// extra metrics are the CPU seconds (user + system) per GB of FP8 and the
// process's peak RSS (a high-water mark: the largest of the modes run so far).
//
// QUANTSTREAM_BENCH_EXPERTS sets the routed experts per layer (default 4: 0.4 GB of
// FP8 a layer), QUANTSTREAM_BENCH_LAYERS the layers (default 4, so that the later
// layers reuse the buffers of the first, as in a real model);
// QUANTSTREAM_BENCH_MEMORY the --max-memory (default 2 GiB); QUANTSTREAM_BENCH_DIR
// keeps the generated source for the next run.
func BenchmarkFP8BlockSource(b *testing.B) {
	experts := benchEnv(b, "QUANTSTREAM_BENCH_EXPERTS", 4)
	layers := benchEnv(b, "QUANTSTREAM_BENCH_LAYERS", 4)
	maxMem := benchEnv(b, "QUANTSTREAM_BENCH_MEMORY", 2<<30)
	dir := os.Getenv("QUANTSTREAM_BENCH_DIR")
	if dir == "" {
		dir = b.TempDir()
	}
	src := filepath.Join(dir, "deepseek-v3-fp8-"+strconv.FormatInt(layers, 10)+"x"+strconv.FormatInt(experts, 10))
	c := testgen.DeepSeekV3Shape(int(layers), int(experts))
	c.Vocab = 512
	if _, err := os.Stat(filepath.Join(src, "config.json")); err != nil {
		if err := testgen.WriteDeepSeekFP8(src, c, arrowio.WriteOptions{Overwrite: true}); err != nil {
			b.Fatal(err)
		}
	}
	ck, err := arrowio.OpenCheckpoint(src)
	if err != nil {
		b.Fatal(err)
	}
	var fp8 int64
	for _, t := range ck.Tensors() {
		if t.DType == quant.F8E4M3 || filepath.Ext(t.Name) == ".weight_scale_inv" {
			fp8 += t.Size()
		}
	}
	ck.Close()
	for _, bc := range []struct {
		name string
		opt  Options
	}{
		{"w4a16_nvfp4", Options{Recipe: "W4A16_NVFP4_CFG"}},
		{"mxfp8", Options{Recipe: "MXFP8_DEFAULT_CFG"}},
		{"fp8_pc_pt", Options{Recipe: "FP8_PER_CHANNEL_PER_TOKEN_CFG"}},
		{"dequantize", Options{Dequantize: true}},
	} {
		b.Run(bc.name, func(b *testing.B) {
			opt := bc.opt
			opt.Inputs = []string{src}
			opt.Out = filepath.Join(dir, "out-"+bc.name)
			opt.Overwrite = true
			opt.MaxMemory = maxMem
			b.SetBytes(fp8)
			cpu0 := cpuSeconds()
			start := time.Now()
			for b.Loop() {
				if _, err := Run(b.Context(), opt); err != nil {
					b.Fatal(err)
				}
			}
			wall := time.Since(start).Seconds()
			gb := float64(fp8) * float64(b.N) / 1e9
			b.ReportMetric((cpuSeconds()-cpu0)/gb, "cpu-s/GB")
			b.ReportMetric(gb/wall, "GB/s")
			b.ReportMetric(float64(rss.Peak())/(1<<20), "peak-RSS-MiB")
			_ = os.RemoveAll(opt.Out)
		})
	}
}

// cpuSeconds is the user and system CPU time of the process so far.
func cpuSeconds() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}
