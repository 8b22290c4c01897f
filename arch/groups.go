package arch

import (
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
)

// FusedGroup is one instance of a FusionRule in a decoder layer: the full names of
// the modules that read the same input, in the rule's member order, and the full name
// of the norm whose output that input is ("" when none).
type FusedGroup struct {
	Members []string
	Norm    string
}

// FusedGroups instantiates the family's fusion rules in the decoder layer whose
// tensors start with prefix ("model.layers.3.") over the given module names (full
// names, "model.layers.3.self_attn.q_proj"; names of other layers are ignored): one
// group per rule and parent that has at least two of the names (or one, when the rule
// names a norm: a lone reader of a norm's output still has its AWQ scale folded into
// the norm), rules in order and, for a wildcard parent ("mlp.experts.*"), parents in
// registration order.
//
// This is the grouping the export fuses (ModelOpt's requantize_resmooth_fused_llm_layers
// finds it with a dummy forward); verify uses it to check exported checkpoints, so both
// read the same rules.
func (f *Family) FusedGroups(prefix string, modules []string) []FusedGroup {
	have := make(map[string]bool, len(modules))
	for _, n := range modules {
		have[n] = true
	}
	var out []FusedGroup
	for _, r := range f.Fusion {
		var parents []string
		if strings.HasSuffix(r.Parent, ".*") {
			re := regexp.MustCompile("^" + regexp.QuoteMeta(prefix+strings.TrimSuffix(r.Parent, "*")) + `(\d+)$`)
			seen := map[string]bool{}
			for _, n := range modules {
				parent, _ := splitLast(n)
				if re.MatchString(parent) && !seen[parent] {
					seen[parent] = true
					parents = append(parents, parent)
				}
			}
			sort.Slice(parents, func(i, j int) bool { return ModuleLess(parents[i], parents[j]) })
		} else {
			parents = []string{prefix + r.Parent}
		}
		for _, par := range parents {
			var g []string
			for _, mem := range r.Members {
				if have[par+"."+mem] {
					g = append(g, par+"."+mem)
				}
			}
			if len(g) == 0 || (len(g) == 1 && r.Norm == "") {
				continue
			}
			norm := ""
			if r.Norm != "" {
				norm = prefix + r.Norm
			}
			out = append(out, FusedGroup{Members: g, Norm: norm})
		}
	}
	return out
}

// Unmatched returns the modules (full names in the decoder layer prefix) that would
// form a group of a fusion rule of two or more members (q_proj, k_proj, v_proj; gate_proj,
// up_proj) under a parent no rule with those members covers: attention under another
// name (self_attn renamed attention), experts under another container
// (mlp.moe_experts.N). Their group would silently not fuse (own input_scale /
// weight_scale_2 where ModelOpt writes one), so the caller refuses them. A lone
// member-named module (NemotronH's routed experts' up_proj) is not a group.
func (f *Family) Unmatched(prefix string, modules []string) []string {
	covers := func(r FusionRule, parent string) bool {
		if base, wild := strings.CutSuffix(r.Parent, ".*"); wild {
			i, err := strconv.Atoi(strings.TrimPrefix(parent, base+"."))
			return err == nil && i >= 0 && strings.HasPrefix(parent, base+".")
		}
		return parent == r.Parent
	}
	byParent := map[string][]string{}
	var parents []string
	for _, n := range modules {
		rel, ok := strings.CutPrefix(n, prefix)
		if !ok {
			continue
		}
		parent, _ := splitLast(rel)
		if _, ok := byParent[parent]; !ok {
			parents = append(parents, parent)
		}
		byParent[parent] = append(byParent[parent], n)
	}
	var out []string
	for _, parent := range parents {
		have := map[string]string{}
		for _, n := range byParent[parent] {
			_, last := splitLast(n)
			have[last] = n
		}
		bad := map[string]bool{}
		for _, r := range f.Fusion {
			if len(r.Members) < 2 || covers(r, parent) {
				continue
			}
			var g []string
			for _, m := range r.Members {
				if n, ok := have[m]; ok {
					g = append(g, n)
				}
			}
			if len(g) < 2 {
				continue
			}
			// Another rule with these members may cover this parent.
			coveredElsewhere := false
			for _, o := range f.Fusion {
				if covers(o, parent) && slices.Contains(o.Members, r.Members[0]) {
					coveredElsewhere = true
				}
			}
			if !coveredElsewhere {
				for _, n := range g {
					bad[n] = true
				}
			}
		}
		for _, n := range byParent[parent] {
			if bad[n] {
				out = append(out, n)
			}
		}
	}
	return out
}

// rank orders module name components as Hugging Face registers them, standing in for
// named_modules() order (which only matters for MIXED_PRECISION group numbering and
// the model-level format).
var rank = map[string]int{
	"model": 0, "embed_tokens": 0, "layers": 1, "norm": 2, "lm_head": 9,
	"self_attn": 0, "attn": 0, "mlp": 1, "block_sparse_moe": 1, "feed_forward": 1,
	"q_proj": 0, "q_a_proj": 0, "q_b_proj": 1, "k_proj": 2, "kv_a_proj_with_mqa": 2, "kv_b_proj": 3,
	"v_proj": 4, "o_proj": 5,
	"gate": 0, "router": 0, "experts": 1, "shared_expert": 2, "shared_experts": 2, "shared_expert_gate": 3,
	"gate_proj": 0, "up_proj": 1, "down_proj": 2, "w1": 0, "w2": 1, "w3": 2, "gate_up_proj": 0,
}

// ModuleLess orders module names as named_modules() lists them: numbered components
// by number, known components by their registration rank, the rest by name.
func ModuleLess(a, b string) bool {
	pa, pb := strings.Split(a, "."), strings.Split(b, ".")
	for i := 0; i < len(pa) && i < len(pb); i++ {
		x, y := pa[i], pb[i]
		if x == y {
			continue
		}
		nx, ex := strconv.Atoi(x)
		ny, ey := strconv.Atoi(y)
		if ex == nil && ey == nil {
			return nx < ny
		}
		rx, okx := rank[x]
		ry, oky := rank[y]
		if okx && oky && rx != ry {
			return rx < ry
		}
		if okx != oky {
			return okx
		}
		return x < y
	}
	return len(pa) < len(pb)
}

func splitLast(name string) (string, string) {
	i := strings.LastIndexByte(name, '.')
	if i < 0 {
		return "", name
	}
	return name[:i], name[i+1:]
}
