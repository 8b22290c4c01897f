package modelopt

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/quantstream/quantstream/quant"
)

// ErrRecipe is returned for a recipe that is malformed or names something unknown.
var ErrRecipe = errors.New("modelopt: bad recipe")

// Axis is a quantizer's axis: None (Values nil, Tuple false), an int (one value) or a tuple.
type Axis struct {
	Values []int
	Tuple  bool
}

// Attributes is one QuantizerAttributeConfig of a recipe rule (the "cfg" dict). A nil
// field means the key is absent, so ModelOpt's default applies (set_from_attribute_config
// replaces every attribute: num_bits 8, axis None, block_sizes None, type "static",
// fake_quant true, unsigned and narrow_range false).
type Attributes struct {
	NumBits       *quant.NumBits
	Axis          *Axis
	BlockSizes    *quant.BlockSizes // non-nil with BlockSizesNull false: a dict
	BlockSizesSet bool              // the key is present (BlockSizes nil: None)
	Type          string            // "static", "dynamic"; "" when absent
	EffectiveBits *float64
	FakeQuant     *bool
	Unsigned      *bool
	NarrowRange   *bool
	// Bias is the affine KV-cache bias config ({-2: None, -4: None, "type": "static"});
	// its presence is kept for the round trip and for the KV format (NVFP4_AFFINE).
	Bias *quant.BlockSizes
	// UseConstantAmax is use_constant_amax (the KV-cache cast modes: amax 448, no
	// buffer, no calibration); ConstantAmax is constant_amax (a fixed _amax, > 0).
	// QuantizerAttributeConfig forbids both at once.
	UseConstantAmax *bool
	ConstantAmax    *float64
}

// Rule is one quant_cfg entry: a wildcard on quantizer names, an optional parent class,
// an optional cfg (one dict, or a list for a SequentialQuantizer) and an optional enable.
type Rule struct {
	QuantizerName string
	ParentClass   string
	Cfg           []Attributes // nil: no cfg
	CfgList       bool         // cfg is a list (SequentialQuantizer), even of one element
	Enable        *bool        // nil: absent (true when Cfg is set)
}

// Recipe is a ModelOpt quantization config: quant_cfg rules and the calibration algorithm.
type Recipe struct {
	Name string
	// Algorithm is nil (no calibration), a method name ("max", "awq_lite",
	// "smoothquant") or a map with "method" and its parameters.
	Algorithm any
	Rules     []Rule
}

// Method returns the calibration method, "" for None.
func (r *Recipe) Method() string {
	switch a := r.Algorithm.(type) {
	case string:
		return a
	case map[string]any:
		m, _ := a["method"].(string)
		return m
	}
	return ""
}

func boolp(b bool) *bool { return &b }

// Combine appends a KV-cache recipe's rules to a model recipe, as ModelOpt's
// update_quant_cfg_with_kv_cache_quant does (and sets the algorithm to "max" when the
// model recipe has none).
func Combine(model, kv *Recipe) *Recipe {
	out := &Recipe{Name: model.Name + " + " + kv.Name, Algorithm: model.Algorithm}
	out.Rules = append(append([]Rule(nil), model.Rules...), kv.Rules...)
	if len(model.Rules) == 0 {
		out.Rules = append([]Rule{{QuantizerName: "*", Enable: boolp(false)}}, kv.Rules...)
	}
	if out.Method() == "" {
		out.Algorithm = "max"
	}
	return out
}

// MarshalJSON writes the recipe in the golden quant_recipe.json form:
// {"name": ..., "config": {"quant_cfg": [...], "algorithm": ...}}.
func (r *Recipe) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteString(`{"name": `)
	encodeString(&b, r.Name)
	b.WriteString(`, "config": {"quant_cfg": [`)
	for i, rule := range r.Rules {
		if i > 0 {
			b.WriteString(", ")
		}
		rule.writeJSON(&b)
	}
	b.WriteString(`], "algorithm": `)
	alg, err := json.Marshal(r.Algorithm)
	if err != nil {
		return nil, err
	}
	b.Write(alg)
	b.WriteString("}}")
	return b.Bytes(), nil
}

func (rule Rule) writeJSON(b *bytes.Buffer) {
	b.WriteString(`{"quantizer_name": `)
	encodeString(b, rule.QuantizerName)
	if rule.ParentClass != "" {
		b.WriteString(`, "parent_class": `)
		encodeString(b, rule.ParentClass)
	}
	if rule.Cfg != nil {
		b.WriteString(`, "cfg": `)
		if rule.CfgList {
			b.WriteByte('[')
		}
		for i, a := range rule.Cfg {
			if i > 0 {
				b.WriteString(", ")
			}
			a.writeJSON(b)
		}
		if rule.CfgList {
			b.WriteByte(']')
		}
	}
	if rule.Enable != nil {
		fmt.Fprintf(b, `, "enable": %t`, *rule.Enable)
	}
	b.WriteByte('}')
}

