package convert

import (
	"errors"
	"fmt"
	"os"

	"github.com/quantstream/quantstream"
	"github.com/quantstream/quantstream/arrowio"
	"github.com/quantstream/quantstream/stages"
	"github.com/quantstream/quantstream/verify"
)

// ErrEngine marks a conversion refused because the engine named by Options.Engine
// would not load its output (verify's table of the engines' ModelOpt-loader rules).
var ErrEngine = errors.New("convert: the target engine cannot load the output")

// checkEngine judges the planned output (tensor headers, hf_quant_config.json and
// config.json) by the engine's loader rules, before any tensor data is read, and
// returns the refusals as plan problems.
func checkEngine(engine string, tensors []quantstream.TensorInfo, hfQuantConfig, configJSON []byte) error {
	v, err := verify.JudgeHeaders(engine, tensors, hfQuantConfig, configJSON)
	if err != nil {
		return err
	}
	var errs []error
	for _, f := range v.Reasons {
		if f.Severity == verify.Error {
			what := f.Message
			if f.Tensor != "" {
				what = f.Tensor + ": " + what
			}
			errs = append(errs, fmt.Errorf("%w (%s %s): %s", ErrEngine, v.Engine, v.Version, what))
		}
	}
	if len(errs) == 0 {
		return nil
	}
	return fmt.Errorf("%w:\n%w", ErrPlan, errors.Join(errs...))
}

// planOutputs lists the headers an export plan writes.
func planOutputs(p *stages.Plan) []quantstream.TensorInfo {
	var out []quantstream.TensorInfo
	for _, lp := range p.Layers {
		out = append(out, lp.Outputs...)
	}
	return out
}

// readSide reads a side file of the input ("" for none).
func readSide(path string) ([]byte, error) {
	if path == "" {
		return nil, nil
	}
	return os.ReadFile(path)
}

// checkPassthroughEngine judges a passthrough, whose output is its input.
func checkPassthroughEngine(ck *arrowio.Checkpoint, side map[string]string, engine string) error {
	hq, err := readSide(side["hf_quant_config.json"])
	if err != nil {
		return err
	}
	cfg, err := readSide(side["config.json"])
	if err != nil {
		return err
	}
	var infos []quantstream.TensorInfo
	for _, t := range ck.Tensors() {
		infos = append(infos, t.Info())
	}
	return checkEngine(engine, infos, hq, cfg)
}
