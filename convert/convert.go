// Package convert is quantstream's main job as a library call: open a checkpoint
// (several directories overlaid), decide and plan the conversion from headers alone,
// stream the layers through the export stages and write a sharded checkpoint
// atomically.
//
// Prepare returns the conversion as a Job, whose stage chain can be edited
// (InsertBefore, InsertAfter, Append) before it is planned (Job.Plan) or run
// (Job.Run). Run and MakePlan are Prepare followed by one of those, and the
// quantstream CLI is a thin layer over them; every caller gets the same guards
// (the output apart from the inputs, generated side files, calibration artifacts
// left out, layers cut to fit the memory budget, tensors no stage changes copied
// from file to file without being held: direct.go).
//
// A run is resumable and can be split: it writes through arrowio's work
// directory (<Out>.partial) under the conversion's fingerprint (the provenance:
// what decides the output bytes), so a rerun after a crash keeps the complete
// shards, and Options.Share converts one share of the shards for arrowio.Merge to
// publish; see Job.Run.
package convert

import (
	"context"
	"errors"

	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/quantstream/quantstream"
	"github.com/quantstream/quantstream/arrowio"
	"github.com/quantstream/quantstream/modelopt"
	"github.com/quantstream/quantstream/pipeline"
	"github.com/quantstream/quantstream/quant"
)

var (
	// ErrNoInput is returned when Options names no input directory.
	ErrNoInput = errors.New("convert: no input directory")
	// ErrNoOutput is returned by Job.Run when Options names no output directory.
	ErrNoOutput = errors.New("convert: no output directory")
	// ErrJobDone is returned by a Job that has already run or been closed.
	ErrJobDone = errors.New("convert: job already run or closed")
)

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
	// Rules are appended to Recipe's rules (and KVCache's); later rules win, as
	// entries added to a ModelOpt quant_cfg after the preset's do. For example
	// {QuantizerName: "*layers.1.*", Enable: &off} leaves decoder layer 1
	// unquantized (and listed in exclude_modules). Only with Recipe.
	Rules []modelopt.Rule
	// DivMode reproduces exports made on CPU (DivIEEE, default) or CUDA (DivCUDA).
	DivMode quant.DivMode
	// Arch lists family files (convert --arch; format in docs/arch-rules.md) read
	// before planning: each adds a model family, or replaces the built-in one of the
	// model types it names. A malformed file is refused, naming file and key.
	Arch []string
	// Engine, when set ("vllm", "sglang", "trtllm": verify.Engines), refuses the
	// conversion before any data is read if that engine's ModelOpt loader would not
	// load the output (ErrEngine).
	Engine string
	// Dequantize writes the input, a block-FP8 or MXFP4 source, as the BF16
	// checkpoint it stores (names and shards of the source, no scales, no
	// quantization_config): DeepSeek's fp8_cast_bf16.py on CPU.
	Dequantize bool
	// CastMXFP4ToNVFP4 is hf_ptq's --cast_mxfp4_to_nvfp4 for a data-free NVFP4
	// recipe on an MXFP4 source: the expert weight quantizers become static, with
	// the global and per-block amax that make the NVFP4 experts decode to the
	// MXFP4 values.
	CastMXFP4ToNVFP4 bool

	// Share, when set (Count > 0), converts only share Index of Count of the output
	// shards into the work directory beside Out (convert --shard I/N), for
	// arrowio.Merge to publish once every share is complete; see Job.Run.
	Share arrowio.Share

	// Allocator for layer buffers (nil: a pipeline.PoolAllocator that keeps idle buffers
	// within MaxMemory, trimmed by Job.Close).
	Allocator memory.Allocator
	// Progress is called after each layer is written.
	Progress func(pipeline.Progress)
	// OnShardDone is called with an output shard's name once it is complete and
	// recorded in the work directory (a rerun keeps it).
	OnShardDone func(name string)
}

// Summary is what a finished conversion reports.
type Summary struct {
	Mode    string `json:"mode"` // passthrough, export, data-free
	Layers  int    `json:"layers"`
	Tensors int    `json:"tensors_out"`
	// BytesIn is the input this run read: all of it, less the groups whose output
	// shards were kept from an earlier run or belong to other shares.
	BytesIn  int64 `json:"bytes_in"`
	BytesOut int64 `json:"bytes_out"` // of the whole output
	Shards   int   `json:"shards"`    // of the whole output
	// ShardsWritten by this run; ShardsKept complete from an earlier run of the
	// same fingerprint (both of this run's share).
	ShardsWritten int    `json:"shards_written"`
	ShardsKept    int    `json:"shards_kept"`
	Share         string `json:"share,omitempty"` // "I/N" for one share
	Fingerprint   string `json:"fingerprint"`
	// UpToDate: Out already held the complete output of this fingerprint, and
	// nothing was done.
	UpToDate bool `json:"up_to_date,omitempty"`
	// Removed lists stale work directories (of other fingerprints, or left by
	// interrupted runs) that the run removed.
	Removed       []string       `json:"removed,omitempty"`
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

// Run converts opt.Inputs into opt.Out: Prepare, then Job.Run.
func Run(ctx context.Context, opt Options) (*Summary, error) {
	j, err := Prepare(ctx, opt)
	if err != nil {
		return nil, err
	}
	defer j.Close()
	return j.Run(ctx)
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