func writeNumBits(b *bytes.Buffer, n quant.NumBits) {
	if bits, ok := n.Int(); ok {
		b.WriteString(strconv.Itoa(bits))
		return
	}
	fmt.Fprintf(b, "[%d, %d]", n.E, n.M)
}

func writeBlockDict(b *bytes.Buffer, bs *quant.BlockSizes) {
	axes := make([]int, 0, len(bs.Dims))
	for ax := range bs.Dims {
		axes = append(axes, ax)
	}
	sort.Sort(sort.Reverse(sort.IntSlice(axes))) // -1 before -2, as ModelOpt writes them
	b.WriteByte('{')
	first := true
	sep := func() {
		if !first {
			b.WriteString(", ")
		}
		first = false
	}
	for _, ax := range axes {
		sep()
		fmt.Fprintf(b, `"%d": `, ax)
		if n := bs.Dims[ax]; n == 0 {
			b.WriteString("null")
		} else {
			b.WriteString(strconv.Itoa(n))
		}
	}
	if bs.Type != "" {
		sep()
		b.WriteString(`"type": `)
		encodeString(b, bs.Type)
	}
	if bs.ScaleBits != nil {
		sep()
		b.WriteString(`"scale_bits": `)
		writeNumBits(b, *bs.ScaleBits)
	}
	if bs.FourOverSix {
		sep()
		b.WriteString(`"four_over_six": true`)
	}
	b.WriteByte('}')
}

func (a Attributes) writeJSON(b *bytes.Buffer) {
	var parts []string
	add := func(k string, f func(*bytes.Buffer)) {
		var v bytes.Buffer
		f(&v)
		parts = append(parts, `"`+k+`": `+v.String())
	}
	if a.NumBits != nil {
		add("num_bits", func(v *bytes.Buffer) { writeNumBits(v, *a.NumBits) })
	}
	if a.EffectiveBits != nil {
		add("effective_bits", func(v *bytes.Buffer) { v.WriteString(pyFloat(*a.EffectiveBits)) })
	}
	if a.Axis != nil {
		add("axis", func(v *bytes.Buffer) {
			switch {
			case a.Axis.Tuple:
				ints := make([]int64, len(a.Axis.Values))
				for i, x := range a.Axis.Values {
					ints[i] = int64(x)
				}
				encodeInts(v, ints)
			case len(a.Axis.Values) == 1:
				v.WriteString(strconv.Itoa(a.Axis.Values[0]))
			default:
				v.WriteString("null")
			}
		})
	}
	if a.Type != "" {
		add("type", func(v *bytes.Buffer) { encodeString(v, a.Type) })
	}
	if a.BlockSizesSet {
		add("block_sizes", func(v *bytes.Buffer) {
			if a.BlockSizes == nil {
				v.WriteString("null")
			} else {
				writeBlockDict(v, a.BlockSizes)
			}
		})
	}
	for _, f := range []struct {
		k string
		p *bool
	}{{"fake_quant", a.FakeQuant}, {"unsigned", a.Unsigned}, {"narrow_range", a.NarrowRange}} {
		if f.p != nil {
			add(f.k, func(v *bytes.Buffer) { v.WriteString(strconv.FormatBool(*f.p)) })
		}
	}
	if a.Bias != nil {
		add("bias", func(v *bytes.Buffer) { writeBlockDict(v, a.Bias) })
	}
	if a.UseConstantAmax != nil {
		add("use_constant_amax", func(v *bytes.Buffer) { v.WriteString(strconv.FormatBool(*a.UseConstantAmax)) })
	}
	if a.ConstantAmax != nil {
		add("constant_amax", func(v *bytes.Buffer) { v.WriteString(pyFloat(*a.ConstantAmax)) })
	}
	b.WriteString("{" + strings.Join(parts, ", ") + "}")
}

// ReadRecipeJSON reads a recipe in the quant_recipe.json form ({"name", "config":
// {"quant_cfg", "algorithm"}}) or a bare {"quant_cfg", "algorithm"} config.
func ReadRecipeJSON(path string) (*Recipe, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var top map[string]any
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	if err := d.Decode(&top); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrRecipe, path, err)
	}
	r, err := recipeFromMap(top)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return r, nil
}

