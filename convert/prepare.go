package convert

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"

	"github.com/quantstream/quantstream"
	"github.com/quantstream/quantstream/arch"
	"github.com/quantstream/quantstream/arrowio"
	"github.com/quantstream/quantstream/modelopt"
	"github.com/quantstream/quantstream/stages"
)

// ErrPlan wraps the problems found while planning; the conversion did not start.
var ErrPlan = errors.New("convert: the plan has problems")

// Calibration artifacts that describe the input and are not part of an exported
// checkpoint.
var inputOnlyFiles = map[string]bool{
	"quantizers.json":    true,
	"quant_recipe.json":  true,
	"modelopt_state.pth": true,
	// The in-memory model config beside calibration state saved from a quantized
	// source (golden-qsrc): the source's own config.json stays the one read.
	"model_config.json": true,
	// The input's own provenance, when it is a converted checkpoint: the output
	// gets its own.
	arrowio.ProvenanceName: true,
}

// prepare decides what the conversion does from the inputs and options (a data-free
// recipe, a saved ModelOpt checkpoint, calibration state with a quantizers.json
// table, or a passthrough) and fills in the job's mode, stages and side files.
func (j *Job) prepare() error {
	opt, mem := j.opt, j.mem
	// The user's family files first: a bad one is refused whatever the mode.
	fams, archSum, err := loadFamilies(opt.Arch)
	if err != nil {
		return err
	}
	j.archSHA256 = archSum
	side := j.ck.SideFiles()
	src, err := openSource(j.ck, side, opt)
	if err != nil {
		return err
	}
	j.ck, j.scheme = src.ck, src.scheme
	if opt.Dequantize {
		return j.prepareDequantize(src, side)
	}
	ck := j.ck
	var (
		qs    stages.Quantizers
		mode  string
		extra []quantstream.TensorInfo // tensors the calibration stage adds (weight amax)
		pre   []quantstream.Stage
	)
	if len(opt.Rules) > 0 && opt.Recipe == "" {
		return fmt.Errorf("convert: %d recipe rules without a recipe: rules edit a data-free recipe (Options.Recipe)", len(opt.Rules))
	}
	switch {
	case opt.Recipe != "" || opt.KVCache != "":
		if err := checkDataFreeInput(ck, side); err != nil {
			return err
		}
		if opt.CastMXFP4ToNVFP4 {
			if err := j.castMXFP4(src); err != nil {
				return err
			}
			ck = j.ck
		}
		t, cs, added, sum, err := dataFree(ck, side, opt, fams, mem, src)
		if err != nil {
			return err
		}
		j.recipeSHA256 = sum
		qs, extra, pre = t, added, []quantstream.Stage{cs}
		mode = "data-free " + strings.TrimSpace(opt.Recipe+" "+opt.KVCache)
		if n := len(opt.Rules); n > 0 {
			mode += fmt.Sprintf(" (+%d rules)", n)
		}
	case opt.CastMXFP4ToNVFP4:
		return fmt.Errorf("%w goes with a data-free --recipe (e.g. W4A16_NVFP4_CFG); calibration state from hf_ptq --cast_mxfp4_to_nvfp4 already holds the cast, convert it without the flag", ErrCast)
	case side[modelopt.StateFileName] != "":
		st, err := modelopt.ReadState(side[modelopt.StateFileName])
		if err != nil {
			return err
		}
		if qs, err = j.joinFused(st.Quantizers); err != nil {
			return err
		}
		mode = "export (saved ModelOpt checkpoint, " + st.CalibMode + ")"
	case side["quantizers.json"] != "":
		t, err := modelopt.LoadQuantizersJSON(side["quantizers.json"])
		if err != nil {
			return err
		}
		if qs, err = j.joinFused(t); err != nil {
			return err
		}
		mode = "export (calibration state)"
	default:
		j.mode = "passthrough"
		for name := range side {
			if inputOnlyFiles[name] {
				j.skipFiles = append(j.skipFiles, name)
			}
		}
		if opt.Engine != "" {
			return checkPassthroughEngine(ck, side, opt.Engine)
		}
		return nil
	}
	cfgPath := side["config.json"]
	if cfgPath == "" {
		return fmt.Errorf("convert: no config.json in %s: the architecture decides how modules fuse", strings.Join(opt.Inputs, ", "))
	}
	// The config of the BF16 model (a quantized source's without its
	// quantization_config, which the export replaces).
	cfg := src.config
	ck = j.ck // the fused-expert join may have made a view
	infos := make([]quantstream.TensorInfo, 0, len(ck.Tensors())+len(extra))
	for _, t := range ck.Tensors() {
		infos = append(infos, t.Info())
	}
	infos = append(infos, extra...)
	sort.Slice(infos, func(i, j int) bool { return infos[i].Name < infos[j].Name })
	plan, err := stages.NewPlan(infos, cfg, qs, stages.Options{Div: opt.DivMode, Families: fams})
	if err != nil {
		return fmt.Errorf("%w:\n%w", ErrPlan, err)
	}
	if err := src.mtp.Exclude(plan.QuantConfig); err != nil {
		return err
	}
	j.mode, j.chain, j.sideFiles, j.export = mode, append(pre, stages.NewStage(plan, mem)), map[string][]byte{}, plan
	outCfg, err := plan.ConfigJSON(cfg)
	if err != nil {
		return err
	}
	j.sideFiles["config.json"] = outCfg
	if side["generation_config.json"] == "" {
		// save_pretrained, and so ModelOpt's export, writes the one transformers
		// derives from config.json.
		gc, err := generationConfigFromModel(cfg)
		if err != nil {
			return err
		}
		j.sideFiles["generation_config.json"] = gc
	}
	hq, err := plan.HFQuantConfigJSON()
	if err != nil {
		return err
	}
	if hq != nil {
		j.sideFiles["hf_quant_config.json"] = hq
	}
	for name := range side {
		if inputOnlyFiles[name] {
			j.skipFiles = append(j.skipFiles, name)
		}
	}
	j.summary = summarizePlan(plan)
	if opt.Engine != "" {
		return checkEngine(opt.Engine, planOutputs(plan), hq, outCfg)
	}
	return nil
}

