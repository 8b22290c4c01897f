package quantsrc

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"sort"
	"strings"

	"github.com/quantstream/quantstream"
	"github.com/quantstream/quantstream/quant"
)

var (
	// ErrUnsupported marks a source quantized in a way quantstream does not read.
	ErrUnsupported = errors.New("quantsrc: the source's quantization is not supported")
	// ErrInvalid marks a supported quantized source whose tensors contradict its
	// config.json, or each other.
	ErrInvalid = errors.New("quantsrc: the quantized source is inconsistent")
)

// Supported says what quantstream reads, for messages.
const Supported = `quantstream reads block-FP8 sources (quant_method "fp8" with weight_block_size: DeepSeek-V3/R1, Kimi-K2, Qwen3-*-FP8) and gpt-oss MXFP4 experts (quant_method "mxfp4")`

// remedy ends every refusal: what the user can do instead.
const remedy = "dequantize it to BF16 with the tools of its format first, or convert it without --recipe, --kv-cache, calibration state or --dequantize to copy it unchanged"

// Method is a supported source format, named by its quant_method.
type Method string

const (
	FP8Block Method = "fp8"   // block-scaled F8_E4M3 with weight_scale_inv
	MXFP4    Method = "mxfp4" // gpt-oss MXFP4 experts
)

// Scheme is how a supported quantized source stores its weights, checked against
// its tensors (Detect). It is read-only.
type Scheme struct {
	Method Method
	// Key is where config.json holds it: "quantization_config" or
	// "text_config.quantization_config".
	Key string
	// BlockRows, BlockCols are an FP8 source's weight_block_size.
	BlockRows, BlockCols int

	fp8 []fp8Weight
	mx  []mxWeight
	// coded are the block-FP8 weights the view hands on coded rather than decoded
	// (CodeFP8); set before the view is read, read-only afterwards.
	coded map[string]bool
}

// Weights is the number of tensors the scheme decodes.
func (s *Scheme) Weights() int { return len(s.fp8) + len(s.mx) }

type fp8Weight struct {
	weight, scale string
	rows, cols    int
}

type mxWeight struct {
	name, blocks, scales  string
	experts, rows, groups int
}

// Detect says how the checkpoint's weights are stored, from config.json (named
// configName in messages) and the tensor headers alone. It returns nil for a plain
// checkpoint: no quantization_config (at the top or under text_config) and no
// tensor that can only hold quantized data. A supported source comes back as its
// Scheme, validated: every problem is listed in one error wrapping ErrInvalid. Any
// other quantization is refused with ErrUnsupported, naming the quant_method (or
// the tensors) and what is supported — one message for the whole checkpoint.
func Detect(configName string, configJSON []byte, tensors []quantstream.TensorInfo) (*Scheme, error) {
	qc, err := findQuantConfig(configName, configJSON)
	if err != nil {
		return nil, err
	}
	byName := make(map[string]quantstream.TensorInfo, len(tensors))
	for _, t := range tensors {
		byName[t.Name] = t
	}
	if qc == nil {
		if sus := quantizedTensors(tensors, nil); len(sus) > 0 {
			return nil, fmt.Errorf("%w: %s has no quantization_config, but the checkpoint holds tensors that can only be quantized data (%s); %s; %s",
				ErrUnsupported, configName, listSome(sus), Supported, remedy)
		}
		return nil, nil
	}
	switch qc.method {
	case string(FP8Block):
		return detectFP8(qc, byName, tensors)
	case string(MXFP4):
		return detectMXFP4(qc, configJSON, byName, tensors)
	}
	what := fmt.Sprintf("%s.quant_method %q", qc.key, qc.method)
	if qc.method == "" {
		what = fmt.Sprintf("a %s without a quant_method (keys %s)", qc.key, strings.Join(slices.Sorted(maps.Keys(qc.raw)), ", "))
	}
	if f := qc.str("format"); f != "" {
		what += fmt.Sprintf(", format %q", f)
	}
	return nil, fmt.Errorf("%w: %s: the source is quantized (%s), which quantstream does not read; %s; %s",
		ErrUnsupported, qc.where, what, Supported, remedy)
}

// quantConfig is a source's quantization_config.
type quantConfig struct {
	where  string // "<config.json path>"
	key    string // "quantization_config" or "text_config.quantization_config"
	method string
	raw    map[string]json.RawMessage
}

func (q *quantConfig) str(k string) string {
	var s string
	if json.Unmarshal(q.raw[k], &s) != nil {
		return ""
	}
	return s
}