// recipeFromMap interprets a decoded recipe (from JSON or YAML): numbers may be
// json.Number, int or float64; num_bits may also be a format name ("e4m3").
//
// Keys are checked as ModelOpt's pydantic configs check them (extra="forbid"): a
// key no form has is refused, naming it and the key it most likely misspells,
// rather than ignored (a misspelled "algorithm" would otherwise read as no
// calibration at all).
func recipeFromMap(top map[string]any) (*Recipe, error) {
	r := &Recipe{}
	if n, ok := top["name"].(string); ok {
		r.Name = n
	}
	cfg := top
	section := ""
	switch {
	case top["config"] != nil:
		// quant_recipe.json: {"name", "config": {"quant_cfg", "algorithm"}}.
		c, ok := top["config"].(map[string]any)
		if !ok {
			return nil, fmt.Errorf("%w: config is a %T, want a mapping", ErrRecipe, top["config"])
		}
		cfg, section = c, "config."
		if err := checkKeys(top, "recipe", "", "name", "config"); err != nil {
			return nil, err
		}
	case top["quantize"] != nil:
		// modelopt_recipes general/ptq: {"metadata", "quantize": {"quant_cfg", "algorithm"}}.
		c, ok := top["quantize"].(map[string]any)
		if !ok {
			return nil, fmt.Errorf("%w: quantize is a %T, want a mapping", ErrRecipe, top["quantize"])
		}
		cfg, section = c, "quantize."
		if err := checkKeys(top, "recipe", "", "metadata", "quantize"); err != nil {
			return nil, err
		}
		if md, ok := top["metadata"].(map[string]any); ok {
			if err := checkKeys(md, "recipe", "metadata.", "recipe_type", "description"); err != nil {
				return nil, err
			}
			if rt, ok := md["recipe_type"]; ok && rt != "ptq" {
				return nil, fmt.Errorf("%w: metadata.recipe_type %v: only PTQ recipes (ptq) quantize a checkpoint", ErrRecipe, rt)
			}
		}
	}
	// A QuantizeConfig: effective_bits only steers ModelOpt's auto_quantize cost
	// model, so it is accepted and has no effect here. A bare config may carry the
	// name of the quant_recipe.json form too.
	known := []string{"quant_cfg", "algorithm", "effective_bits"}
	if section == "" {
		known = append(known, "name", "metadata", "quantize", "config")
	}
	if err := checkKeys(cfg, "recipe", section, known...); err != nil {
		return nil, err
	}
	alg, err := normalizeAlgorithm(cfg["algorithm"])
	if err != nil {
		return nil, err
	}
	r.Algorithm = alg
	list, ok := cfg["quant_cfg"].([]any)
	if !ok && cfg["quant_cfg"] != nil {
		return nil, fmt.Errorf("%w: quant_cfg is a %T, want a list of rules", ErrRecipe, cfg["quant_cfg"])
	}
	for i, e := range list {
		m, ok := e.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("%w: quant_cfg[%d] is a %T", ErrRecipe, i, e)
		}
		rule, err := ruleFromMap(m)
		if err != nil {
			return nil, fmt.Errorf("%w: quant_cfg[%d]: %w", ErrRecipe, i, err)
		}
		r.Rules = append(r.Rules, rule)
	}
	return r, nil
}

func normalizeAlgorithm(v any) (any, error) {
	switch a := v.(type) {
	case nil:
		return nil, nil
	case string:
		return a, nil
	case map[string]any:
		out := make(map[string]any, len(a))
		for k, x := range a {
			if n, ok := x.(json.Number); ok {
				if i, err := n.Int64(); err == nil && !strings.ContainsAny(string(n), ".eE") {
					out[k] = i
				} else {
					f, _ := n.Float64()
					out[k] = f
				}
				continue
			}
			out[k] = x
		}
		return out, nil
	}
	return nil, fmt.Errorf("%w: algorithm is a %T", ErrRecipe, v)
}

