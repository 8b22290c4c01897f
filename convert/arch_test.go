package convert

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/quantstream/quantstream/arch"
)

// renamedLlama copies tiny_llama with config.json naming a model type no built-in
// family covers; the shards are linked, not copied.
func renamedLlama(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	ents, err := os.ReadDir(tinyLlama)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		src, _ := filepath.Abs(filepath.Join(tinyLlama, e.Name()))
		if e.Name() == "config.json" {
			b, err := os.ReadFile(src)
			if err != nil {
				t.Fatal(err)
			}
			b = bytes.Replace(b, []byte(`"model_type": "llama"`), []byte(`"model_type": "my_llama"`), 1)
			b = bytes.Replace(b, []byte(`"LlamaForCausalLM"`), []byte(`"MyLlamaForCausalLM"`), 1)
			if err := os.WriteFile(filepath.Join(dir, e.Name()), b, 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		if err := os.Symlink(src, filepath.Join(dir, e.Name())); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// TestUnknownFamilyRefused: a model no family describes is refused while planning
// (from headers: MakePlan reads no tensor data), saying how to add a family; with a
// family file (--arch) it converts as the family it describes.
func TestUnknownFamilyRefused(t *testing.T) {
	in := renamedLlama(t)
	p, err := MakePlan(t.Context(), Options{Inputs: []string{in}, Recipe: "W4A16_NVFP4_CFG"})
	if err != nil {
		t.Fatal(err)
	}
	if len(p.Problems) != 1 || !strings.Contains(p.Problems[0], "unknown architecture") || !strings.Contains(p.Problems[0], `"my_llama"`) || !strings.Contains(p.Problems[0], "--arch") {
		t.Fatalf("plan problems %q, want the unknown family naming my_llama and --arch", p.Problems)
	}
	out := filepath.Join(t.TempDir(), "out")
	if _, err := Run(t.Context(), Options{Inputs: []string{in}, Recipe: "W4A16_NVFP4_CFG", Out: out}); !errors.Is(err, arch.ErrUnknown) {
		t.Fatalf("run: %v", err)
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Fatalf("output written for a refused model: %v", err)
	}

	llama, err := os.ReadFile("../arch/families/llama.json")
	if err != nil {
		t.Fatal(err)
	}
	fam := filepath.Join(t.TempDir(), "my_llama.json")
	llama = bytes.Replace(llama, []byte(`"model_types": ["llama"]`), []byte(`"model_types": ["my_llama"]`), 1)
	if err := os.WriteFile(fam, llama, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Run(t.Context(), Options{Inputs: []string{in}, Recipe: "W4A16_NVFP4_CFG", Out: out, Arch: []string{fam}}); err != nil {
		t.Fatal(err)
	}
	ref := filepath.Join(t.TempDir(), "ref")
	if _, err := Run(t.Context(), Options{Inputs: []string{tinyLlama}, Recipe: "W4A16_NVFP4_CFG", Out: ref}); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"model.safetensors", "hf_quant_config.json"} {
		a, errA := os.ReadFile(filepath.Join(ref, f))
		b, errB := os.ReadFile(filepath.Join(out, f))
		if errA != nil || errB != nil || !bytes.Equal(a, b) {
			t.Errorf("%s: the family file's conversion differs from the built-in family's (%v, %v)", f, errA, errB)
		}
	}
}

// TestBadFamilyFileRefused: a malformed --arch file is refused before anything is
// converted, naming the file and the key, in every mode (here: a passthrough).
func TestBadFamilyFileRefused(t *testing.T) {
	fam := filepath.Join(t.TempDir(), "bad.json")
	if err := os.WriteFile(fam, []byte(`{"name": "x", "model_types": ["x"], "fusion_rules": []}`), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(t.TempDir(), "out")
	_, err := Run(t.Context(), Options{Inputs: []string{tinyLlama}, Out: out, Arch: []string{fam}})
	if !errors.Is(err, arch.ErrFamily) || !strings.Contains(err.Error(), fam) || !strings.Contains(err.Error(), `"fusion_rules"`) {
		t.Fatalf("got %v, want arch.ErrFamily naming %s and the key", err, fam)
	}
	if _, err := Run(t.Context(), Options{Inputs: []string{tinyLlama}, Out: out, Arch: []string{fam + ".missing"}}); !errors.Is(err, arch.ErrFamily) {
		t.Fatalf("missing file: %v", err)
	}
}
