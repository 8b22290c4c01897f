// Command custom-stage prepares a data-free conversion and inserts its own stages
// into it, around ModelOpt's export:
//
//	checkpoint ─► calibrate ─► weight-stats (ours) ─► export ─► keep-check (ours) ─► writer
//
// weight-stats reports, per layer, every weight's shape, amax and mean |w| beside
// the amax the calibration computed for it; keep-check guards the layers chosen to
// stay unquantized. Those layers are left out of quantization the way ModelOpt
// does it, by a recipe rule that disables their quantizers, so hf_quant_config.json
// lists them in exclude_modules. Everything else (side files, the output written
// atomically, the memory budget) is convert's, as for `quantstream convert`.
//
//	go run ./examples/custom-stage -in testdata/tiny_llama -out /tmp/out -keep 1
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"os/signal"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/quantstream/quantstream"
	"github.com/quantstream/quantstream/convert"
	"github.com/quantstream/quantstream/modelopt"
	"github.com/quantstream/quantstream/quant"
)

func main() {
	in := flag.String("in", "", "input checkpoint directory (safetensors + config.json)")
	out := flag.String("out", "", "output directory (must not exist or be empty)")
	recipe := flag.String("recipe", "W4A16_NVFP4_CFG", "weight-only ModelOpt preset or recipe file")
	keep := flag.String("keep", "1", "comma-separated decoder layer indices to leave unquantized (empty: none)")
	workers := flag.Int("workers", 0, "workers per stage (0: GOMAXPROCS); the output does not depend on it")
	flag.Parse()
	if *in == "" || *out == "" {
		fmt.Fprintln(os.Stderr, "usage: custom-stage -in DIR -out DIR [-recipe NAME] [-keep 1,2]")
		os.Exit(2)
	}
	keepSet, err := parseLayers(*keep)
	if err != nil {
		fmt.Fprintln(os.Stderr, "custom-stage: -keep:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := run(ctx, os.Stdout, *in, *out, *recipe, keepSet, *workers); err != nil {
		fmt.Fprintln(os.Stderr, "custom-stage:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, w io.Writer, in, out, recipe string, keep map[int]bool, workers int) error {
	// One rule per kept layer, after the recipe's: later rules win, as in ModelOpt's
	// quant_cfg["*layers.1.*"] = {"enable": False}.
	off := false
	var rules []modelopt.Rule
	for _, i := range sortedKeys(keep) {
		rules = append(rules, modelopt.Rule{QuantizerName: fmt.Sprintf("*layers.%d.*", i), Enable: &off})
	}
	j, err := convert.Prepare(ctx, convert.Options{Inputs: []string{in}, Out: out, Recipe: recipe, Rules: rules, Workers: workers})
	if err != nil {
		return err // modelopt.ErrNeedsCalibration for recipes with static activation scales
	}
	defer j.Close()

	// Our stages: one between the calibration and the export, one after the export.
	stats := &weightStats{byLayer: map[int][]string{}, prefix: map[int]string{}}
	if err := j.InsertBefore("export", stats); err != nil {
		return err
	}
	if err := j.InsertAfter("export", keepCheck{keep: keep}); err != nil {
		return err
	}
	sum, err := j.Run(ctx)
	if err != nil {
		return err
	}

	// Report, in layer order whatever order the workers finished in: the decoder
	// layers, then the tensors outside them (quantstream.NonDecoder, -1).
	layers := sortedKeys(stats.byLayer)
	if len(layers) > 0 && layers[0] == quantstream.NonDecoder {
		layers = append(layers[1:], quantstream.NonDecoder)
	}
	for _, i := range layers {
		lines := stats.byLayer[i]
		sort.Strings(lines) // a layer may come in several groups (the non-decoder tensors)
		fmt.Fprintf(w, "layer %d %q:\n", i, stats.prefix[i])
		for _, line := range lines {
			fmt.Fprintln(w, " ", line)
		}
	}
	for _, f := range sortedKeys(sum.ModulesPerFmt) {
		fmt.Fprintf(w, "%s: %d modules\n", f, sum.ModulesPerFmt[f])
	}
	fmt.Fprintf(w, "wrote %s: %d tensors; left unquantized: %s\n", out, sum.Tensors, strings.Join(sum.Unquantized, ", "))
	return nil
}

// weightStats is a pass-through stage that records, for every 2-D or 3-D weight of a
// layer, its amax and mean |w| and the amax the calibration stage added for it.
type weightStats struct {
	mu      sync.Mutex
	byLayer map[int][]string
	prefix  map[int]string
}

var _ quantstream.Stage = (*weightStats)(nil)

func (s *weightStats) Name() string { return "weight-stats" }

// Plan: the layer goes on unchanged.
func (s *weightStats) Plan(in quantstream.LayerInfo) ([]quantstream.TensorInfo, error) {
	return in.Tensors, nil
}

// Process reads the layer and hands it on; ownership passes through.
func (s *weightStats) Process(ctx context.Context, l *quantstream.Layer) (*quantstream.Layer, error) {
	var lines []string
	for _, t := range l.Tensors() {
		if err := ctx.Err(); err != nil {
			l.Release()
			return nil, err
		}
		if !strings.HasSuffix(t.Name, ".weight") || len(t.Shape) < 2 {
			continue
		}
		amax, mean, err := absStats(t.Tensor)
		if err != nil {
			l.Release()
			return nil, fmt.Errorf("%s: %w", t.Name, err)
		}
		line := fmt.Sprintf("%-28s %-11s amax %.6g  mean|w| %.6g", strings.TrimPrefix(t.Name, l.Prefix()), fmt.Sprint(t.Shape), amax, mean)
		module := strings.TrimSuffix(t.Name, ".weight")
		if a, ok := l.Lookup(module + ".weight_quantizer._amax"); ok {
			ca, err := quant.TensorAmax(a.Tensor)
			if err != nil {
				l.Release()
				return nil, fmt.Errorf("%s: %w", a.Name, err)
			}
			line += fmt.Sprintf("  calibrated amax %v max %.6g", a.Shape, ca)
		}
		lines = append(lines, line)
	}
	s.mu.Lock()
	s.byLayer[l.Index()] = append(s.byLayer[l.Index()], lines...)
	s.prefix[l.Index()] = l.Prefix()
	s.mu.Unlock()
	return l, nil
}

// absStats returns max |w| and mean |w|, summed in element order in float64, so the
// figures do not depend on scheduling.
func absStats(t quant.Tensor) (amax, mean float64, err error) {
	v, err := quant.Float32s(t)
	if err != nil {
		return 0, 0, err
	}
	var sum float64
	for _, x := range v {
		a := math.Abs(float64(x))
		sum += a
		amax = max(amax, a)
	}
	if len(v) > 0 {
		mean = sum / float64(len(v))
	}
	return amax, mean, nil
}

// keepCheck guards the layers chosen to stay unquantized: their exported headers
// must carry no scales and no quantized dtype. It checks in Plan, from headers
// alone, so a recipe that does not honour the choice fails before anything is read.
type keepCheck struct{ keep map[int]bool }

var _ quantstream.Stage = keepCheck{}

func (k keepCheck) Name() string { return "keep-check" }

func (k keepCheck) Plan(in quantstream.LayerInfo) ([]quantstream.TensorInfo, error) {
	if !k.keep[in.Index] {
		return in.Tensors, nil
	}
	for _, t := range in.Tensors {
		switch {
		case strings.HasSuffix(t.Name, "_scale") || strings.HasSuffix(t.Name, "_scale_2"):
			return nil, fmt.Errorf("layer kept unquantized has %s", t.Name)
		case t.DType != quant.BF16 && t.DType != quant.F16 && t.DType != quant.F32:
			return nil, fmt.Errorf("layer kept unquantized has %s as %s", t.Name, t.DType)
		}
	}
	return in.Tensors, nil
}

// Process hands the layer on; Plan has already checked it, and the pipeline checks
// every layer against the plan.
func (k keepCheck) Process(_ context.Context, l *quantstream.Layer) (*quantstream.Layer, error) {
	return l, nil
}

func parseLayers(s string) (map[int]bool, error) {
	set := map[int]bool{}
	for f := range strings.SplitSeq(s, ",") {
		if f = strings.TrimSpace(f); f == "" {
			continue
		}
		i, err := strconv.Atoi(f)
		if err != nil || i < 0 {
			return nil, errors.New("want decoder layer indices such as 1,2")
		}
		set[i] = true
	}
	return set, nil
}

func sortedKeys[K int | string, V any](m map[K]V) []K {
	out := make([]K, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}
