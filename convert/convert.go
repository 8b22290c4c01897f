// Package convert is quantstream's main job as a library call: open a checkpoint
// (several directories overlaid), plan the conversion from headers alone, stream the
// layers through the export stages and write a sharded checkpoint atomically.
// The quantstream CLI is a thin layer over Run and Plan.
package convert

import (
	"context"
	"errors"
	"time"

	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/quantstream/quantstream"
	"github.com/quantstream/quantstream/arrowio"
	"github.com/quantstream/quantstream/pipeline"
	"github.com/quantstream/quantstream/quant"
	"github.com/quantstream/quantstream/stages"
)

// ErrNoInput is returned when Options names no input directory.
var ErrNoInput = errors.New("convert: no input directory")

// Options describe one conversion.
type Options struct {
	// Inputs are overlaid in order: a tensor or side file in a later directory
	// replaces the one of the same name in an earlier one.
	Inputs []string
	// Out is the output directory. It is written atomically: nothing appears there
	// unless the whole conversion succeeds.
	Out string
	// Overwrite allows replacing a non-empty Out.
	Overwrite bool

	// Workers per stage (0: GOMAXPROCS). The output bytes do not depend on it.
	// With 0, two layers are in flight at a time (the export stages spread each
	// layer over every core); a positive Workers keeps the pipeline's default of
	// Workers × (stages + 1) layers in flight, within MaxMemory.
	Workers int
	// MaxMemory bounds tensor bytes in flight (0: no bound).
	MaxMemory int64
	// MaxShardSize splits the output shards (0: 5 GB, like save_pretrained).
	MaxShardSize int64

	// Recipe is a ModelOpt preset name or recipe YAML path for data-free
	// conversion; empty means: use the calibration state found in Inputs, or
	// pass through when there is none.
	Recipe string
	// KVCache is a KV-cache preset combined with Recipe (e.g. FP8_KV_CFG).
	KVCache string
	// DivMode reproduces exports made on CPU (DivIEEE, default) or CUDA (DivCUDA).
	DivMode quant.DivMode

	// Stages run after the export stages, e.g. a user's own checks.
	Stages []quantstream.Stage

	// Allocator for layer buffers (nil: Go allocator).
	Allocator memory.Allocator
	// Progress is called after each layer is written.
	Progress func(pipeline.Progress)
}

// Summary is what a finished conversion reports.
type Summary struct {
	Mode          string         `json:"mode"` // passthrough, export, data-free
	Layers        int            `json:"layers"`
	Tensors       int            `json:"tensors_out"`
	BytesIn       int64          `json:"bytes_in"`
	BytesOut      int64          `json:"bytes_out"`
	Shards        int            `json:"shards"`
	Seconds       float64        `json:"seconds"`
	GBPerSecond   float64        `json:"gb_per_second"`
	PeakRSSBytes  int64          `json:"peak_rss_bytes"`
	MaxChargeB    int64          `json:"max_layer_charge_bytes"`
	ModulesPerFmt map[string]int `json:"modules_per_format,omitempty"`
	Unquantized   []string       `json:"unquantized,omitempty"`
	FilledAmax    []string       `json:"filled_expert_amax,omitempty"`
	QuantAlgo     string         `json:"quant_algo,omitempty"`
	Warnings      []string       `json:"warnings,omitempty"`
}

// job is a prepared conversion: the stages to run and the extra files to write.
type job struct {
	mode      string
	stages    []quantstream.Stage
	sideFiles map[string][]byte // generated files (config.json, hf_quant_config.json)
	skipFiles []string          // input side files that do not belong in the output
	summary   Summary
	plan      *stages.Plan // the export's plan; nil for a passthrough
}