// findQuantConfig reads quantization_config at the top of config.json or under
// text_config (multimodal checkpoints keep it there, as ModelOpt's
// get_original_hf_quant_method knows). Both at once must agree.
func findQuantConfig(name string, configJSON []byte) (*quantConfig, error) {
	if len(configJSON) == 0 {
		return nil, nil
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(configJSON, &top); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrInvalid, name, err)
	}
	var found []*quantConfig
	look := func(m map[string]json.RawMessage, key string) error {
		raw, ok := m["quantization_config"]
		if !ok || string(raw) == "null" {
			return nil
		}
		q := &quantConfig{where: name, key: key}
		if err := json.Unmarshal(raw, &q.raw); err != nil {
			return fmt.Errorf("%w: %s: %s is not an object: %v", ErrInvalid, name, key, err)
		}
		if m, ok := q.raw["quant_method"]; ok {
			if err := json.Unmarshal(m, &q.method); err != nil {
				return fmt.Errorf("%w: %s: %s.quant_method is not a string", ErrInvalid, name, key)
			}
		}
		found = append(found, q)
		return nil
	}
	if err := look(top, "quantization_config"); err != nil {
		return nil, err
	}
	if raw, ok := top["text_config"]; ok && string(raw) != "null" {
		var text map[string]json.RawMessage
		if err := json.Unmarshal(raw, &text); err != nil {
			return nil, fmt.Errorf("%w: %s: text_config is not an object: %v", ErrInvalid, name, err)
		}
		if err := look(text, "text_config.quantization_config"); err != nil {
			return nil, err
		}
	}
	switch len(found) {
	case 0:
		return nil, nil
	case 2:
		if found[0].method != found[1].method {
			return nil, fmt.Errorf("%w: %s: quantization_config says %q and text_config.quantization_config %q", ErrInvalid, name, found[0].method, found[1].method)
		}
	}
	return found[0], nil
}

// quantizedOnlyDTypes can only hold quantized data in a checkpoint.
var quantizedOnlyDTypes = map[quant.DType]bool{
	quant.F8E4M3: true, quant.F8E5M2: true, quant.F8E8M0: true, quant.F4: true, quant.F6E2M3: true, quant.F6E3M2: true,
}

// quantizedSuffixes are the tensor names of the quantized formats transformers
// loads (compressed-tensors, GPTQ/AWQ, bitsandbytes, HQQ, block FP8).
var quantizedSuffixes = []string{
	".weight_packed", ".weight_shape", ".weight_zero_point", ".weight_g_idx", ".qweight", ".qzeros", ".g_idx",
	".scales_zeros", ".weight_scale_inv", ".absmax", ".quant_map", ".nested_absmax", ".nested_quant_map", ".W_q",
}

// quantizedTensors lists, sorted, the tensors (other than those in known) that can
// only be quantized data: a quantized-only dtype, an integer "<m>.weight", a name
// of a quantized format, or an MXFP4 *_blocks / *_scales U8 tensor. Integer
// buffers with other names (position ids and the like) are not among them.
func quantizedTensors(tensors []quantstream.TensorInfo, known map[string]bool) []string {
	var out []string
	for _, t := range tensors {
		if known[t.Name] {
			continue
		}
		n := t.Name
		switch {
		case quantizedOnlyDTypes[t.DType]:
		case strings.HasSuffix(n, ".weight") && isInt(t.DType):
		case (strings.HasSuffix(n, "_blocks") || strings.HasSuffix(n, "_scales")) && t.DType == quant.U8:
		case strings.Contains(n, ".quant_state."):
		case slices.ContainsFunc(quantizedSuffixes, func(s string) bool { return strings.HasSuffix(n, s) }):
		default:
			continue
		}
		out = append(out, fmt.Sprintf("%s %s", n, t.DType))
	}
	sort.Strings(out)
	return out
}

func isInt(d quant.DType) bool {
	switch d {
	case quant.U8, quant.I8, quant.I16, quant.U16, quant.I32, quant.U32, quant.I64, quant.U64:
		return true
	}
	return false
}

// listSome names the first few of items and counts the rest.
func listSome(items []string) string {
	const most = 3
	if len(items) <= most {
		return strings.Join(items, ", ")
	}
	return fmt.Sprintf("%s and %d more", strings.Join(items[:most], ", "), len(items)-most)
}

// notConverted is modules_to_not_convert (alias ignored_layers): module names or
// patterns whose '*' matches any run of characters, matching a module that equals
// the entry or lies below it (transformers' should_convert_module).
type notConverted []*regexp.Regexp

func parseNotConverted(qc *quantConfig) (notConverted, error) {
	var out notConverted
	for _, key := range []string{"modules_to_not_convert", "ignored_layers"} {
		raw, ok := qc.raw[key]
		if !ok || string(raw) == "null" {
			continue
		}
		var list []string
		if err := json.Unmarshal(raw, &list); err != nil {
			return nil, fmt.Errorf("%s.%s is not a list of strings", qc.key, key)
		}
		for _, e := range list {
			pat := strings.ReplaceAll(regexp.QuoteMeta(e), `\*`, `.*`)
			out = append(out, regexp.MustCompile(`^(?:`+pat+`)(?:\..*)?$`))
		}
	}
	return out, nil
}

// has reports whether module lies in a listed module.
func (n notConverted) has(module string) bool {
	for _, re := range n {
		if re.MatchString(module) {
			return true
		}
	}
	return false
}

// checkKeys refuses keys of the quantization_config that the scheme does not
// know: each could change what the stored bytes mean.
func checkKeys(qc *quantConfig, known ...string) error {
	var unknown []string
	for k := range qc.raw {
		if !slices.Contains(known, k) {
			unknown = append(unknown, k)
		}
	}
	if len(unknown) == 0 {
		return nil
	}
	sort.Strings(unknown)
	return fmt.Errorf("%w: %s: %s has keys quantstream does not know for quant_method %q (%s); it reads %s", ErrUnsupported, qc.where, qc.key, qc.method, strings.Join(unknown, ", "), strings.Join(known, ", "))
}