func ruleFromMap(m map[string]any) (Rule, error) {
	var r Rule
	for k, v := range m {
		switch k {
		case "quantizer_name":
			s, ok := v.(string)
			if !ok {
				return r, fmt.Errorf("quantizer_name is a %T", v)
			}
			r.QuantizerName = s
		case "parent_class":
			if v != nil {
				s, ok := v.(string)
				if !ok {
					return r, fmt.Errorf("parent_class is a %T", v)
				}
				r.ParentClass = s
			}
		case "enable":
			b, ok := v.(bool)
			if !ok {
				return r, fmt.Errorf("enable is a %T", v)
			}
			r.Enable = &b
		case "cfg":
			switch c := v.(type) {
			case nil:
			case map[string]any:
				a, err := attributesFromMap(c)
				if err != nil {
					return r, err
				}
				r.Cfg = []Attributes{a}
			case []any:
				r.CfgList = true
				r.Cfg = []Attributes{}
				for _, e := range c {
					em, ok := e.(map[string]any)
					if !ok {
						return r, fmt.Errorf("cfg list element is a %T", e)
					}
					a, err := attributesFromMap(em)
					if err != nil {
						return r, err
					}
					r.Cfg = append(r.Cfg, a)
				}
			default:
				return r, fmt.Errorf("cfg is a %T", v)
			}
		default:
			return r, unknownKey("rule key", "", k, []string{"quantizer_name", "parent_class", "enable", "cfg"})
		}
	}
	if r.QuantizerName == "" {
		return r, errors.New("rule without quantizer_name")
	}
	if r.Cfg == nil && r.Enable == nil {
		return r, fmt.Errorf("rule %q has neither cfg nor enable", r.QuantizerName)
	}
	return r, nil
}

func anyInt(v any) (int, bool) {
	switch n := v.(type) {
	case int:
		return n, true
	case int64:
		return int(n), true
	case json.Number:
		i, err := n.Int64()
		return int(i), err == nil
	case float64:
		if n == float64(int(n)) {
			return int(n), true
		}
	}
	return 0, false
}

func anyFloat(v any) (float64, bool) {
	switch n := v.(type) {
	case int:
		return float64(n), true
	case int64:
		return float64(n), true
	case json.Number:
		f, err := n.Float64()
		return f, err == nil
	case float64:
		return n, true
	}
	return 0, false
}

func numBitsFromAny(v any) (quant.NumBits, error) {
	if n, ok := anyInt(v); ok {
		return quant.NumBits{M: n}, nil
	}
	if s, ok := v.(string); ok {
		if e, m, ok := parseExMy(s); ok {
			return quant.NumBits{E: e, M: m}, nil
		}
	}
	if l, ok := v.([]any); ok && len(l) == 2 {
		e, ok1 := anyInt(l[0])
		m, ok2 := anyInt(l[1])
		if ok1 && ok2 {
			return quant.NumBits{E: e, M: m}, nil
		}
	}
	return quant.NumBits{}, fmt.Errorf("num_bits %v is not an int, [E, M] or a format name", v)
}

func blockDictFromAny(v any) (*quant.BlockSizes, error) {
	m, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("block_sizes is a %T", v)
	}
	bs := &quant.BlockSizes{Dims: map[int]int{}}
	for k, x := range m {
		switch k {
		case "type":
			if x != nil {
				s, ok := x.(string)
				if !ok {
					return nil, fmt.Errorf("block_sizes type is a %T", x)
				}
				bs.Type = s
			}
		case "scale_bits":
			if x != nil {
				nb, err := numBitsFromAny(x)
				if err != nil {
					return nil, fmt.Errorf("block_sizes scale_bits: %w", err)
				}
				bs.ScaleBits = &nb
			}
		case "four_over_six":
			b, ok := x.(bool)
			if !ok {
				return nil, fmt.Errorf("block_sizes four_over_six is a %T", x)
			}
			bs.FourOverSix = b
		default:
			ax, err := strconv.Atoi(strings.TrimSpace(k))
			if err != nil {
				return nil, fmt.Errorf("block_sizes key %q", k)
			}
			if x == nil {
				bs.Dims[ax] = 0
				continue
			}
			n, ok := anyInt(x)
			if !ok || n <= 0 {
				return nil, fmt.Errorf("block_sizes[%d] = %v", ax, x)
			}
			bs.Dims[ax] = n
		}
	}
	return bs, nil
}