// Run converts opt.Inputs into opt.Out.
func Run(ctx context.Context, opt Options) (*Summary, error) {
	start := time.Now()
	if len(opt.Inputs) == 0 {
		return nil, ErrNoInput
	}
	if err := checkOutputApart(opt.Inputs, opt.Out); err != nil {
		return nil, err
	}
	mem := opt.Allocator
	if mem == nil {
		pool := NewPoolAllocator()
		// The budget bounds the bytes in use; keeping idle buffers only within it
		// makes the pool's footprint, hence resident memory, follow the budget too.
		pool.SetLimit(opt.MaxMemory)
		defer pool.Trim()
		mem = pool
	}
	ck, err := arrowio.OpenCheckpoint(opt.Inputs...)
	if err != nil {
		return nil, err
	}
	defer ck.Close()
	j, err := prepare(ck, opt, mem)
	if err != nil {
		return nil, err
	}
	src := newGrouping(ck).splitForBudget(len(j.stages)+len(opt.Stages), opt.MaxMemory).
		splitExperts(j.plan, len(opt.Stages), opt.MaxMemory)
	p := &pipeline.Pipeline{
		Source:    ck.Source(mem, src.layers),
		Stages:    append(j.stages, opt.Stages...),
		Workers:   opt.Workers,
		MaxMemory: opt.MaxMemory,
		Progress:  opt.Progress,
	}
	p.MaxLayers = maxLayers(opt)
	plan, err := p.Plan()
	if err != nil {
		return nil, src.explain(err)
	}
	if err := src.readExpertFill(ctx, ck, mem, j.plan); err != nil {
		return nil, err
	}
	out, err := src.outputTensors(plan, p.Stages)
	if err != nil {
		return nil, err
	}
	w, err := arrowio.Create(opt.Out, out, arrowio.WriteOptions{
		PlanOptions: arrowio.PlanOptions{MaxShardSize: opt.MaxShardSize},
		Overwrite:   opt.Overwrite,
	})
	if err != nil {
		return nil, err
	}
	committed := false
	defer func() {
		if !committed {
			w.Abort()
		}
	}()
	p.Sink = w
	if err := p.Run(ctx); err != nil {
		return nil, err
	}
	side := ck.SideFiles()
	for name := range j.sideFiles {
		delete(side, name)
	}
	for _, name := range j.skipFiles {
		delete(side, name)
	}
	if err := w.CopySideFiles(side); err != nil {
		return nil, err
	}
	for name, data := range j.sideFiles {
		if err := w.WriteSideFile(name, data); err != nil {
			return nil, err
		}
	}
	if err := w.Commit(); err != nil {
		return nil, err
	}
	committed = true

	s := j.summary
	s.Mode = j.mode
	s.Layers = len(plan.Layers) - src.extraGroups()
	s.Tensors = len(out)
	s.BytesIn = plan.TotalBytes
	for _, t := range out {
		s.BytesOut += infoBytes(t)
	}
	s.Shards = len(w.Plan().Shards)
	s.Seconds = time.Since(start).Seconds()
	if s.Seconds > 0 {
		s.GBPerSecond = float64(s.BytesIn) / 1e9 / s.Seconds
	}
	s.PeakRSSBytes = PeakRSS()
	s.MaxChargeB = plan.MaxCharge
	return &s, nil
}

// defaultLayersInFlight is how many layers a conversion holds at once unless
// Options.Workers asks for more: one being read while the stages work on another
// (the export stages spread a layer over every core) or the sink writes it. More
// layers in flight do not add parallelism, only memory, and fresh memory is not
// free: measured on 2 cores with --max-memory 2GiB, two layers in flight convert a
// 4.7 GB model at 1.25 GB/s with 1.4 GiB peak RSS, the pipeline's default of six
// at 0.75 GB/s with 1.95 GiB, the difference being page faults.
const defaultLayersInFlight = 2

// maxLayers is the pipeline's MaxLayers for opt (0: the pipeline's default,
// Workers × (stages + 1)).
func maxLayers(opt Options) int {
	if opt.Workers > 0 {
		return 0
	}
	return defaultLayersInFlight
}

func infoBytes(t quantstream.TensorInfo) int64 {
	n, _ := t.DataBytes() // planned, hence valid
	return n
}
