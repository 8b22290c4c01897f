package stages

import (
	"fmt"
	"regexp"
	"slices"
	"strings"

	quantstream "github.com/quantstream/quantstream"
	"github.com/quantstream/quantstream/arch"
)

// perExpertRE finds a per-expert module's tensor: "<block>.experts.<e>.<proj>.<x>".
var perExpertRE = regexp.MustCompile(`(?:^|\.)experts\.\d{1,9}\.`)

// checkExpertLayout refuses experts stored in a layout the family does not list
// (arch.Experts.Layouts), and a 3-D experts weight the quantizer table knows in
// neither form: the layout decides which axis holds what, and a guess cuts the
// tensor along the wrong one. It runs on headers, before any tensor is read.
// perExpert is a per-expert tensor of the layer as read (before fused experts were
// expanded into per-expert names), "" when none.
func (p *Plan) checkExpertLayout(ts *tensorSet, perExpert string, fused []*fusedExperts, bmm []*Module) error {
	var found []arch.Layout
	example := map[arch.Layout]string{}
	note := func(l arch.Layout, name string) {
		if _, ok := example[l]; !ok {
			found = append(found, l)
			example[l] = name
		}
	}
	if perExpert != "" {
		note(arch.PerExpert, perExpert)
	}
	for _, f := range fused {
		note(arch.Fused3D, f.name+"."+f.first)
	}
	for _, m := range bmm {
		note(arch.BMM, m.Weight)
	}
	var errs []string
	for _, l := range found {
		if p.Arch.Allows(l) {
			continue
		}
		have := "no experts"
		if p.Arch.Experts != nil {
			have = fmt.Sprintf("experts in %v", p.Arch.Experts.Layouts)
		}
		if l != arch.PerExpert {
			// Advise adding the layout only when the shapes are that layout's: else
			// the quantizer table and the checkpoint disagree, and a family file
			// listing the layout would cut the tensors along a wrong axis.
			container, _ := splitLast(example[l])
			attr, k, first, down, ok := expertsPair(ts.hdr, container)
			if !ok || !fitsLayout(l, k, first, down) {
				errs = append(errs, fmt.Sprintf("tensor %s has the quantizers of the %s layout, but family %s (%s) has %s, and %s %v / down_proj %v do not have that layout's shapes either (fused_3d [E, 2I, H] / [E, H, I], bmm [E, H, 2I] / [E, I, H]): the quantizer table does not describe the checkpoint",
					example[l], l, p.Arch.Name, p.Arch.Source, have, attr, first, down))
				continue
			}
		}
		errs = append(errs, fmt.Sprintf("tensor %s holds experts in the %s layout, but family %s (%s) has %s: add the layout to a family file (experts.layouts) and pass it with --arch, see docs/arch-rules.md",
			example[l], l, p.Arch.Name, p.Arch.Source, have))
	}
	// A 3-D (or higher) tensor of an experts container that no layout claims: a
	// known experts weight without weight quantizers (neither fused, plural, nor
	// batched, singular), or a weight under a name no layout knows (w13, w2, …),
	// which would pass through unquantized and unnamed in exclude_modules.
	claimed := map[string]bool{}
	for _, f := range fused {
		claimed[f.name+"."+f.first], claimed[f.name+".down_proj"] = true, true
	}
	for _, m := range bmm {
		claimed[m.Weight] = true
	}
	for _, n := range sortedKeys(ts.hdr) {
		container, attr := splitLast(n)
		if len(ts.hdr[n].Shape) < 3 || !strings.HasSuffix(container, "experts") || claimed[n] {
			continue
		}
		if attr != "gate_up_proj" && attr != "up_proj" && attr != "down_proj" {
			errs = append(errs, fmt.Sprintf("tensor %s is a %d-D experts weight %v under a name no experts layout knows (fused_3d and bmm store gate_up_proj or up_proj, and down_proj; per_expert stores <block>.experts.<e>.<proj>.weight): quantstream cannot tell its axes; store the experts in one of those layouts",
				n, len(ts.hdr[n].Shape), ts.hdr[n].Shape))
			continue
		}
		errs = append(errs, fmt.Sprintf("tensor %s is a 3-D experts weight %v with no quantizer for its weight in the table (neither %s_weight_quantizers.<e> nor %s_weight_quantizer): the calibration state does not describe it",
			n, ts.hdr[n].Shape, container+"."+attr, container+"."+attr))
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w: %s", ErrStructure, strings.Join(errs, "; "))
	}
	return nil
}

// checkDecoderBase refuses decoder layers under a prefix the family's rules do not
// cover (arch.Family.LayerBases): its fusion rules, renames and exclusions name
// modules relative to that prefix, and under another one they would silently match
// nothing.
func (p *Plan) checkDecoderBase(decoder string, inputs []quantstream.TensorInfo) error {
	bases := p.Arch.Bases()
	if slices.Contains(bases, decoder) {
		return nil
	}
	example := ""
	for _, t := range inputs {
		if idx, prefix := arch.LayerOf(t.Name); idx != quantstream.NonDecoder && arch.LayerBase(idx, prefix) == decoder {
			example = t.Name
			break
		}
	}
	if example == "" {
		return nil // no decoder layers at all (a model of one group): nothing to match
	}
	return fmt.Errorf("%w: the decoder layers are under %q (tensor %s), a prefix family %s (%s) does not cover (its layer_bases: %q): add the prefix (and the renames it needs) to a family file and pass it with --arch, see docs/arch-rules.md",
		ErrStructure, decoder, example, p.Arch.Name, p.Arch.Source, bases)
}

