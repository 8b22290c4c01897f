package parity

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/quantstream/quantstream/arrowio"
	"github.com/quantstream/quantstream/quant"
)

// Outcome is the verdict on one case.
type Outcome struct {
	ID, Function, Format string
	Err                  error // nil: passed
}

func (o Outcome) String() string {
	if o.Err == nil {
		return fmt.Sprintf("PASS %s %s %s", o.ID, o.Function, o.Format)
	}
	return fmt.Sprintf("FAIL %s %s %s: %v", o.ID, o.Function, o.Format, o.Err)
}

// Options select what Run runs.
type Options struct {
	Group string // "unit", "modules", "e2e" or "" for all
	Match string // substring of the case id, "" for all
	// TempDir is where e2e outputs are written (a fresh subdirectory per case).
	TempDir string
}

// Run runs every selected case of m, writes one line per case to w and returns the
// outcomes. A case with no handler fails.
func Run(ctx context.Context, m *Manifest, opt Options, w io.Writer) []Outcome {
	var out []Outcome
	emit := func(o Outcome) {
		out = append(out, o)
		if w != nil {
			fmt.Fprintln(w, o)
		}
	}
	for _, c := range m.Cases {
		if ctx.Err() != nil {
			break
		}
		if (opt.Group != "" && c.Group != opt.Group) || !strings.Contains(c.ID, opt.Match) {
			continue
		}
		emit(Outcome{ID: c.ID, Function: c.Function, Format: c.Format, Err: RunCase(c)})
	}
	if opt.Group == "" || opt.Group == "e2e" {
		for _, e := range m.E2E {
			if ctx.Err() != nil {
				break
			}
			if !strings.Contains(e.ID, opt.Match) {
				continue
			}
			for _, v := range e.Variants() {
				id := e.ID
				if v != VariantState && v != VariantDataFree {
					id += "@" + string(v)
				}
				emit(Outcome{ID: id, Function: e.Function, Format: e.Format, Err: RunE2E(ctx, e, v, opt.TempDir)})
			}
		}
		for _, e := range m.Dequantize {
			if ctx.Err() == nil && strings.Contains(e.ID, opt.Match) {
				emit(Outcome{ID: e.ID, Function: e.Function, Format: "dequantize", Err: RunE2E(ctx, e, VariantCLI, opt.TempDir)})
			}
		}
		for _, e := range m.ExpectError {
			for _, v := range []Variant{VariantCLI, VariantCLIDequantize} {
				if ctx.Err() == nil && strings.Contains(e.ID, opt.Match) {
					emit(Outcome{ID: e.ID + "@" + string(v), Function: "refuse", Format: e.Source, Err: RunRefusal(ctx, e, v, opt.TempDir)})
				}
			}
		}
	}
	return out
}

