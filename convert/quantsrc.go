package convert

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/quantstream/quantstream"
	"github.com/quantstream/quantstream/arrowio"
	"github.com/quantstream/quantstream/modelopt"
	"github.com/quantstream/quantstream/quantsrc"
	"github.com/quantstream/quantstream/stages"
)

var (
	// ErrDequantize is returned for a --dequantize conversion that is asked for more.
	ErrDequantize = errors.New("convert: --dequantize")
	// ErrCast is returned for a --cast-mxfp4-to-nvfp4 conversion that cannot be made.
	ErrCast = errors.New("convert: --cast-mxfp4-to-nvfp4")
)

// source is the input as the conversion reads it: a quantized source (FP8 block,
// MXFP4) becomes a view whose weights are BF16 (quantsrc), so that everything after
// it, from the plan to the writer, sees the BF16 model ModelOpt quantized.
type source struct {
	ck     *arrowio.Checkpoint // what the conversion reads
	scheme *quantsrc.Scheme    // nil for a plain checkpoint (or a passthrough)
	mtp    quantsrc.MTP        // hf_ptq's MTP layers (exports only)
	// config is config.json as the BF16 model's: without the source's
	// quantization_config (nil when there is no config.json).
	config []byte
}

// readsValues reports whether a conversion with opt on an input with these side
// files uses the weights' values (a recipe, calibration state, --dequantize); a
// passthrough copies whatever is stored, quantized or not.
func readsValues(opt Options, side map[string]string) bool {
	return opt.Recipe != "" || opt.KVCache != "" || opt.Dequantize || opt.CastMXFP4ToNVFP4 ||
		side["quantizers.json"] != "" || side[modelopt.StateFileName] != ""
}

// openSource decides how ck is read: for a conversion that reads values, a source
// quantized in a way quantstream does not read is refused (before any data is
// read), a supported one is viewed as BF16, and an export also sets hf_ptq's MTP
// layers apart. ck is consumed when a view replaces it (use source.ck).
func openSource(ck *arrowio.Checkpoint, side map[string]string, opt Options) (*source, error) {
	src := &source{ck: ck}
	path := side["config.json"]
	if path != "" {
		b, err := os.ReadFile(path)
		if err != nil {
			return nil, err
		}
		src.config = b
	}
	if !readsValues(opt, side) {
		return src, nil
	}
	infos := make([]quantstream.TensorInfo, 0, len(ck.Tensors()))
	for _, t := range ck.Tensors() {
		infos = append(infos, t.Info())
	}
	name := path
	if name == "" {
		name = "the input (no config.json)"
	}
	scheme, err := quantsrc.Detect(name, src.config, infos)
	if err != nil {
		return nil, fmt.Errorf("convert: %w", err)
	}
	if !opt.Dequantize {
		if src.mtp, err = quantsrc.FindMTP(name, src.config, infos); err != nil {
			return nil, fmt.Errorf("convert: %w", err)
		}
	}
	if scheme != nil {
		cfg, err := scheme.StripConfig(src.config)
		if err != nil {
			return nil, err
		}
		if src.ck, err = scheme.View(ck); err != nil {
			return nil, err
		}
		src.config, src.scheme = cfg, scheme
	}
	return src, nil
}

// prepareDequantize is --dequantize: the source as BF16, in its own shards, with
// its config.json less the quantization_config and no other change.
func (j *Job) prepareDequantize(src *source, side map[string]string) error {
	opt := j.opt
	switch {
	case opt.Recipe != "" || opt.KVCache != "" || len(opt.Rules) > 0:
		return fmt.Errorf("%w writes the BF16 checkpoint alone; convert that with --recipe / --kv-cache afterwards", ErrDequantize)
	case opt.CastMXFP4ToNVFP4:
		return fmt.Errorf("%w and --cast-mxfp4-to-nvfp4 exclude each other", ErrDequantize)
	case len(opt.Inputs) > 1 || side["quantizers.json"] != "" || side[modelopt.StateFileName] != "":
		return fmt.Errorf("%w reads one quantized source, without calibration state (inputs %s)", ErrDequantize, strings.Join(opt.Inputs, ", "))
	}
	ck := j.ck
	j.mode, j.sideFiles = "dequantize", map[string][]byte{}
	j.shardOf = func(name string) string {
		f, _ := ck.ShardOf(name)
		return f
	}
	if src.scheme == nil {
		j.summary.Warnings = append(j.summary.Warnings, "--dequantize: the source is not quantized; its tensors are copied unchanged")
	} else {
		j.mode = fmt.Sprintf("dequantize (%s to BF16, %d tensors)", src.scheme.Method, src.scheme.Weights())
	}
	if src.config != nil {
		j.sideFiles["config.json"] = src.config
	}
	for name := range side {
		if inputOnlyFiles[name] {
			j.skipFiles = append(j.skipFiles, name)
		}
	}
	return nil
}

