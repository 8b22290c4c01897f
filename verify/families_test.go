package verify_test

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/quantstream/quantstream/arch"
	"github.com/quantstream/quantstream/verify"
)

// TestVerifyFamilies: the fused-group check uses the user's families
// (Options.Families, verify --arch). A llama NVFP4 export under a model type no
// built-in family has, with k_proj's input_scale changed (q/k/v read one input and
// must share it), is only a note without the family, and an error with it.
func TestVerifyFamilies(t *testing.T) {
	src := "../testdata/golden-arch/e2e/llama-nvfp4/expected"
	dir := t.TempDir()
	ents, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		switch e.Name() {
		case "config.json":
			b = bytes.Replace(b, []byte(`"model_type": "llama"`), []byte(`"model_type": "my_llama"`), 1)
			b = bytes.Replace(b, []byte(`"LlamaForCausalLM"`), []byte(`"MyLlamaForCausalLM"`), 1)
		case "model.safetensors":
			setScalar(t, b, "model.layers.0.self_attn.k_proj.input_scale", 0.125)
		}
		if err := os.WriteFile(filepath.Join(dir, e.Name()), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	llama, err := os.ReadFile("../arch/families/llama.json")
	if err != nil {
		t.Fatal(err)
	}
	llama = bytes.Replace(llama, []byte(`"model_types": ["llama"]`), []byte(`"model_types": ["my_llama"]`), 1)
	fam, err := arch.Parse("my_llama.json", llama)
	if err != nil {
		t.Fatal(err)
	}
	reg, err := arch.Builtin().With(fam)
	if err != nil {
		t.Fatal(err)
	}
	mentions := func(r *verify.Report, sev verify.Severity, s string) bool {
		for _, f := range r.Findings {
			if f.Severity == sev && strings.Contains(f.Message, s) {
				return true
			}
		}
		return false
	}
	r, err := verify.Verify(t.Context(), dir, verify.Options{})
	if err != nil {
		t.Fatal(err)
	}
	if !mentions(r, verify.Note, "fused-group check skipped") || mentions(r, verify.Error, "k_proj") {
		t.Fatalf("without the family: %+v", r.Findings)
	}
	r, err = verify.Verify(t.Context(), dir, verify.Options{Families: reg})
	if err != nil {
		t.Fatal(err)
	}
	if r.OK || !mentions(r, verify.Error, "k_proj") || mentions(r, verify.Note, "fused-group check skipped") {
		t.Fatalf("with the family: ok %v, %+v", r.OK, r.Findings)
	}
}

// setScalar overwrites the F32 scalar tensor name in the safetensors bytes b.
func setScalar(t *testing.T, b []byte, name string, v float32) {
	t.Helper()
	n := binary.LittleEndian.Uint64(b)
	var hdr map[string]json.RawMessage
	if err := json.Unmarshal(b[8:8+n], &hdr); err != nil {
		t.Fatal(err)
	}
	var ti struct {
		DType   string  `json:"dtype"`
		Offsets []int64 `json:"data_offsets"`
	}
	if err := json.Unmarshal(hdr[name], &ti); err != nil || ti.DType != "F32" || len(ti.Offsets) != 2 || ti.Offsets[1]-ti.Offsets[0] != 4 {
		t.Fatalf("%s: %s (%v)", name, hdr[name], err)
	}
	binary.LittleEndian.PutUint32(b[8+int64(n)+ti.Offsets[0]:], math.Float32bits(v))
}
