package modelopt

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// maxYAMLBytes bounds one recipe file; real ones are a few KB.
const maxYAMLBytes = 1 << 20

// maxImportDepth bounds nested imports (and so stops an import cycle).
const maxImportDepth = 16

// ReadRecipeYAML reads a ModelOpt recipe in the modelopt_recipes YAML form: a dict with
// quant_cfg and algorithm (configs/ptq/presets/…), or with them under "quantize"
// (general/ptq/…, which also carry metadata). "imports" maps names to other configs,
// and "$import: name" splices an imported rule list into quant_cfg, appends an imported
// rule, or merges an imported attribute dict into a cfg (inline keys win). An import
// path is looked up as a file (as given, then next to the importing file, with .yaml or
// .yml added when missing) and then among the built-in ModelOpt configs this package
// restates ("configs/numerics/fp8", "configs/ptq/units/default_disabled_quantizers",
// "configs/ptq/presets/model/nvfp4", ...). num_bits and scale_bits accept "eXmY" names.
func ReadRecipeYAML(path string) (*Recipe, error) {
	doc, err := loadYAMLConfig(path, 0)
	if err != nil {
		return nil, err
	}
	top, ok := doc.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("%w: %s: a recipe is a mapping, not a %T", ErrRecipe, path, doc)
	}
	r, err := recipeFromMap(top)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if r.Name == "" {
		r.Name = strings.TrimSuffix(strings.TrimSuffix(filepath.Base(path), ".yaml"), ".yml")
	}
	return r, nil
}

// loadYAMLConfig reads a YAML config and resolves its imports: the result is a tree of
// map[string]any, []any and scalars with no "imports" and no "$import" left.
func loadYAMLConfig(path string, depth int) (any, error) {
	if depth > maxImportDepth {
		return nil, fmt.Errorf("%w: %s: imports nested deeper than %d (a cycle?)", ErrRecipe, path, maxImportDepth)
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxYAMLBytes+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxYAMLBytes {
		return nil, fmt.Errorf("%w: %s is larger than %d bytes", ErrRecipe, path, maxYAMLBytes)
	}
	var docs []any
	dec := yaml.NewDecoder(bytes.NewReader(b))
	for {
		var d any
		err := dec.Decode(&d)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %v", ErrRecipe, path, err)
		}
		docs = append(docs, d)
		if len(docs) > 2 {
			return nil, fmt.Errorf("%w: %s has more than two YAML documents", ErrRecipe, path)
		}
	}
	var imports any
	var body any
	switch len(docs) {
	case 0:
		return nil, fmt.Errorf("%w: %s is empty", ErrRecipe, path)
	case 1:
		body = normalizeYAML(docs[0])
		if m, ok := body.(map[string]any); ok {
			imports = m["imports"]
			delete(m, "imports")
		}
	case 2:
		// A header document declares the imports of a list body.
		head, ok := normalizeYAML(docs[0]).(map[string]any)
		if !ok {
			return nil, fmt.Errorf("%w: %s: first document is not a mapping", ErrRecipe, path)
		}
		imports, body = head["imports"], normalizeYAML(docs[1])
	}
	names := map[string]any{}
	if imports != nil {
		im, ok := imports.(map[string]any)
		if !ok {
			return nil, fmt.Errorf("%w: %s: imports is a %T, want a mapping", ErrRecipe, path, imports)
		}
		for name, p := range im {
			ps, ok := p.(string)
			if !ok {
				return nil, fmt.Errorf("%w: %s: import %q is a %T", ErrRecipe, path, name, p)
			}
			v, err := loadImport(ps, filepath.Dir(path), depth+1)
			if err != nil {
				return nil, fmt.Errorf("%s: import %q: %w", path, name, err)
			}
			names[name] = v
		}
	}
	out, err := resolveImports(body, names)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return out, nil
}

func loadImport(p, dir string, depth int) (any, error) {
	var candidates []string
	for _, base := range []string{p, filepath.Join(dir, p)} {
		if strings.HasSuffix(base, ".yaml") || strings.HasSuffix(base, ".yml") {
			candidates = append(candidates, base)
		} else {
			candidates = append(candidates, base+".yml", base+".yaml")
		}
	}
	for _, c := range candidates {
		if st, err := os.Stat(c); err == nil && !st.IsDir() {
			return loadYAMLConfig(c, depth)
		}
	}
	key := strings.TrimSuffix(strings.TrimSuffix(p, ".yaml"), ".yml")
	if v, ok, err := builtinConfig(key); ok {
		return v, err
	}
	return nil, fmt.Errorf("%w: config %q is neither a file nor a built-in ModelOpt config", ErrRecipe, p)
}

