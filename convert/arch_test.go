package convert

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/quantstream/quantstream"
	"github.com/quantstream/quantstream/arch"
	"github.com/quantstream/quantstream/arrowio"
	"github.com/quantstream/quantstream/internal/testgen"
	"github.com/quantstream/quantstream/quant"
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

// renamedModel copies the checkpoint dir with config.json's model_type and first
// architecture renamed (from → to, fromClass → toClass); the other files are copied
// (a single-file checkpoint is read only from a regular file).
func renamedModel(t *testing.T, dir, from, to, fromClass, toClass string) string {
	t.Helper()
	out := t.TempDir()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		src, _ := filepath.Abs(filepath.Join(dir, e.Name()))
		if e.Name() == "config.json" {
			b, err := os.ReadFile(src)
			if err != nil {
				t.Fatal(err)
			}
			b = bytes.Replace(b, []byte(`"model_type": "`+from+`"`), []byte(`"model_type": "`+to+`"`), 1)
			b = bytes.Replace(b, []byte(`"`+fromClass+`"`), []byte(`"`+toClass+`"`), 1)
			if err := os.WriteFile(filepath.Join(out, e.Name()), b, 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		b, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(out, e.Name()), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// TestDataFreeUsesArchFamily: a data-free conversion derives its quantizers with the
// family of the user's --arch file, not only the built-in ones. gpt_oss under another
// model_type, with a copy of gpt_oss.json, converts exactly as gpt_oss (batched-matmul
// experts kept fused); a copy that also lists fused_3d still tells the layouts apart
// by shape; one that lists fused_3d only refuses the batched shapes, naming them.
func TestDataFreeUsesArchFamily(t *testing.T) {
	base := "../testdata/golden-arch/e2e/base_gpt_oss"
	in := renamedModel(t, base, "gpt_oss", "my_gpt_oss", "GptOssForCausalLM", "MyGptOssForCausalLM")
	fam, err := os.ReadFile("../arch/families/gpt_oss.json")
	if err != nil {
		t.Fatal(err)
	}
	fam = bytes.Replace(fam, []byte(`"model_types": ["gpt_oss"]`), []byte(`"model_types": ["my_gpt_oss"]`), 1)
	fam = bytes.Replace(fam, []byte(`"GptOssForCausalLM"`), []byte(`"MyGptOssForCausalLM"`), 1)
	write := func(name string, b []byte) string {
		f := filepath.Join(t.TempDir(), name)
		if err := os.WriteFile(f, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return f
	}
	const recipe = "W4A16_NVFP4_CFG"
	ref := filepath.Join(t.TempDir(), "ref")
	if _, err := Run(t.Context(), Options{Inputs: []string{base}, Recipe: recipe, Out: ref}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, layouts, refuse string
	}{
		{"bmm", `["bmm"]`, ""},
		{"bmm and fused_3d", `["bmm", "fused_3d"]`, ""},
		{"fused_3d", `["fused_3d"]`, "model.layers.0.mlp.experts: gate_up_proj"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := write("my_gpt_oss.json", bytes.Replace(fam, []byte(`"layouts": ["bmm"]`), []byte(`"layouts": `+tc.layouts), 1))
			out := filepath.Join(t.TempDir(), "out")
			_, err := Run(t.Context(), Options{Inputs: []string{in}, Recipe: recipe, Out: out, Arch: []string{f}})
			if tc.refuse != "" {
				if err == nil || !strings.Contains(err.Error(), tc.refuse) || !strings.Contains(err.Error(), "experts.layouts") {
					t.Fatalf("got %v, want a refusal naming %q and experts.layouts", err, tc.refuse)
				}
				if _, err := os.Stat(out); !os.IsNotExist(err) {
					t.Fatalf("output written for a refused model: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			for _, f := range []string{"model.safetensors", "hf_quant_config.json"} {
				a, errA := os.ReadFile(filepath.Join(ref, f))
				b, errB := os.ReadFile(filepath.Join(out, f))
				if errA != nil || errB != nil || !bytes.Equal(a, b) {
					t.Errorf("%s: the --arch family's conversion differs from the built-in gpt_oss one (%v, %v)", f, errA, errB)
				}
			}
		})
	}
}

// TestKVCacheOnUnknownAttentionRefused: --kv-cache on an attention whose key/value
// projections quantstream does not recognise as an attention module (DeepSeek's MLA
// with q_lora_rank: q_a_proj, kv_a_proj_with_mqa) is refused, naming the module,
// rather than converted without the KV-cache scales the user asked for. ModelOpt
// gives DeepseekV3Attention k/v_bmm quantizers (_QuantAttention), exported as
// k_proj.k_scale / v_proj.v_scale, a layout no golden case pins.
func TestKVCacheOnUnknownAttentionRefused(t *testing.T) {
	base := "../testdata/golden-arch/e2e/base_deepseek_v3"
	out := filepath.Join(t.TempDir(), "out")
	_, err := Run(t.Context(), Options{Inputs: []string{base}, Recipe: "W4A16_NVFP4_CFG", KVCache: "fp8_cast", Out: out})
	if err == nil || !strings.Contains(err.Error(), "model.layers.0.self_attn") || !strings.Contains(err.Error(), "--kv-cache") {
		t.Fatalf("got %v, want a refusal naming model.layers.0.self_attn and --kv-cache", err)
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Fatalf("output written for a refused conversion: %v", err)
	}
	// Llama's attention is recognised: its KV-cache scales are written.
	if _, err := Run(t.Context(), Options{Inputs: []string{"../testdata/golden-arch/e2e/base_llama"}, Recipe: "W4A16_NVFP4_CFG", KVCache: "fp8_cast", Out: filepath.Join(t.TempDir(), "llama")}); err != nil {
		t.Fatal(err)
	}
}

// TestUndescribedModuleRefused: a data-free export of a checkpoint holding a weight of
// a module its family does not list is refused before anything is read, naming the
// tensor, and writes nothing; `plan` reports the same problem.
func TestUndescribedModuleRefused(t *testing.T) {
	c := testgen.LlamaConfig{Layers: 2, Hidden: 64, Intermediate: 128, Heads: 4, KVHeads: 2, Vocab: 96}
	for _, extra := range []quantstream.TensorInfo{
		{Name: "model.layers.1.mlp.foo_proj.weight", DType: quant.BF16, Shape: []int64{128, 64}},
		{Name: "extra.head.weight", DType: quant.BF16, Shape: []int64{8, 64}},
	} {
		t.Run(extra.Name, func(t *testing.T) {
			in := filepath.Join(t.TempDir(), "in")
			side := map[string][]byte{"config.json": testgen.LlamaConfigJSON(c)}
			if err := testgen.WriteCheckpoint(in, append(testgen.LlamaTensors(c), extra), 1, arrowio.WriteOptions{}, side); err != nil {
				t.Fatal(err)
			}
			out := filepath.Join(t.TempDir(), "out")
			opt := Options{Inputs: []string{in}, Recipe: "W4A16_NVFP4_CFG", Out: out}
			_, err := Run(t.Context(), opt)
			if !errors.Is(err, ErrPlan) || !strings.Contains(err.Error(), extra.Name) || !strings.Contains(err.Error(), "--arch") {
				t.Fatalf("got %v, want a plan problem naming %s and --arch", err, extra.Name)
			}
			if _, err := os.Stat(out); !os.IsNotExist(err) {
				t.Fatalf("output written for a refused conversion: %v", err)
			}
			rep, err := MakePlan(t.Context(), opt)
			if err != nil || !strings.Contains(strings.Join(rep.Problems, "\n"), extra.Name) {
				t.Fatalf("plan: %v %v, want the problem naming %s", err, rep, extra.Name)
			}
		})
	}
}
