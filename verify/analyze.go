package verify

import (
	"fmt"
	"slices"
	"strings"

	"github.com/quantstream/quantstream"
	"github.com/quantstream/quantstream/arch"
	"github.com/quantstream/quantstream/quant"
	"github.com/quantstream/quantstream/stages"
)

// analysis is everything verify knows about a checkpoint from headers and configs.
type analysis struct {
	c    *checkpoint
	qc   *quantConfig // nil: not quantized
	mods []*module
	byID map[string]*module
	kv   []string // KV-cache tensors
	// groups are fused groups whose format shares input_scale and weight_scale_2, and
	// pairs the gate/up projections of one expert, which share the per-tensor weight
	// scales (sync_moe_gate_up_amax); the data checks compare their scalars.
	groups [][]*module
	pairs  [][2]*module
	// fams are the model families the fused-group check detects the family in
	// (Options.Families; nil: the built-in ones).
	fams *arch.Registry
}

// analyze runs every header check: formats, layouts, coverage, KV scales and fused
// groups, with the families of fams (nil: the built-in ones).
func analyze(c *checkpoint, qc *quantConfig, fams *arch.Registry, r *Report) *analysis {
	a := &analysis{c: c, qc: qc, byID: map[string]*module{}, fams: fams}
	a.mods, a.kv = discover(c, r)
	for _, m := range a.mods {
		a.byID[m.ID()] = m
	}
	a.assignFormats(r)
	a.checkKV(r)
	a.fusion(r)
	return a
}

// assignFormats gives every module its format from the config, checks the layout of
// the quantized ones and the coverage of the others.
func (a *analysis) assignFormats(r *Report) {
	qc := a.qc
	unknownAlgo := map[string]bool{}
	formatFor := func(algo, where string) string {
		f, ok := formatOf(algo)
		if !ok && !unknownAlgo[algo] {
			unknownAlgo[algo] = true
			r.add(Finding{Severity: Error, Check: CheckConfig, File: qc.Source,
				Message: fmt.Sprintf("%s %q is not a quant_algo ModelOpt's export writes; verify cannot check its layout", where, algo)})
		}
		return f
	}
	var format string
	mixed := qc != nil && qc.Algo == mixedPrecision
	if qc != nil && qc.Algo != "" && !mixed {
		format = formatFor(qc.Algo, "quant_algo")
	}
	if mixed && len(qc.Layers) == 0 {
		r.add(Finding{Severity: Error, Check: CheckConfig, File: qc.Source, Message: "quant_algo MIXED_PRECISION without quantized_layers: nothing says which module has which format"})
	}
	for _, m := range a.mods {
		w := a.c.tensors[m.Weight]
		_, hasScale := m.tensors[roleScale]
		quantized := hasScale || quantizedDType(w.DType)
		var excludedBy string
		if qc != nil {
			excludedBy = excludedBy1(m.Name, qc.Exclude)
		}
		entry, inLayers := "", false
		if mixed {
			entry, inLayers = qc.layerFor(m.Name)
		}
		if !quantized {
			for _, role := range roles {
				if n, ok := m.tensors[role]; ok {
					r.add(Finding{Severity: Error, Check: CheckLayout, Tensor: n, File: a.c.tensors[n].base(),
						Message: fmt.Sprintf("%s of a module without weight_scale (its weight %s is %v): engines load it as unquantized and have no parameter for this", role, m.Weight, w.DType)})
				}
			}
			if inLayers {
				r.add(Finding{Severity: Error, Check: CheckCoverage, Tensor: m.Weight, File: w.base(),
					Message: fmt.Sprintf("quantized_layers lists %s (%s), but the weight is %v without scales", entry, qc.Layers[entry].Algo, w.DType)})
			} else if qc != nil && qc.Algo != "" && !mixed && excludedBy == "" && linearLike(m, w) {
				r.add(Finding{Severity: Error, Check: CheckCoverage, Tensor: m.Weight, File: w.base(),
					Message: fmt.Sprintf("unquantized (%v %v) but not covered by exclude_modules: engines build it as %s and its BF16 weight does not fit; add %q to exclude_modules or quantize it", w.DType, w.Shape, qc.Algo, m.Name)})
			}
			continue
		}
		switch {
		case qc == nil || qc.Algo == "":
			r.add(Finding{Severity: Error, Check: CheckConfig, Tensor: m.Weight, File: w.base(),
				Message: "a quantized weight (weight_scale or a packed dtype), but the checkpoint has no quant_algo (hf_quant_config.json or config.json quantization_config)"})
			m.bad = true
			continue
		case mixed && !inLayers:
			r.add(Finding{Severity: Error, Check: CheckCoverage, Tensor: m.Weight, File: w.base(),
				Message: "quantized, but quantized_layers does not list it: engines build it unquantized and its packed weight does not fit"})
			m.bad = true
			continue
		case excludedBy != "":
			r.add(Finding{Severity: Error, Check: CheckCoverage, Tensor: m.Weight, File: w.base(),
				Message: fmt.Sprintf("quantized, but exclude_modules pattern %q covers it: engines build it unquantized and its packed weight does not fit", excludedBy)})
			m.bad = true
			continue
		}
		m.Algo, m.Format = qc.Algo, format
		group := qc.Group
		if mixed {
			lc := qc.Layers[entry]
			m.Algo, m.Format, group = lc.Algo, formatFor(lc.Algo, fmt.Sprintf("quantized_layers[%q].quant_algo", entry)), lc.Group
		}
		if m.Format == "" {
			m.bad = true
			continue
		}
		a.checkLayout(m, w, group, r)
	}
}