// normalizeYAML turns yaml.v3's map[any]any (block_sizes have int keys) into
// map[string]any with the keys written as decimal strings, as JSON would have them.
func normalizeYAML(v any) any {
	switch t := v.(type) {
	case map[string]any:
		for k, e := range t {
			t[k] = normalizeYAML(e)
		}
		return t
	case map[any]any:
		out := make(map[string]any, len(t))
		for k, e := range t {
			out[fmt.Sprint(k)] = normalizeYAML(e)
		}
		return out
	case []any:
		for i, e := range t {
			t[i] = normalizeYAML(e)
		}
		return t
	}
	return v
}

const importKey = "$import"

// resolveImports replaces "$import" markers: in a list, a sole {$import: name} splices
// a list or appends a mapping; in a mapping, the imported mapping(s) are merged under
// the inline keys.
func resolveImports(v any, names map[string]any) (any, error) {
	lookup := func(ref any) (any, error) {
		s, ok := ref.(string)
		if !ok {
			return nil, fmt.Errorf("%w: $import of a %T", ErrRecipe, ref)
		}
		x, ok := names[s]
		if !ok {
			return nil, fmt.Errorf("%w: unknown $import %q", ErrRecipe, s)
		}
		return deepCopy(x), nil
	}
	switch t := v.(type) {
	case map[string]any:
		ref, ok := t[importKey]
		if !ok {
			for k, e := range t {
				r, err := resolveImports(e, names)
				if err != nil {
					return nil, err
				}
				t[k] = r
			}
			return t, nil
		}
		refs := []any{ref}
		if l, ok := ref.([]any); ok {
			refs = l
		}
		merged := map[string]any{}
		for _, r := range refs {
			x, err := lookup(r)
			if err != nil {
				return nil, err
			}
			m, ok := x.(map[string]any)
			if !ok {
				return nil, fmt.Errorf("%w: $import %v in a mapping is a %T, want a mapping", ErrRecipe, r, x)
			}
			for k, e := range m {
				merged[k] = e
			}
		}
		for k, e := range t {
			if k != importKey {
				merged[k] = e
			}
		}
		return resolveImports(merged, names)
	case []any:
		var out []any
		for _, e := range t {
			if m, ok := e.(map[string]any); ok && len(m) == 1 && m[importKey] != nil {
				x, err := lookup(m[importKey])
				if err != nil {
					return nil, err
				}
				if l, ok := x.([]any); ok {
					out = append(out, l...)
				} else {
					out = append(out, x)
				}
				continue
			}
			r, err := resolveImports(e, names)
			if err != nil {
				return nil, err
			}
			out = append(out, r)
		}
		return out, nil
	}
	return v, nil
}

func deepCopy(v any) any {
	switch t := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(t))
		for k, e := range t {
			out[k] = deepCopy(e)
		}
		return out
	case []any:
		out := make([]any, len(t))
		for i, e := range t {
			out[i] = deepCopy(e)
		}
		return out
	}
	return v
}

var exmyRE = regexp.MustCompile(`^[eE](\d+)[mM](\d+)$`)

// parseExMy reads a format name "e4m3" as (4, 3).
func parseExMy(s string) (int, int, bool) {
	m := exmyRE.FindStringSubmatch(s)
	if m == nil {
		return 0, 0, false
	}
	e, err1 := strconv.Atoi(m[1])
	mm, err2 := strconv.Atoi(m[2])
	return e, mm, err1 == nil && err2 == nil
}

// asTree converts a value built by this package to the generic form YAML decodes to.
func asTree(v json.Marshaler) (any, error) {
	b, err := v.MarshalJSON()
	if err != nil {
		return nil, err
	}
	var out any
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	if err := d.Decode(&out); err != nil {
		return nil, err
	}
	return out, nil
}

type attrJSON Attributes

func (a attrJSON) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	Attributes(a).writeJSON(&b)
	return b.Bytes(), nil
}

type rulesJSON []Rule

func (rs rulesJSON) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	b.WriteByte('[')
	for i, r := range rs {
		if i > 0 {
			b.WriteString(", ")
		}
		r.writeJSON(&b)
	}
	b.WriteByte(']')
	return b.Bytes(), nil
}

