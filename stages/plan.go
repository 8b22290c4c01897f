package stages

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"

	quantstream "github.com/quantstream/quantstream"
	"github.com/quantstream/quantstream/arch"
	"github.com/quantstream/quantstream/quant"
)

// Options tune an export. The zero value reproduces the golden files (PyTorch on CPU).
type Options struct {
	// DType is the export dtype weights are cast to before quantization
	// (`weight.to(dtype)`); Invalid takes config.json's dtype, else each weight's own.
	DType quant.DType
	// Div selects CPU (IEEE) or CUDA (reciprocal) division by constants (quant.DivMode).
	Div quant.DivMode
	// ProducerVersion goes into hf_quant_config.json; "" means ModelOptVersion.
	ProducerVersion string
	// Families are the model rules to detect the family from (nil: arch.Builtin(),
	// the built-in families; convert --arch adds a user's).
	Families *arch.Registry
}

// LayerPlan is the export of one layer, from headers only.
type LayerPlan struct {
	Index   int    // decoder layer, or quantstream.NonDecoder
	Prefix  string // "model.layers.3."
	Inputs  []quantstream.TensorInfo
	Outputs []quantstream.TensorInfo // sorted by name
	Modules []*Module                // quantized modules, by name
	// Filled lists the missing expert input amax buffers Process fills
	// (layer_utils.set_expert_quantizer_amax);
	// an all-zero amax is refilled too, which only the data shows.
	Filled []string

	// fusedOf maps each quantized module of a decoder layer that is in a fusion
	// group (fusionGroups) to the group's first module, fusedSize that module to the
	// group's size: a group of a split layer holding fewer is exported apart
	// (exportApart).
	fusedOf   map[string]string
	fusedSize map[string]int
}

// Plan is a whole export computed from tensor headers, config.json and the quantizer
// table before any tensor data is read.
type Plan struct {
	Arch   *Arch
	Layers []*LayerPlan // NonDecoder first, then by index
	// QuantConfig is hf_quant_config.json's content (get_quant_config), nil when
	// nothing is quantized (ModelOpt then writes no such file).
	QuantConfig Obj
	ModelFormat string              // first quantized module's format in module order
	KVFormat    string              // KV cache format or ""
	Modules     map[string][]string // format -> sorted module names (fused experts: per expert)
	// Problems lists everything wrong with the inputs, all at once; NewPlan returns
	// them joined.
	Problems []error

	dtype      quant.DType
	numExperts int64 // config.json's expert count, 0 when it has none
	// tiedHead: config.json ties lm_head to the embedding (tiedHeadModule).
	tiedHead bool
	opts     Options
	qs       Quantizers
	layers   map[int]*LayerPlan
	// splits holds the decoder layers exported in groups of experts (ExpertSplit),
	// apart the group maxima of fusion groups exported member by member
	// (SetFusedAmax); both set before any Process and read-only afterwards.
	splits map[int]*expertSplit
	apart  map[int]*fusedApart
}