// layerFor finds the quantized_layers entry of a module: its own, or its nearest
// ancestor's (the experts container stands for experts cut from a fused tensor).
func (qc *quantConfig) layerFor(name string) (string, bool) {
	for n := name; n != ""; {
		if _, ok := qc.Layers[n]; ok {
			return n, true
		}
		i := strings.LastIndexByte(n, '.')
		if i < 0 {
			break
		}
		n = n[:i]
	}
	return "", false
}

// checkLayout compares a quantized module's tensors with what its format implies.
func (a *analysis) checkLayout(m *module, w *tensor, group int, r *Report) {
	bad := func(tensor, format string, args ...any) {
		r.add(Finding{Severity: Error, Check: CheckLayout, Tensor: tensor, File: a.fileOf(tensor), Message: fmt.Sprintf(format, args...)})
		m.bad = true
	}
	var scale *quantstream.TensorInfo
	if n, ok := m.tensors[roleScale]; ok {
		scale = &a.c.tensors[n].TensorInfo
	}
	ex, msg := expect(m.Format, m.BMM, w.TensorInfo, scale, group)
	if msg != "" {
		bad(m.Weight, "%s: %s", m.Format, msg)
		return
	}
	if w.DType != ex.weight {
		bad(m.Weight, "%v, format %s stores its weight as %v", w.DType, m.Format, ex.weight)
	}
	m.Logical = ex.logical
	m.Group = group
	if m.Group == 0 {
		m.Group = defaultGroup(m.Format)
		if scale != nil && m.Format != "fp8_pb_wo" {
			m.Group = inferGroup(m, scale)
		}
	}
	if m.Format == "fp8_pb_wo" && group == 0 {
		m.Group = fp8BlockOf(w.Shape[0], w.Shape[1], scale)
	}
	want := map[string]bool{roleBias: true}
	for _, s := range ex.roles {
		want[s.role] = true
		name, ok := m.tensors[s.role]
		if !ok {
			if !s.optional {
				bad(m.key(s.role), "missing: %s needs a %s for %s (engines load an uninitialised value in its place)", m.Format, s.role, m.Weight)
			}
			continue
		}
		t := a.c.tensors[name]
		if !slices.Contains(s.dtypes, t.DType) {
			bad(name, "%v, %s writes %v", t.DType, m.Format, s.dtypes[0])
		}
		switch {
		case s.scalar && len(t.Shape) == 1 && t.Shape[0] == 1:
			r.add(Finding{Severity: Warning, Check: CheckLayout, Tensor: name, File: t.base(),
				Message: "shape [1]: ModelOpt writes per-tensor scales 0-dim; vLLM, SGLang and TensorRT-LLM accept both"})
		case s.shape != nil && !slices.Equal(t.Shape, s.shape):
			bad(name, "shape %v, but %s with weight %v %v needs %v", fmtShape(t.Shape), m.Format, w.DType, fmtShape(w.Shape), fmtShape(s.shape))
		}
	}
	for _, role := range roles {
		if n, ok := m.tensors[role]; ok && !want[role] {
			bad(n, "not part of format %s: ModelOpt does not write it and engines have no parameter for it", m.Format)
		}
	}
}