func attributesFromMap(m map[string]any) (Attributes, error) {
	var a Attributes
	for k, v := range m {
		var err error
		switch k {
		case "num_bits":
			var nb quant.NumBits
			nb, err = numBitsFromAny(v)
			a.NumBits = &nb
		case "axis":
			a.Axis = &Axis{}
			switch x := v.(type) {
			case nil:
			case []any:
				a.Axis.Tuple = true
				for _, e := range x {
					n, ok := anyInt(e)
					if !ok {
						return a, fmt.Errorf("axis element %v", e)
					}
					a.Axis.Values = append(a.Axis.Values, n)
				}
			default:
				n, ok := anyInt(v)
				if !ok {
					return a, fmt.Errorf("axis %v", v)
				}
				a.Axis.Values = []int{n}
			}
		case "block_sizes":
			a.BlockSizesSet = true
			if v != nil {
				a.BlockSizes, err = blockDictFromAny(v)
			}
		case "type":
			s, ok := v.(string)
			if !ok || (s != "static" && s != "dynamic") {
				return a, fmt.Errorf("type %v (want static or dynamic)", v)
			}
			a.Type = s
		case "effective_bits":
			if v != nil {
				f, ok := anyFloat(v)
				if !ok {
					return a, fmt.Errorf("effective_bits %v", v)
				}
				a.EffectiveBits = &f
			}
		case "fake_quant", "unsigned", "narrow_range":
			b, ok := v.(bool)
			if !ok {
				return a, fmt.Errorf("%s is a %T", k, v)
			}
			switch k {
			case "fake_quant":
				a.FakeQuant = &b
			case "unsigned":
				a.Unsigned = &b
			default:
				a.NarrowRange = &b
			}
		case "bias":
			if v != nil {
				a.Bias, err = blockDictFromAny(v)
			}
		case "use_constant_amax":
			b, ok := v.(bool)
			if !ok {
				return a, fmt.Errorf("use_constant_amax is a %T", v)
			}
			a.UseConstantAmax = &b
		case "constant_amax":
			if v != nil {
				f, ok := anyFloat(v)
				if !ok || !(f > 0) || math.IsInf(f, 0) {
					return a, fmt.Errorf("constant_amax %v (QuantizerAttributeConfig: a positive value)", v)
				}
				a.ConstantAmax = &f
			}
		case "enable":
			// An "enable" inside cfg is what ModelOpt's normalized form carries; the
			// rule's own enable decides, so it is accepted and ignored here.
		default:
			// Attributes that do not change what is exported (calibrator, learn_amax,
			// trt_high_precision_dtype, rotate, backend, ...) are not modelled; refusing
			// them would reject ModelOpt's own normalized configs.
			if !ignoredAttribute[k] {
				return a, unknownKey("quantizer attribute", "", k, append(slices.Sorted(maps.Keys(ignoredAttribute)), quantizerAttributes...))
			}
		}
		if err != nil {
			return a, err
		}
	}
	if a.UseConstantAmax != nil && *a.UseConstantAmax && a.ConstantAmax != nil {
		return a, fmt.Errorf("use_constant_amax and constant_amax are mutually exclusive; set only one")
	}
	return a, nil
}

// quantizerAttributes are the attributes attributesFromMap reads.
var quantizerAttributes = []string{"num_bits", "axis", "block_sizes", "type", "effective_bits", "fake_quant", "unsigned", "narrow_range", "bias", "use_constant_amax", "constant_amax", "enable"}

// checkKeys refuses the first key of m (in sorted order) that is not among known,
// naming it (prefix is where m is, as "quantize.") and the known key closest to it.
func checkKeys(m map[string]any, what, prefix string, known ...string) error {
	for _, k := range slices.Sorted(maps.Keys(m)) {
		if !slices.Contains(known, k) {
			return fmt.Errorf("%w: %w", ErrRecipe, unknownKey(what+" key", prefix, k, known))
		}
	}
	return nil
}

// unknownKey is the error for a key that is not known: it names the key and, when
// one is close enough to be a misspelling (edit distance at most a third of its
// length, and at most 3), the known key meant.
func unknownKey(what, prefix, key string, known []string) error {
	best, dist := "", 4
	for _, k := range known {
		if d := editDistance(strings.ToLower(key), k); d < dist && d <= max(1, len(k)/3) {
			best, dist = k, d
		}
	}
	sorted := slices.Sorted(slices.Values(known))
	if best != "" {
		return fmt.Errorf("unknown %s %q: did you mean %q? (known: %s)", what, prefix+key, prefix+best, strings.Join(sorted, ", "))
	}
	return fmt.Errorf("unknown %s %q (known: %s)", what, prefix+key, strings.Join(sorted, ", "))
}

// editDistance is the Levenshtein distance of a and b (bytes).
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			c := prev[j-1]
			if a[i-1] != b[j-1] {
				c++
			}
			cur[j] = min(c, prev[j]+1, cur[j-1]+1)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

var ignoredAttribute = map[string]bool{
	"learn_amax": true, "trt_high_precision_dtype": true, "calibrator": true, "rotate": true,
	"pass_through_bwd": true, "backend": true, "backend_extra_args": true,
}