// presetPaths maps the modelopt_recipes path of each preset this package restates to
// its mtq name.
var presetPaths = map[string]string{
	"configs/ptq/presets/model/fp8":                          "FP8_DEFAULT_CFG",
	"configs/ptq/presets/model/fp8_per_channel_per_token":    "FP8_PER_CHANNEL_PER_TOKEN_CFG",
	"configs/ptq/presets/model/fp8_2d_blockwise_weight_only": "FP8_2D_BLOCKWISE_WEIGHT_ONLY_CFG",
	"configs/ptq/presets/model/int8":                         "INT8_DEFAULT_CFG",
	"configs/ptq/presets/model/int8_smoothquant":             "INT8_SMOOTHQUANT_CFG",
	"configs/ptq/presets/model/int8_weight_only":             "INT8_WEIGHT_ONLY_CFG",
	"configs/ptq/presets/model/int4_awq":                     "INT4_AWQ_CFG",
	"configs/ptq/presets/model/int4_blockwise_weight_only":   "INT4_BLOCKWISE_WEIGHT_ONLY_CFG",
	"configs/ptq/presets/model/w4a8_awq_beta":                "W4A8_AWQ_BETA_CFG",
	"configs/ptq/presets/model/nvfp4":                        "NVFP4_DEFAULT_CFG",
	"configs/ptq/presets/model/nvfp4_awq_lite":               "NVFP4_AWQ_LITE_CFG",
	"configs/ptq/presets/model/w4a16_nvfp4":                  "W4A16_NVFP4_CFG",
	"configs/ptq/presets/model/w4a8_nvfp4_fp8":               "W4A8_NVFP4_FP8_CFG",
	"configs/ptq/presets/model/mxfp4":                        "MXFP4_DEFAULT_CFG",
	"configs/ptq/presets/model/w4a8_mxfp4_fp8":               "W4A8_MXFP4_FP8_CFG",
	"configs/ptq/presets/model/mxfp8":                        "MXFP8_DEFAULT_CFG",
	"configs/ptq/presets/kv/fp8":                             "FP8_KV_CFG",
	"configs/ptq/presets/kv/fp8_affine":                      "FP8_AFFINE_KV_CFG",
	"configs/ptq/presets/kv/nvfp4":                           "NVFP4_KV_CFG",
	"configs/ptq/presets/kv/nvfp4_affine":                    "NVFP4_AFFINE_KV_CFG",
	"configs/ptq/presets/kv/fp8_cast":                        "fp8_cast",
	"configs/ptq/presets/kv/nvfp4_cast":                      "nvfp4_cast",
}

var builtinNumerics = map[string]func() Attributes{
	"fp8": numFP8, "int8": numInt8, "int8_per_channel": numInt8PerChannel,
	"int4_per_block": numInt4PerBlock, "nvfp4": numNVFP4, "nvfp4_bs32": numNVFP4BS32,
	"mxfp4": numMXFP4, "mxfp8": numMXFP8, "nvfp4_static": numNVFP4Static,
}

var builtinUnits = map[string]func() []Rule{
	"base_disable_all":            baseDisableAll,
	"default_disabled_quantizers": defaultDisabled,
	"w4a4_nvfp4_nvfp4":            func() []Rule { return weightAndInput(numNVFP4(), numNVFP4()) },
	"w4_nvfp4":                    func() []Rule { return []Rule{cfgRule("*weight_quantizer", numNVFP4())} },
	"w8a8_fp8_fp8":                func() []Rule { return weightAndInput(numFP8(), numFP8()) },
	"kv_fp8":                      func() []Rule { return kvRules(numFP8(), false) },
	"kv_fp8_affine":               func() []Rule { return kvRules(numFP8(), true) },
	"kv_nvfp4":                    func() []Rule { return kvRules(numNVFP4(), false) },
	"kv_nvfp4_affine":             func() []Rule { return kvRules(numNVFP4(), true) },
	"kv_fp8_cast":                 func() []Rule { return kvCastRules(numFP8()) },
	"kv_nvfp4_cast":               func() []Rule { return kvCastRules(numNVFP4()) },
}

// builtinConfig returns a ModelOpt built-in config by its modelopt_recipes path, in the
// generic tree form, from this package's own restatement of those configs.
func builtinConfig(key string) (any, bool, error) {
	if f, ok := builtinNumerics[strings.TrimPrefix(key, "configs/numerics/")]; ok && strings.HasPrefix(key, "configs/numerics/") {
		v, err := asTree(attrJSON(f()))
		return v, true, err
	}
	if f, ok := builtinUnits[strings.TrimPrefix(key, "configs/ptq/units/")]; ok && strings.HasPrefix(key, "configs/ptq/units/") {
		v, err := asTree(rulesJSON(f()))
		return v, true, err
	}
	if name, ok := presetPaths[key]; ok {
		v, err := asTree(presets[name]())
		if err != nil {
			return nil, true, err
		}
		cfg := v.(map[string]any)["config"].(map[string]any)
		if kvPresets[name] {
			delete(cfg, "algorithm") // KV presets set no algorithm
		}
		return cfg, true, nil
	}
	return nil, false, nil
}