// inferGroup is the block size the weight_scale's last dim implies.
func inferGroup(m *module, scale *quantstream.TensorInfo) int {
	if len(m.Logical) == 0 || len(scale.Shape) == 0 {
		return m.Group
	}
	in := m.Logical[len(m.Logical)-1]
	sc := scale.Shape[len(scale.Shape)-1]
	if m.BMM && strings.Contains(m.Format, "nvfp4") {
		in, sc = m.Logical[1], scale.Shape[1]
	}
	if sc > 0 && in%sc == 0 {
		return int(in / sc)
	}
	return m.Group
}

func (a *analysis) fileOf(name string) string {
	if t, ok := a.c.tensors[name]; ok {
		return t.base()
	}
	return ""
}

// linearLike reports whether a module is one an engine builds as a (possibly
// quantized) linear layer: a 2-D floating weight that is not an embedding table, or a
// batched-matmul experts weight.
func linearLike(m *module, w *tensor) bool {
	if !floatDType(w.DType) {
		return false
	}
	if m.BMM {
		return true
	}
	if len(w.Shape) != 2 {
		return false
	}
	last := m.Name[strings.LastIndexByte(m.Name, '.')+1:]
	return !strings.Contains(last, "embed") && last != "wte" && last != "wpe"
}

// excludedBy1 returns the first exclude_modules pattern that covers module name, by
// ModelOpt's matching: the name itself, or an fnmatch wildcard ("model.layers.0.self_attn*").
func excludedBy1(name string, patterns []string) string {
	for _, p := range patterns {
		if p == name || fnmatch(p, name) {
			return p
		}
	}
	return ""
}

// checkKV checks that KV-cache scales are present exactly when a KV algorithm is set:
// with one, every attention with k_proj / v_proj weights has k_proj.k_scale /
// v_proj.v_scale (0-dim F32, what postprocess_state_dict writes).
func (a *analysis) checkKV(r *Report) {
	kvAlgo := ""
	if a.qc != nil {
		kvAlgo = a.qc.KV
	}
	if kvAlgo == "" {
		for _, n := range a.kv {
			r.add(Finding{Severity: Error, Check: CheckKV, Tensor: n, File: a.fileOf(n),
				Message: "a KV-cache scale, but kv_cache_quant_algo is null: engines ignore it or refuse it"})
		}
		return
	}
	switch kvAlgo {
	case "FP8", "NVFP4", "NVFP4_AFFINE":
	default:
		r.add(Finding{Severity: Error, Check: CheckConfig, File: a.qc.Source,
			Message: fmt.Sprintf("kv_cache_quant_algo %q is not one ModelOpt's export writes (FP8, NVFP4, NVFP4_AFFINE)", kvAlgo)})
	}
	have := map[string]bool{}
	for _, n := range a.kv {
		have[n] = true
		t := a.c.tensors[n]
		if strings.HasSuffix(n, "_scale") && (t.DType != quant.F32 || len(t.Shape) != 0) {
			r.add(Finding{Severity: Error, Check: CheckKV, Tensor: n, File: t.base(),
				Message: fmt.Sprintf("%v %v, ModelOpt writes a 0-dim F32 (amax / 448)", t.DType, fmtShape(t.Shape))})
		}
	}
	for _, n := range a.c.names {
		attn, ok := strings.CutSuffix(n, ".k_proj.weight")
		if !ok {
			continue
		}
		want := []string{attn + ".k_proj.k_scale"}
		if _, ok := a.c.tensors[attn+".v_proj.weight"]; ok {
			want = append(want, attn+".v_proj.v_scale")
		}
		for _, k := range want {
			if !have[k] {
				r.add(Finding{Severity: Error, Check: CheckKV, Tensor: k,
					Message: fmt.Sprintf("missing: kv_cache_quant_algo is %s, so every attention needs its KV scales (engines fall back to 1.0 and read the cache wrongly)", kvAlgo)})
			}
		}
	}
}