// NewPlan plans an export. inputs are the headers of every input tensor (all shards
// merged, later shards already winning), configJSON the model's config.json, qs the
// quantizer attributes. It returns the plan and, when there are problems, also an
// error joining them (the plan is still filled as far as possible).
func NewPlan(inputs []quantstream.TensorInfo, configJSON []byte, qs Quantizers, opts Options) (*Plan, error) {
	p := &Plan{opts: opts, qs: qs, Modules: map[string][]string{}, layers: map[int]*LayerPlan{}}
	if opts.ProducerVersion == "" {
		p.opts.ProducerVersion = ModelOptVersion
	}
	cfg, err := arch.ParseConfig(configJSON)
	if err != nil {
		return p, err
	}
	reg := opts.Families
	if reg == nil {
		reg = arch.Builtin()
	}
	if p.Arch, err = reg.Detect(cfg); err != nil {
		return p, err
	}
	if p.qs, err = hubQuantizers(qs, inputs, p.Arch); err != nil {
		return p, err
	}
	qs = p.qs
	p.numExperts = cfg.Experts()
	p.dtype = opts.DType
	if p.dtype == quant.Invalid {
		p.dtype = configDType(cfg)
	}
	decoder := decoderBase(inputs)
	if err := p.checkDecoderBase(decoder, inputs); err != nil {
		p.Problems = append(p.Problems, err)
	}
	for _, t := range inputs {
		idx, prefix := arch.LayerOf(t.Name)
		if idx != quantstream.NonDecoder && arch.LayerBase(idx, prefix) != decoder {
			idx, prefix = quantstream.NonDecoder, ""
		}
		lp := p.layers[idx]
		if lp == nil {
			lp = &LayerPlan{Index: idx, Prefix: prefix}
			p.layers[idx] = lp
			p.Layers = append(p.Layers, lp)
		}
		lp.Inputs = append(lp.Inputs, t)
	}
	sort.Slice(p.Layers, func(i, j int) bool { return p.Layers[i].Index < p.Layers[j].Index })
	p.Problems = append(p.Problems, checkCoverage(inputs, qs)...)

	var cmods []ConfigModule
	var routers []string
	// The model-level format (needed by nvfp4_awq folding) comes from module order,
	// which spans layers: discover first, then plan each layer.
	failed := map[int]bool{} // layers whose problems are listed already
	for _, lp := range p.Layers {
		ts, err := headerSet(lp.Inputs)
		if err != nil {
			p.Problems = append(p.Problems, fmt.Errorf("%s: %w", quantstream.LayerName(lp.Index), err))
			failed[lp.Index] = true
			continue
		}
		mods, _, err := p.discover(ts)
		if err != nil {
			p.Problems = append(p.Problems, fmt.Errorf("%s: %w", quantstream.LayerName(lp.Index), err))
			failed[lp.Index] = true
			continue
		}
		cmods = append(cmods, configModules(mods)...)
		routers = append(routers, p.routers(lp, ts, mods)...)
	}
	p.tiedHead = cfg.Tied()
	if m, err := tiedHeadModule(inputs, qs, p.tiedHead); err != nil {
		p.Problems = append(p.Problems, err)
	} else if m != nil {
		cmods = append(cmods, *m)
	}
	sort.SliceStable(cmods, func(i, j int) bool { return moduleLess(cmods[i].Name, cmods[j].Name) })
	for _, m := range cmods {
		if m.Format != "" {
			p.ModelFormat = m.Format
			break
		}
	}
	kv, err := kvFormat(qs, inputs)
	if err != nil {
		p.Problems = append(p.Problems, err)
	}
	p.KVFormat = kv
	for _, lp := range p.Layers {
		if failed[lp.Index] {
			continue
		}
		ts, err := headerSet(lp.Inputs)
		if err != nil {
			continue
		}
		mods, filled, err := p.run(context.Background(), ts, lp)
		if err != nil {
			p.Problems = append(p.Problems, fmt.Errorf("%s: %w", quantstream.LayerName(lp.Index), err))
			continue
		}
		lp.Outputs = infos(ts)
		lp.Filled = filled
		p.noteFusion(lp, mods)
		for _, m := range mods {
			if m.Format != "" {
				lp.Modules = append(lp.Modules, m)
				p.Modules[m.Format] = append(p.Modules[m.Format], m.ID())
			}
		}
	}
	for _, v := range p.Modules {
		sort.Strings(v)
	}
	// ModelOpt names the modules in memory (FromHub) and maps them back (Renames).
	for i := range cmods {
		cmods[i].Name = p.Arch.MemoryModule(cmods[i].Name)
	}
	for i := range routers {
		routers[i] = p.Arch.MemoryModule(routers[i])
	}
	qc := QuantConfig(cmods, routers, p.KVFormat, p.opts.ProducerVersion)
	if err := hubQuantConfig(qc, p.Arch); err != nil {
		p.Problems = append(p.Problems, err)
	}
	q, _ := qc.Get("quantization")
	algo, _ := q.(Obj).Get("quant_algo")
	if algo != nil || p.KVFormat != "" {
		p.QuantConfig = qc
	}
	return p, errors.Join(p.Problems...)
}