// loadFamilies is the built-in model families with the user's family files added
// (Options.Arch), and the sha256 of those files' contents in order for the
// fingerprint ("" without any).
func loadFamilies(files []string) (*arch.Registry, string, error) {
	if len(files) == 0 {
		return arch.Builtin(), "", nil
	}
	var fams []*arch.Family
	h := sha256.New()
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, "", fmt.Errorf("%w: --arch: %v", arch.ErrFamily, err)
		}
		fam, err := arch.Parse(f, b)
		if err != nil {
			return nil, "", err
		}
		fams = append(fams, fam)
		s := sha256.Sum256(b)
		h.Write(s[:])
	}
	r, err := arch.Builtin().With(fams...)
	if err != nil {
		return nil, "", err
	}
	return r, hex.EncodeToString(h.Sum(nil)), nil
}

func summarizePlan(p *stages.Plan) Summary {
	var s Summary
	s.ModulesPerFmt = map[string]int{}
	for f, mods := range p.Modules {
		s.ModulesPerFmt[f] = len(mods)
	}
	for _, lp := range p.Layers {
		s.FilledAmax = append(s.FilledAmax, lp.Filled...)
	}
	s.QuantAlgo, s.Unquantized = quantAlgoAndExcluded(p)
	return s
}

// quantAlgoAndExcluded reads quant_algo and the excluded modules back from the
// hf_quant_config the plan will write, so the summary says exactly what the file says.
func quantAlgoAndExcluded(p *stages.Plan) (string, []string) {
	b, err := p.HFQuantConfigJSON()
	if err != nil || b == nil {
		return "", nil
	}
	var hq struct {
		Quantization struct {
			QuantAlgo      string   `json:"quant_algo"`
			ExcludeModules []string `json:"exclude_modules"`
		} `json:"quantization"`
	}
	if json.Unmarshal(b, &hq) != nil {
		return "", nil
	}
	return hq.Quantization.QuantAlgo, hq.Quantization.ExcludeModules
}