// RunRefusal runs an ExpectError case as variant v: the conversion must fail,
// leave no output directory, and its message must name the source's quantization
// (source_status.<source>.source.quantization_config.quant_method, or the source's
// kind when there is none), so that a hidden manifest's other quantizations are
// checked the same way.
func RunRefusal(ctx context.Context, e *E2ECase, v Variant, tempDir string) error {
	if e2eRunner == nil {
		return fmt.Errorf("%w for end-to-end cases", ErrNoHandler)
	}
	word, err := e.quantizationName()
	if err != nil {
		return err
	}
	base, err := os.MkdirTemp(tempDir, "parity-refuse-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(base)
	out := filepath.Join(base, "out")
	err = e2eRunner(ctx, e, v, out)
	if err == nil {
		return fmt.Errorf("the conversion succeeded; it must refuse the source (%s)", word)
	}
	if errors.Is(err, ErrNoHandler) {
		return err
	}
	if !strings.Contains(err.Error(), word) {
		return fmt.Errorf("refused, but the message does not name %q: %v", word, err)
	}
	if _, serr := os.Stat(out); !os.IsNotExist(serr) {
		return fmt.Errorf("refused (%v), but %s exists", err, out)
	}
	return nil
}

// quantizationName is the word a refusal of the case's source must contain.
func (e *E2ECase) quantizationName() (string, error) {
	raw, ok := e.m.SourceStatus[e.Source]
	if !ok {
		return "", fmt.Errorf("parity: case %s: source %q is not in source_status", e.ID, e.Source)
	}
	var st struct {
		Kind   string `json:"kind"`
		Source struct {
			QC struct {
				Method string `json:"quant_method"`
			} `json:"quantization_config"`
		} `json:"source"`
	}
	if err := json.Unmarshal(raw, &st); err != nil {
		return "", fmt.Errorf("parity: case %s: source_status.%s: %w", e.ID, e.Source, err)
	}
	if w := st.Source.QC.Method; w != "" {
		return w, nil
	}
	if st.Kind == "" {
		return "", fmt.Errorf("parity: case %s: source_status.%s names no quantization", e.ID, e.Source)
	}
	return st.Kind, nil
}

// Summary is the closing line: "N passed, M failed".
func Summary(outcomes []Outcome) string {
	failed := 0
	for _, o := range outcomes {
		if o.Err != nil {
			failed++
		}
	}
	return fmt.Sprintf("%d passed, %d failed", len(outcomes)-failed, failed)
}

// RunCase runs one tensor case and compares its results. It recovers a handler panic
// into a failure so one bad case does not stop the run.
func RunCase(c *Case) (err error) {
	h, ok := lookup(c.Function)
	if !ok {
		return fmt.Errorf("%w for function %q format %q", ErrNoHandler, c.Function, c.Format)
	}
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("handler panic: %v", r)
		}
	}()
	res, herr := h(c)
	if exc, msg, raises := c.Raises(); raises {
		if herr == nil {
			return fmt.Errorf("reference raised %s (%s); we returned no error", exc, msg)
		}
		return nil
	}
	if herr != nil {
		return herr
	}
	if res == nil {
		return errors.New("handler returned no result")
	}
	roles := make([]string, 0, len(c.Outputs))
	for r := range c.Outputs {
		roles = append(roles, r)
	}
	sort.Strings(roles)
	for _, role := range roles {
		spec := c.Compare[role]
		if spec.Mode != "" && spec.Mode != "exact" {
			return fmt.Errorf("output %q: compare mode %q not supported", role, spec.Mode)
		}
		got := res.Tensors[role]
		if got == nil {
			return fmt.Errorf("output %q: not produced", role)
		}
		want, err := c.Want(role)
		if err != nil {
			return err
		}
		if err := CompareExact(*got, want); err != nil {
			return fmt.Errorf("output %q: %v", role, err)
		}
	}
	for key, raw := range c.Expected {
		switch key {
		case "raises", "message":
			continue
		case "none_outputs":
			var none []string
			json.Unmarshal(raw, &none)
			for _, role := range none {
				if t, ok := res.Tensors[role]; !ok || t != nil {
					return fmt.Errorf("output %q: reference returned None; we returned %v", role, describe(t, ok))
				}
			}
			continue
		}
		got, ok := res.Values[key]
		if !ok {
			return fmt.Errorf("expected %q: not produced", key)
		}
		var want any
		json.Unmarshal(raw, &want)
		if err := ValuesEqual(got, want, []string{"producer"}, nil); err != nil {
			return fmt.Errorf("expected %q: %v", key, err)
		}
	}
	return nil
}

func describe(t *quant.Tensor, present bool) string {
	if !present {
		return "nothing (the handler must say None explicitly)"
	}
	return fmt.Sprintf("%v %v", t.DType, t.Shape)
}

// Variant is one way to feed an end-to-end case.
type Variant string

const (
	VariantState    Variant = "state"    // base weights + quant_state.safetensors + quantizers.json
	VariantSaved    Variant = "saved"    // a save_pretrained folder with modelopt_state.pth
	VariantDataFree Variant = "datafree" // a plain checkpoint and a recipe name
	// VariantCLI converts with the case's own CLI arguments (Dequantize and
	// ExpectError cases); VariantCLIDequantize with them and --dequantize instead
	// of any --recipe / --kv-cache (an ExpectError case must be refused both ways).
	VariantCLI           Variant = "cli"
	VariantCLIDequantize Variant = "cli-dequantize"
)

// E2ECase is one end-to-end checkpoint case.
type E2ECase struct {
	ID              string                 `json:"id"`
	Function        string                 `json:"function"`
	Format          string                 `json:"format"`
	KVCacheFormat   *string                `json:"kv_cache_format"`
	Recipe          string                 `json:"recipe"`
	DataFree        bool                   `json:"data_free"`
	InputShards     []string               `json:"input_shards"`
	InputDir        string                 `json:"input_dir"`
	ExpectedDir     string                 `json:"expected_dir"`
	SavedDir        string                 `json:"saved_dir"`
	SavedDecoded    string                 `json:"saved_decoded"`
	RecipeFile      string                 `json:"recipe_file"`
	QuantizersFile  string                 `json:"quantizers_file"`
	Compare         map[string]CompareSpec `json:"compare"`
	ExpectedTensors map[string][]any       `json:"expected_tensors"`
	// Source names the case's source in the manifest's source_status, and CLI
	// holds the converter's arguments without --out (Dequantize and ExpectError
	// cases).
	Source string   `json:"source"`
	CLI    []string `json:"cli"`

	m *Manifest
}