// decoderBase is the name base of the decoder layers ("model." for
// "model.layers.N."): when several bases hold "layers.N." (a vision tower beside the
// language model), the one with the most tensors, as arrowio groups checkpoints.
func decoderBase(inputs []quantstream.TensorInfo) string {
	count := map[string]int{}
	for _, t := range inputs {
		if idx, prefix := arch.LayerOf(t.Name); idx != quantstream.NonDecoder {
			count[arch.LayerBase(idx, prefix)]++
		}
	}
	best, n := "", -1
	for _, b := range sortedKeys(count) {
		if c := count[b]; c > n || (c == n && len(b) < len(best)) {
			best, n = b, c
		}
	}
	return best
}

// Layer returns the plan of a layer index, or nil.
func (p *Plan) Layer(index int) *LayerPlan { return p.layers[index] }

// HFQuantConfigJSON is hf_quant_config.json as ModelOpt writes it (indent 4, no
// trailing newline), or nil when nothing is quantized.
func (p *Plan) HFQuantConfigJSON() ([]byte, error) {
	if p.QuantConfig == nil {
		return nil, nil
	}
	return marshalPython(p.QuantConfig)
}

// ConfigJSON returns configJSON with "quantization_config" set from the plan
// (unchanged when nothing is quantized).
func (p *Plan) ConfigJSON(configJSON []byte) ([]byte, error) {
	if p.QuantConfig == nil {
		return configJSON, nil
	}
	return writeConfigJSON(configJSON, p.QuantConfig)
}

func configDType(c *arch.Config) quant.DType {
	s := c.Dtype
	if s == "" {
		s = c.TorchDtype
	}
	switch s {
	case "bfloat16":
		return quant.BF16
	case "float16":
		return quant.F16
	case "float32":
		return quant.F32
	}
	return quant.Invalid
}

func headerSet(in []quantstream.TensorInfo) (*tensorSet, error) {
	ts := &tensorSet{hdr: make(map[string]quantstream.TensorInfo, len(in))}
	for _, t := range in {
		if t.DType.Bits() == 0 {
			return nil, fmt.Errorf("tensor %q: %w %v", t.Name, quant.ErrUnknownDType, t.DType)
		}
		if _, dup := ts.hdr[t.Name]; dup {
			return nil, fmt.Errorf("%w: duplicate tensor %q", ErrPlanMismatch, t.Name)
		}
		ts.hdr[t.Name] = quantstream.TensorInfo{Name: t.Name, DType: t.DType, Shape: slices.Clone(t.Shape)}
	}
	return ts, nil
}

func infos(ts *tensorSet) []quantstream.TensorInfo {
	out := make([]quantstream.TensorInfo, 0, len(ts.hdr))
	for _, n := range sortedKeys(ts.hdr) {
		h := ts.hdr[n]
		shape := h.Shape
		if shape == nil {
			shape = []int64{}
		}
		out = append(out, quantstream.TensorInfo{Name: n, DType: h.DType, Shape: slices.Clone(shape)})
	}
	return out
}

// discover expands fused experts and finds the layer's modules.
func (p *Plan) discover(ts *tensorSet) ([]*Module, []*fusedExperts, error) {
	ov := &overlay{Quantizers: p.qs, extra: map[string]*quant.Quantizer{}}
	perExpert := firstPerExpert(ts)
	fused, err := findFused(ts, p.qs, p.numExperts, p.Arch.Allows(arch.Fused3D))
	if err != nil {
		return nil, nil, err
	}
	if len(fused) > 0 && !p.Arch.Allows(arch.Fused3D) {
		// Not expanded: the family has no fused layout to cut them by.
		return nil, nil, p.checkExpertLayout(ts, perExpert, fused, nil)
	}
	for _, f := range fused {
		if err := f.expand(ts, p.qs, ov); err != nil {
			return nil, nil, err
		}
	}
	mods, err := discoverModules(ts.hdr, ov)
	bmm, berr := discoverBMM(ts.hdr, p.qs)
	mods = append(mods, bmm...)
	err = errors.Join(err, berr, checkZeroDims(ts, mods), p.checkExpertLayout(ts, perExpert, fused, bmm), checkWeightRanks(ts, mods), p.checkUncovered(ts, mods), p.checkUnmatched(mods))
	for _, m := range mods {
		for _, f := range fused {
			if strings.HasPrefix(m.Name, f.name+".") {
				m.FromFused = true
			}
		}
	}
	return mods, fused, err
}