// fusion finds the fused groups by the model family's rules (stages, the rules the
// export applies): their modules must have one format, and where the export shares
// scales the data checks compare them.
func (a *analysis) fusion(r *Report) {
	var quantized []*module
	for _, m := range a.mods {
		if m.Format != "" && !m.BMM {
			quantized = append(quantized, m)
		}
	}
	if len(quantized) == 0 {
		return
	}
	arch, err := archOf(a.c.configJSON, a.fams)
	if err != nil {
		r.add(Finding{Severity: Note, Check: CheckFusion, File: "config.json",
			Message: fmt.Sprintf("fused-group check skipped: %v; without the family's fusion rules (stages) verify cannot tell which modules share input_scale and weight_scale_2", err)})
		return
	}
	byLayer := map[string][]string{}
	for _, m := range quantized {
		if p := layerOf(m.Name); p != "" {
			byLayer[p] = append(byLayer[p], m.Name)
		}
	}
	// The export's structure refusals, re-applied: a quantized module the family
	// does not list, and modules named as fusion members under a parent no rule
	// covers (self_attn renamed attention). The group check below would pass them
	// by finding no group, while an engine's model of this type has no such layer.
	for _, m := range quantized {
		if !arch.KnowsLinear(m.Name) {
			r.add(Finding{Severity: Error, Check: CheckFusion, Tensor: m.Weight, File: a.fileOf(m.Weight),
				Message: fmt.Sprintf("module %s is none of the linear modules family %s (%s) lists: an engine's model of this type has no such layer, and the fused-group check cannot place it (a module renamed or added?)", m.Name, arch.Name, arch.Source)})
		}
	}
	for _, p := range sortedKeys(byLayer) {
		for _, n := range arch.Unmatched(p, byLayer[p]) {
			m := a.byID[n]
			r.add(Finding{Severity: Error, Check: CheckFusion, Tensor: m.Weight, File: a.fileOf(m.Weight),
				Message: fmt.Sprintf("module %s is named as a fusion member of family %s (%s), under a parent no fusion rule covers: the modules ModelOpt fuses there would keep their own scales, and an engine's model of this type has no such layer", n, arch.Name, arch.Source)})
		}
	}
	for _, p := range sortedKeys(byLayer) {
		for _, g := range arch.FusedGroups(p, byLayer[p]) {
			mods := make([]*module, len(g.Members))
			for i, n := range g.Members {
				mods[i] = a.byID[n]
			}
			same := true
			for _, m := range mods[1:] {
				if m.Format != mods[0].Format {
					same = false
					r.add(Finding{Severity: Error, Check: CheckFusion, Tensor: m.Weight, File: a.fileOf(m.Weight),
						Message: fmt.Sprintf("format %s, but %s (fused with it: %s) is %s: engines fuse them into one kernel of one format", m.Format, mods[0].Name, strings.Join(g.Members, ", "), mods[0].Format)})
				}
			}
			if same && stages.SharesFusedScales(mods[0].Format) {
				a.groups = append(a.groups, mods)
			}
		}
	}
	gateUp := arch.GateUp()
	if gateUp[0] == "" {
		return
	}
	for _, m := range quantized {
		parent, proj := splitLast(m.Name)
		if m.Expert < 0 || proj != gateUp[0] {
			continue
		}
		if up := a.byID[parent+"."+gateUp[1]]; up != nil && up.Format == m.Format {
			a.pairs = append(a.pairs, [2]*module{m, up})
		}
	}
}

func archOf(configJSON []byte, fams *arch.Registry) (*stages.Arch, error) {
	if configJSON == nil {
		return nil, fmt.Errorf("no config.json")
	}
	cfg, err := stages.ParseModelConfig(configJSON)
	if err != nil {
		return nil, err
	}
	if fams == nil {
		fams = arch.Builtin()
	}
	return fams.Detect(cfg)
}

func splitLast(name string) (string, string) {
	i := strings.LastIndexByte(name, '.')
	if i < 0 {
		return "", name
	}
	return name[:i], name[i+1:]
}

func fmtShape(s []int64) string {
	if len(s) == 0 {
		return "[] (0-dim)"
	}
	return fmt.Sprint(s)
}