// Path resolves a manifest-relative path.
func (e *E2ECase) Path(rel string) string { return filepath.Join(e.m.Dir, rel) }

// Variants lists the ways this case can be fed.
func (e *E2ECase) Variants() []Variant {
	if e.DataFree {
		return []Variant{VariantDataFree}
	}
	v := []Variant{VariantState}
	if e.SavedDir != "" {
		v = append(v, VariantSaved)
	}
	return v
}

// E2ERunner converts the inputs of an end-to-end case (as variant v) into outDir,
// which does not exist yet. The CLI's convert command is the production runner.
type E2ERunner func(ctx context.Context, e *E2ECase, v Variant, outDir string) error

var e2eRunner E2ERunner

// SetE2ERunner installs the converter used for e2e cases.
func SetE2ERunner(r E2ERunner) { e2eRunner = r }

// RunE2E converts one case and compares the output directory with expected_dir.
func RunE2E(ctx context.Context, e *E2ECase, v Variant, tempDir string) error {
	if e2eRunner == nil {
		return fmt.Errorf("%w for end-to-end cases", ErrNoHandler)
	}
	base, err := os.MkdirTemp(tempDir, "parity-e2e-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(base)
	out := filepath.Join(base, "out")
	if err := e2eRunner(ctx, e, v, out); err != nil {
		return err
	}
	return CompareCheckpointDirs(out, e.Path(e.ExpectedDir), e.Compare)
}

// CompareCheckpointDirs compares an exported directory with the expected one:
// every tensor (same key set, identical bytes) and the JSON files by their specs.
func CompareCheckpointDirs(got, want string, specs map[string]CompareSpec) error {
	names := make([]string, 0, len(specs))
	for n := range specs {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		spec := specs[name]
		switch {
		case strings.HasSuffix(name, ".safetensors"):
			if err := compareTensors(got, want); err != nil {
				return err
			}
		case spec.Mode == "json":
			g, err := os.ReadFile(filepath.Join(got, name))
			if err != nil {
				return err
			}
			w, err := os.ReadFile(filepath.Join(want, name))
			if err != nil {
				return err
			}
			if err := JSONEqual(g, w, spec.Ignore, spec.Only); err != nil {
				return fmt.Errorf("%s: %v", name, err)
			}
		default:
			return fmt.Errorf("%s: compare mode %q not supported", name, spec.Mode)
		}
	}
	return nil
}

func compareTensors(gotDir, wantDir string) error {
	g, err := arrowio.ReadAllTensors(gotDir)
	if err != nil {
		return err
	}
	w, err := arrowio.ReadAllTensors(wantDir)
	if err != nil {
		return err
	}
	return compareTensorSets(g, w)
}

// compareTensorSets compares the tensors of an output with the expected ones, in
// sorted name order so that the error names the same tensor on every run: the first
// expected name missing from got, else the first name got has in excess, else the
// first tensor whose bytes differ.
func compareTensorSets(got, want map[string]quant.Tensor) error {
	keys := slices.Sorted(maps.Keys(want))
	if missing := slices.DeleteFunc(slices.Clone(keys), func(k string) bool { _, ok := got[k]; return ok }); len(missing) > 0 {
		return fmt.Errorf("model.safetensors: tensor %q missing%s", missing[0], andMore(len(missing)))
	}
	if extra := slices.DeleteFunc(slices.Sorted(maps.Keys(got)), func(k string) bool { _, ok := want[k]; return ok }); len(extra) > 0 {
		return fmt.Errorf("model.safetensors: unexpected tensor %q%s", extra[0], andMore(len(extra)))
	}
	for _, k := range keys {
		if err := CompareExact(got[k], want[k]); err != nil {
			return fmt.Errorf("tensor %q: %v", k, err)
		}
	}
	return nil
}

// andMore is " (and N more)" for n > 1 names, else "".
func andMore(n int) string {
	if n <= 1 {
		return ""
	}
	return fmt.Sprintf(" (and %d more)", n-1)
}