// run performs every export step on one layer: on headers while planning, on data
// while processing, in the order of unified_export_hf._export_transformers_checkpoint:
// _prepare_moe_inputs, requantize_resmooth_fused_llm_layers, get_quant_config,
// sync_moe_gate_up_amax, the per-module _export_quantized_weight, then
// postprocess_state_dict.
func (p *Plan) run(ctx context.Context, ts *tensorSet, lp *LayerPlan) ([]*Module, []string, error) {
	if !ts.planning() {
		if err := checkBuffers(ts); err != nil {
			return nil, nil, err
		}
	}
	mods, fused, err := p.discover(ts)
	if err == nil {
		err = checkBufferHeaders(ts, mods)
	}
	if err != nil {
		return nil, nil, err
	}
	byName := map[string]*Module{}
	for _, m := range mods {
		byName[m.ID()] = m
	}
	filled, err := fillExpertInputAmax(ts, mods, p.splits[lp.Index])
	if err != nil {
		return nil, nil, err
	}
	var errs []error
	errs = append(errs, fillBMMAmax(ts, mods))
	// The decoder layer's own prefix; outside the decoder, the prefix of every
	// "layers.N." block the group holds (the language model's layers, when a vision
	// tower with more tensors per layer was taken for the decoder): fusion follows the
	// modules, not how the reader grouped them.
	prefixes := layerPrefixes(ts, lp)
	for _, prefix := range prefixes {
		if strings.Contains(p.ModelFormat, "nvfp4_awq") {
			for _, r := range p.Arch.Prequant {
				src, tgt := byName[prefix+r.Parent+"."+r.Source], byName[prefix+r.Parent+"."+r.Target]
				if src == nil || tgt == nil || src.Format == "" || tgt.Format == "" {
					continue
				}
				errs = append(errs, fusePrequantToLinear(ts, src, tgt))
			}
		}
	}
	if len(prefixes) > 0 {
		if strings.Contains(p.ModelFormat, "awq") || p.ModelFormat == "nvfp4_svdquant" {
			// ModelOpt resmooths MoE experts through get_experts_list, which indexes
			// experts one by one: it fails on fused experts and on unknown families.
			if len(fused) > 0 {
				errs = append(errs, fmt.Errorf("%w: %s: %s export with fused experts (ModelOpt fails: experts has no len())", ErrUnsupported, fused[0].name, p.ModelFormat))
			}
			if len(expertBatches(mods)) > 0 && !p.Arch.AWQExperts() {
				errs = append(errs, fmt.Errorf("%w: %s export of %s experts (ModelOpt's get_experts_list raises NotImplementedError)", ErrUnsupported, p.ModelFormat, p.Arch.Name))
			}
			for _, batch := range expertBatches(mods) {
				if batch[0].PQS == "" {
					continue
				}
				errs = append(errs, preprocessLinearFusion(ts, batch, true, p.opts.Div))
			}
		}
	}
	if err := p.exportApart(ts, lp.Index, mods); err != nil {
		return nil, nil, err
	}
	for _, prefix := range prefixes {
		for _, g := range p.fusionGroups(prefix, byName) {
			// A single module reading a norm's output is not fused with anything, but
			// under AWQ its pre_quant_scale still goes into the norm (ModelOpt's
			// requantize_resmooth_fused_llm_layers folds every hooked input that is a
			// norm's output, whatever the number of readers).
			if len(g.mods) > 1 {
				if err := preprocessLinearFusion(ts, g.mods, false, p.opts.Div); err != nil {
					errs = append(errs, err)
					continue
				}
			}
			if strings.Contains(g.mods[0].Format, "awq") && g.norm != "" && ts.has(g.norm+".weight") {
				errs = append(errs, fusePrequantLayernorm(ts, g.norm, p.Arch.OnePlusNorm, g.mods))
			}
		}
	}
	if len(prefixes) > 0 {
		errs = append(errs, syncGateUpAmax(ts, mods, p.Arch.GateUp(), p.Arch.FusedInMemory()))
	}
	for _, m := range mods {
		if m.Format == "" {
			continue
		}
		if err := ctx.Err(); err != nil {
			return nil, nil, err
		}
		dt := p.dtype
		if dt == quant.Invalid {
			dt = ts.hdr[m.Weight].DType
		}
		if !ts.planning() {
			if err := checkZeroAmax(ts, m); err != nil {
				errs = append(errs, err)
				continue
			}
		}
		errs = append(errs, exportModule(ts, m, dt, p.opts.Div))
	}
	if err := errors.Join(errs...); err != nil {
		// Every problem of the layer at once; later steps would only repeat them.
		return nil, nil, err
	}
	if err := postprocess(ts, quant.E4M3Max, p.KVFormat, false, p.opts.Div); err != nil {
		return nil, nil, err
	}
	if p.tiedHead && ts.has(tiedHeadName+".weight") {
		// The state dict of a tied model holds lm_head.weight (the embedding's
		// tensor under a second name); the export, as save_pretrained, drops it.
		for _, m := range mods {
			if m.Name == tiedHeadName && m.Format != "" {
				return nil, nil, fmt.Errorf("%w: %s is tied to the embedding (tie_word_embeddings) but quantized as %s: the embedding would be exported quantized under lm_head's quantizer; disable *lm_head* or untie it in config.json", ErrUnsupported, tiedHeadName, m.Format)
			}
		}
		ts.del(tiedHeadName + ".weight")
	}
	// Last, as ModelOpt reverts the conversion mapping on the exported state dict.
	if err := renameOutputs(ts, p.Arch); err != nil {
		return nil, nil, err
	}
	return mods, filled, nil
}