// checkWeightRanks refuses a quantized module whose weight is not a matrix (a
// convolution: Mamba's mixer.conv1d, a gated delta net's conv1d) when it is not a
// batched-matmul expert: the export's scales are computed on [out, in] rows, and a
// guessed flattening would write scales no engine reads back. ModelOpt's default
// recipes leave these modules unquantized (they are excluded by name).
func checkWeightRanks(ts *tensorSet, mods []*Module) error {
	var errs []string
	for _, m := range mods {
		if m.BMM || m.Format == "" {
			continue
		}
		if sh := ts.hdr[m.Weight].Shape; len(sh) != 2 {
			errs = append(errs, fmt.Sprintf("module %s is quantized as %s, but its weight %s is %d-D %v (a convolution?): quantstream exports matrices only; disable its quantizers (e.g. a recipe rule for *%s*)", m.Name, m.Format, m.Weight, len(sh), sh, m.Proj))
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%w: %s", ErrStructure, strings.Join(errs, "; "))
	}
	return nil
}

// checkUncovered refuses a linear-like weight (a 2-D "<m>.weight" of a decoder layer)
// that has no quantizer in the table while other modules of its layer have: ModelOpt
// gives every nn.Linear weight, input and output quantizers (disabled ones too), so a
// table without them is not the model's (a module renamed, dropped from the state),
// and passing the weight through would leave it unquantized, missing from
// exclude_modules and out of its fusion group. Routers the family names are not
// nn.Linear in every layout (TopKRouter) and may have none.
func (p *Plan) checkUncovered(ts *tensorSet, mods []*Module) error {
	if len(mods) == 0 {
		return nil // a layer without quantizers: an MTP layer, or nothing quantized
	}
	have, layers := map[string]bool{}, map[string]bool{}
	for _, m := range mods {
		have[m.Weight] = true
		if idx, pre := arch.LayerOf(m.Weight); idx >= 0 {
			layers[pre] = true
		}
	}
	var bad []string
	for _, n := range sortedKeys(ts.hdr) {
		if !strings.HasSuffix(n, ".weight") || strings.Contains(n, "_quantizer") || len(ts.hdr[n].Shape) != 2 || have[n] {
			continue
		}
		if idx, pre := arch.LayerOf(n); idx < 0 || !layers[pre] {
			continue // not in a decoder layer whose modules have quantizers
		}
		mod := strings.TrimSuffix(n, ".weight")
		_, last := splitLast(mod)
		if slices.Contains(p.Arch.Routers(), last) {
			continue
		}
		bad = append(bad, n)
	}
	if len(bad) == 0 {
		return nil
	}
	return fmt.Errorf("%w: linear weight(s) %s have no quantizer in the table (<module>.weight_quantizer / input_quantizer), though the layer's other modules have: ModelOpt gives every nn.Linear quantizers, so the calibration state does not describe this checkpoint (a module renamed or missing from it); export the state of this model again",
		ErrStructure, strings.Join(bad, ", "))
}

// checkUnmatched refuses quantized modules named as a fusion member of the family
// (q_proj, gate_proj, …) under a parent no fusion rule covers (arch.Family.Unmatched):
// the modules ModelOpt fuses would keep their own scales.
func (p *Plan) checkUnmatched(mods []*Module) error {
	byLayer := map[string][]string{}
	var prefixes []string
	for _, m := range mods {
		if m.Format == "" || m.BMM || m.FromFused {
			continue
		}
		idx, pre := arch.LayerOf(m.Weight)
		if idx < 0 {
			continue
		}
		if _, ok := byLayer[pre]; !ok {
			prefixes = append(prefixes, pre)
		}
		byLayer[pre] = append(byLayer[pre], m.Name)
	}
	var bad []string
	for _, pre := range prefixes {
		bad = append(bad, p.Arch.Unmatched(pre, byLayer[pre])...)
	}
	if len(bad) == 0 {
		return nil
	}
	slices.Sort(bad)
	return fmt.Errorf("%w: module(s) %s are named as members of family %s's fusion groups, but no fusion rule covers their parent (%s): they would keep their own input_scale / weight_scale_2 where ModelOpt fuses them; add a fusion rule for that parent to a family file (fusion, --arch FILE, docs/arch-rules.md) or check the checkpoint's names",
		ErrStructure, strings.Join(bad, ", "), p.Arch.Name, p.Arch.Source)
}

// firstPerExpert is the first per-expert tensor name of ts (quantizer buffers aside).
func firstPerExpert(ts *tensorSet) string {
	for _, n := range sortedKeys(ts.hdr) {
		if !strings.Contains(n, "_quantizer") && perExpertRE.MatchString(n) {
			return n
		}
	}
	return ""
}