// joinFused gives calibration state with fused expert quantizer names to a
// checkpoint that stores its experts one by one (quantsrc.JoinFused), replacing
// the job's checkpoint by the joined view; without anything to join, t comes back
// unchanged.
func (j *Job) joinFused(t modelopt.Table) (modelopt.Table, error) {
	joined, err := quantsrc.JoinFused(j.ck, t)
	if err != nil {
		return nil, fmt.Errorf("convert: %w", err)
	}
	if joined == nil {
		return t, nil
	}
	j.ck = joined.View
	return joined.Table, nil
}

// castMXFP4 adds the MXFP4 → NVFP4 cast's closed-form weight quantizer buffers to
// the job's view of an MXFP4 source (quantsrc.Scheme.CastMXFP4): ModelOpt's
// apply_to_model, which overrides what max calibration set on those quantizers.
func (j *Job) castMXFP4(src *source) error {
	if src.scheme == nil || src.scheme.Method != quantsrc.MXFP4 {
		return fmt.Errorf("%w needs a gpt-oss MXFP4 source (quantization_config.quant_method \"mxfp4\")", ErrCast)
	}
	v, err := src.scheme.CastMXFP4(j.ck, nil)
	if err != nil {
		return err
	}
	j.ck = v
	return nil
}

// checkCast checks, as apply_to_model asserts, that every MXFP4 projection's weight
// quantizer is an enabled static NVFP4 one: hf_ptq requires an NVFP4-family
// --qformat for the cast.
func checkCast(q *modelopt.Quantized, src *source) error {
	for _, p := range src.scheme.CastProjections() {
		qn := quantsrc.CastQuantizer(p)
		tq, ok := q.Table[qn]
		switch {
		case !ok:
			return fmt.Errorf("%w: the model has no weight quantizer %s for the MXFP4 projection %s", ErrCast, qn, p)
		case !modelopt.IsStaticNVFP4(tq):
			return fmt.Errorf("%w: %s is not an enabled static NVFP4 quantizer under %s (hf_ptq needs an NVFP4 --qformat, e.g. W4A16_NVFP4_CFG, for the cast)", ErrCast, qn, q.Recipe.Name)
		}
	}
	return nil
}

// fuseFP8 is false only in tests that compare the coded route with the decoded one.
var fuseFP8 = true

// codeFP8 has a block-FP8 source hand on coded (quantsrc.Scheme.CodeFP8), rather
// than decoded to BF16, the weights whose every reader in the chain takes their
// codes: the export's, where it is dynamic-block NVFP4 of a plain linear
// (stages.Plan.FP8Fusable: the fused kernel writes the bytes the BF16 weight
// would), and the calibration's, where it is one per-tensor amax
// (calibrateStage.fusableAmax). Only in the chain Prepare built: a stage of the
// caller's own may read any weight, so with one every weight is decoded.
func (j *Job) codeFP8() error {
	if !fuseFP8 || j.scheme == nil || j.scheme.Method != quantsrc.FP8Block || j.export == nil || j.added > 0 {
		return nil
	}
	var cs *calibrateStage
	var st *stages.Stage
	for _, s := range j.chain {
		switch x := s.(type) {
		case *calibrateStage:
			cs = x
		case *stages.Stage:
			st = x
		default:
			return nil
		}
	}
	if st == nil {
		return nil
	}
	var names []string
	for _, n := range j.export.FP8Fusable(j.scheme.FP8Layouts()) {
		if cs == nil || cs.fusableAmax(n) {
			names = append(names, n)
		}
	}
	if len(names) == 0 {
		return nil
	}
	coded, err := j.scheme.CodeFP8(names)
	if err != nil {
		return err
	}
	st.TakeFP8Coded(coded)
	if cs != nil {
		cs.fp8 = coded
	}
	return nil
}