// tiedHeadName is the output head's module name in Hugging Face causal LMs.
const tiedHeadName = "lm_head"

// tiedHeadModule is get_quant_config's entry for a tied lm_head whose weight is not in
// the input (tie_word_embeddings: a data-free base, a saved checkpoint): the module
// exists in the model with its quantizers, so it is listed (and so excluded) though no
// tensor names it. nil when the input has lm_head.weight (the module is found from
// it) or the table has no lm_head quantizers. An enabled one is refused: ModelOpt
// would quantize the shared embedding weight.
func tiedHeadModule(inputs []quantstream.TensorInfo, qs Quantizers, tied bool) (*ConfigModule, error) {
	if !tied || qs == nil {
		return nil, nil
	}
	for _, t := range inputs {
		if t.Name == tiedHeadName+".weight" {
			return nil, nil
		}
	}
	found := false
	for _, n := range []string{".weight_quantizer", ".input_quantizer"} {
		q, ok := qs.Get(tiedHeadName + n)
		if !ok {
			continue
		}
		found = true
		if hasQuant(q) {
			return nil, fmt.Errorf("%w: %s%s is enabled, but lm_head is tied to the embedding (tie_word_embeddings) and has no weight of its own in the input; disable *lm_head* in the recipe", ErrUnsupported, tiedHeadName, n)
		}
	}
	if !found {
		return nil, nil
	}
	return &ConfigModule{Name: tiedHeadName}, nil
}

// layerPrefixes is lp's prefix for a decoder layer; for the group outside the
// decoder, the sorted distinct "<base>layers.N." prefixes of its tensors.
func layerPrefixes(ts *tensorSet, lp *LayerPlan) []string {
	if lp.Index != quantstream.NonDecoder {
		return []string{lp.Prefix}
	}
	seen := map[string]bool{}
	var out []string
	for _, n := range sortedKeys(ts.hdr) {
		if idx, prefix := LayerOf(n); idx != quantstream.NonDecoder && !seen[prefix] {
			seen[prefix] = true
			out = append(out, prefix)
		}
	}
	return out
}

type fusionGroup struct {
	mods []*Module
	norm string
}

// fusionGroups instantiates the family's rules in one layer (Arch.FusedGroups) over
// its quantized modules that are not cut from fused experts tensors, keeping the
// groups whose format shares its fused scales (SharesFusedScales).
func (p *Plan) fusionGroups(prefix string, byName map[string]*Module) []fusionGroup {
	var names []string
	for _, m := range byName {
		if m.Format != "" && !m.FromFused {
			names = append(names, m.ID())
		}
	}
	var out []fusionGroup
	for _, g := range p.Arch.FusedGroups(prefix, names) {
		mods := make([]*Module, len(g.Members))
		for i, n := range g.Members {
			mods[i] = byName[n]
		}
		if !SharesFusedScales(mods[0].Format) {
			continue
		}
		out = append(out, fusionGroup{mods, g.Norm})
	}
	return out
}

