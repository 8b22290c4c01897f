package parity

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sync"

	"github.com/quantstream/quantstream/arrowio"
	"github.com/quantstream/quantstream/quant"
)

// Schema is the manifest schema this runner reads.
const Schema = "modelopt-export-golden/v1"

// Manifest is a golden manifest.json: tensor cases and end-to-end cases.
type Manifest struct {
	Schema    string            `json:"schema"`
	Set       string            `json:"set"`
	Producer  json.RawMessage   `json:"producer"`
	Cases     []*Case           `json:"cases"`
	E2E       []*E2ECase        `json:"e2e"`
	E2EFailed map[string]string `json:"e2e_failed"`
	// Dequantize and ExpectError are end-to-end cases run from their CLI
	// arguments: a quantized source written as BF16, compared like any e2e case,
	// and a source that must be refused (golden-qsrc).
	Dequantize  []*E2ECase `json:"dequantize"`
	ExpectError []*E2ECase `json:"expect_error"`
	// SourceStatus describes each source checkpoint of the set (golden-qsrc): how
	// it was made, including its quantization_config.
	SourceStatus map[string]json.RawMessage `json:"source_status"`

	// Dir is the directory holding manifest.json; file references are relative to it.
	Dir string `json:"-"`

	mu    sync.Mutex
	files map[string]*arrowio.File
}

// TensorRef names a tensor inside a case's safetensors file.
type TensorRef struct {
	Tensor string  `json:"tensor"`
	DType  string  `json:"dtype"`
	Shape  []int64 `json:"shape"`
}

// CompareSpec is a comparison mode for one output.
type CompareSpec struct {
	Mode   string   `json:"mode"`
	Ignore []string `json:"ignore,omitempty"`
	Only   []string `json:"only,omitempty"`
}

// Case is one tensor case (groups "unit" and "modules").
type Case struct {
	ID       string                     `json:"id"`
	Group    string                     `json:"group"`
	Function string                     `json:"function"`
	Format   string                     `json:"format"`
	File     string                     `json:"file"`
	Params   map[string]json.RawMessage `json:"params"`
	Inputs   map[string]*TensorRef      `json:"inputs"`
	Outputs  map[string]*TensorRef      `json:"outputs"`
	Compare  map[string]CompareSpec     `json:"compare"`
	Expected map[string]json.RawMessage `json:"expected"`
	Notes    string                     `json:"notes"`

	m *Manifest
}

// Load reads dir/manifest.json.
func Load(dir string) (*Manifest, error) {
	b, err := os.ReadFile(filepath.Join(dir, "manifest.json"))
	if err != nil {
		return nil, err
	}
	var m Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("parity: %s: %w", filepath.Join(dir, "manifest.json"), err)
	}
	if m.Schema != Schema {
		return nil, fmt.Errorf("parity: %s: schema %q, want %q", dir, m.Schema, Schema)
	}
	m.Dir = dir
	m.files = map[string]*arrowio.File{}
	for _, c := range m.Cases {
		c.m = &m
	}
	for _, list := range [][]*E2ECase{m.E2E, m.Dequantize, m.ExpectError} {
		for _, e := range list {
			e.m = &m
		}
	}
	return &m, nil
}

// Close closes the data files the manifest opened.
func (m *Manifest) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, f := range m.files {
		f.Close()
	}
	m.files = map[string]*arrowio.File{}
	return nil
}

func (m *Manifest) file(name string) (*arrowio.File, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if f, ok := m.files[name]; ok {
		return f, nil
	}
	f, err := arrowio.Open(filepath.Join(m.Dir, name))
	if err != nil {
		return nil, err
	}
	m.files[name] = f
	return f, nil
}

// Has reports whether the case has a non-null input with this role.
func (c *Case) Has(role string) bool { return c.Inputs[role] != nil }

// Input loads an input tensor; ok is false when the role is absent or null (None).
func (c *Case) Input(role string) (t quant.Tensor, ok bool, err error) {
	ref := c.Inputs[role]
	if ref == nil {
		return quant.Tensor{}, false, nil
	}
	t, err = c.load(ref)
	return t, err == nil, err
}

// MustInput loads an input tensor that the handler requires.
func (c *Case) MustInput(role string) (quant.Tensor, error) {
	t, ok, err := c.Input(role)
	if err != nil {
		return t, err
	}
	if !ok {
		return t, fmt.Errorf("parity: case %s: input %q missing", c.ID, role)
	}
	return t, nil
}

// Want loads an expected output tensor.
func (c *Case) Want(role string) (quant.Tensor, error) {
	ref := c.Outputs[role]
	if ref == nil {
		return quant.Tensor{}, fmt.Errorf("parity: case %s: no output %q", c.ID, role)
	}
	return c.load(ref)
}

func (c *Case) load(ref *TensorRef) (quant.Tensor, error) {
	f, err := c.m.file(c.File)
	if err != nil {
		return quant.Tensor{}, err
	}
	t, err := f.ReadTensor(ref.Tensor)
	if err != nil {
		return quant.Tensor{}, err
	}
	if t.DType.String() != ref.DType || !slices.Equal(t.Shape, ref.Shape) {
		return quant.Tensor{}, fmt.Errorf("parity: case %s: tensor %q is %v %v in %s, manifest says %s %v",
			c.ID, ref.Tensor, t.DType, t.Shape, c.File, ref.DType, ref.Shape)
	}
	return t, nil
}

// Param decodes params[name] into v; it reports false when absent.
func (c *Case) Param(name string, v any) (bool, error) {
	raw, ok := c.Params[name]
	if !ok {
		return false, nil
	}
	if err := json.Unmarshal(raw, v); err != nil {
		return true, fmt.Errorf("parity: case %s: param %q: %w", c.ID, name, err)
	}
	return true, nil
}

// Raises returns the exception the library raised for this case, if any.
func (c *Case) Raises() (exc, msg string, ok bool) {
	raw, has := c.Expected["raises"]
	if !has {
		return "", "", false
	}
	json.Unmarshal(raw, &exc)
	if m, has := c.Expected["message"]; has {
		json.Unmarshal(m, &msg)
	}
	return exc, msg, true
}