// expertBatches groups per-expert modules (not cut from fused tensors) by MoE block
// and projection name, experts in index order.
func expertBatches(mods []*Module) [][]*Module {
	idx := map[string]int{}
	var out [][]*Module
	for _, m := range mods {
		if m.Expert < 0 || m.FromFused || m.Format == "" {
			continue
		}
		block, _ := splitLast(m.Parent)
		k := block + "\x00" + m.Proj
		i, ok := idx[k]
		if !ok {
			i = len(out)
			idx[k] = i
			out = append(out, nil)
		}
		out[i] = append(out[i], m)
	}
	for _, b := range out {
		sort.Slice(b, func(i, j int) bool { return b[i].Expert < b[j].Expert })
	}
	return out
}

// configModules turns a layer's modules into get_quant_config entries: modules cut
// from a fused experts tensor count once, as their container (expert 0 represents it).
func configModules(mods []*Module) []ConfigModule {
	var out []ConfigModule
	seen := map[string]bool{}
	for _, m := range mods {
		name := m.Name
		if m.FromFused {
			block, _ := splitLast(m.Parent)
			name = block
			if seen[name] || m.Expert != 0 {
				continue
			}
			if _, proj := splitLast(m.Name); proj != "gate_proj" && proj != "up_proj" {
				continue
			}
		}
		if seen[name] {
			continue
		}
		seen[name] = true
		f := m.Format
		if f == "nvfp4" && m.GAmax != "" {
			f = "nvfp4_static" // get_quantization_format: same quant_algo, group_size
		}
		b := 0
		if f != "" {
			b = m.Block
		}
		out = append(out, ConfigModule{Name: name, Format: f, Block: b})
	}
	return out
}

// routers lists the layer's unquantized MoE routers (_get_unquantized_moe_router_names):
// for every block with an "experts" child, its gate / router / shared_expert_gate
// that owns a weight and is not quantized.
func (p *Plan) routers(lp *LayerPlan, ts *tensorSet, mods []*Module) []string {
	byName := map[string]*Module{}
	for _, m := range mods {
		byName[m.ID()] = m
	}
	blocks := map[string]bool{}
	for n := range ts.hdr {
		if i := strings.Index(n, ".experts."); i >= 0 {
			blocks[n[:i]] = true
		} else if strings.HasPrefix(n, "experts.") {
			blocks[""] = true
		}
	}
	var out []string
	for _, b := range sortedKeys(blocks) {
		for _, r := range p.Arch.Routers() {
			name := r
			if b != "" {
				name = b + "." + r
			}
			if !ts.has(name + ".weight") {
				continue
			}
			if m := byName[name]; m != nil && m.Format != "" {
				continue
			}
			out = append(out, name)
		}
	}
	return out
}

// kvFormat is get_kv_cache_dtype over every module owning an enabled k_bmm, v_bmm or
// output quantizer (quant.KVCacheDType per module); all of them must agree.
func kvFormat(qs Quantizers, inputs []quantstream.TensorInfo) (string, error) {
	have := map[string]bool{}
	for _, t := range inputs {
		have[t.Name] = true
	}
	type owner struct {
		qs   []*quant.Quantizer
		bias []bool
	}
	owners := map[string]*owner{}
	var order []string
	for _, n := range qs.Names() {
		parent, q := splitLast(n)
		if q != "k_bmm_quantizer" && q != "v_bmm_quantizer" && q != "output_quantizer" {
			continue
		}
		qq, _ := qs.Get(n)
		if !hasQuant(qq) {
			continue
		}
		o := owners[parent]
		if o == nil {
			o = &owner{}
			owners[parent] = o
			order = append(order, parent)
		}
		o.qs = append(o.qs, qq)
		o.bias = append(o.bias, have[n+"._bias_value"])
	}
	var kv string
	for i, name := range order {
		d := quant.KVCacheDType(owners[name].qs, owners[name].bias)
		if i == 0 {
			kv = d
		} else if d != kv {
			return kv, fmt.Errorf("%w: mixed precision kv cache (%s is %q, others %q)", ErrKVCacheFormat, name, d, kv)
		}
	}
	return kv, nil
}
