package stages

import (
	"errors"
	"math"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow/memory"

	quantstream "github.com/quantstream/quantstream"
	"github.com/quantstream/quantstream/quant"
)

// TestPlanMissingWeight: discovery starts from weights, so an enabled weight
// quantizer without its weight, or buffers without a module, must be problems.
func TestPlanMissingWeight(t *testing.T) {
	const kw = "model.layers.1.self_attn.k_proj.weight"
	t.Run("deleted weight", func(t *testing.T) {
		sd, qs := tinyLlama(2)
		delete(sd, kw)
		p, err := NewPlan(infosOf(sd), []byte(tinyLlamaConfig), qs, Options{})
		if !errors.Is(err, ErrMissingWeight) {
			t.Fatalf("got %v, want ErrMissingWeight", err)
		}
		if len(p.Problems) != 1 {
			t.Fatalf("%d problems, want 1: %v", len(p.Problems), p.Problems)
		}
		for _, want := range []string{"model.layers.1.self_attn.k_proj.weight_quantizer", kw, "k_proj.input_quantizer._amax"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("error does not name %s: %v", want, err)
			}
		}
	})
	t.Run("no base checkpoint", func(t *testing.T) {
		sd, qs := tinyLlama(1)
		for n := range sd {
			if !strings.Contains(n, "_quantizer.") {
				delete(sd, n)
			}
		}
		p, err := NewPlan(infosOf(sd), []byte(tinyLlamaConfig), qs, Options{})
		if !errors.Is(err, ErrMissingWeight) || !strings.Contains(err.Error(), "none of the 7 weights") {
			t.Fatalf("got %v, want ErrMissingWeight for the 7 linears", err)
		}
		if n := len(p.Problems); n != 1 {
			t.Fatalf("%d problems, want one (no base checkpoint): %v", n, p.Problems)
		}
	})
	t.Run("buffer of a disabled quantizer without weight", func(t *testing.T) {
		sd, qs := tinyLlama(1)
		sd["model.layers.0.mlp.extra_proj.input_quantizer._amax"] = bf16Tensor([]int64{}, []float32{1})
		if _, err := NewPlan(infosOf(sd), []byte(tinyLlamaConfig), qs, Options{}); !errors.Is(err, ErrUnusedBuffer) ||
			!strings.Contains(err.Error(), "model.layers.0.mlp.extra_proj.weight") {
			t.Fatalf("got %v, want ErrUnusedBuffer naming the weight", err)
		}
	})
}

// TestPlanRecordedBuffers: a quantizer whose state records an _amax (quantizers.json's
// amax_shape) or a _pre_quant_scale needs that tensor, of that shape.
func TestPlanRecordedBuffers(t *testing.T) {
	const kb = "model.layers.0.self_attn.k_bmm_quantizer"
	for _, tc := range []struct {
		name string
		edit func(sd map[string]quant.Tensor, qs table)
		want string
	}{
		{"kv amax deleted", func(sd map[string]quant.Tensor, qs table) {
			delete(sd, kb+"._amax")
		}, kb + "._amax"},
		{"kv amax of another shape", func(sd map[string]quant.Tensor, qs table) {
			sd[kb+"._amax"] = bf16Tensor([]int64{2}, []float32{1, 2})
		}, "[2]"},
		{"pre_quant_scale deleted", func(sd map[string]quant.Tensor, qs table) {
			q := *qs["model.layers.0.mlp.down_proj.input_quantizer"]
			q.HasPreQuantScale = true
			qs["model.layers.0.mlp.down_proj.input_quantizer"] = &q
		}, "model.layers.0.mlp.down_proj.input_quantizer._pre_quant_scale"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sd, qs := tinyLlama(1)
			for n, q := range qs {
				if _, ok := sd[n+"._amax"]; ok && q.Enabled {
					c := *q
					c.BufferShape, c.HasBufferShape = []int64{}, true
					qs[n] = &c
				}
			}
			if _, err := NewPlan(infosOf(sd), []byte(tinyLlamaConfig), qs, Options{}); err != nil {
				t.Fatalf("complete state: %v", err)
			}
			tc.edit(sd, qs)
			_, err := NewPlan(infosOf(sd), []byte(tinyLlamaConfig), qs, Options{})
			if !errors.Is(err, ErrMissingBuffer) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want ErrMissingBuffer naming %s", err, tc.want)
			}
		})
	}
}

// TestPlanFusionMissingInputAmax: a fused group where one module lacks the input amax
// the others share is a plan problem, not a failure mid-conversion.
func TestPlanFusionMissingInputAmax(t *testing.T) {
	sd, qs := tinyLlama(2)
	delete(sd, "model.layers.1.self_attn.k_proj.input_quantizer._amax")
	p, err := NewPlan(infosOf(sd), []byte(tinyLlamaConfig), qs, Options{})
	if !errors.Is(err, ErrMissingAmax) || !strings.Contains(err.Error(), "model.layers.1.self_attn.k_proj") {
		t.Fatalf("got %v, want ErrMissingAmax naming k_proj", err)
	}
	if len(p.Problems) != 1 {
		t.Fatalf("%d problems: %v", len(p.Problems), p.Problems)
	}
}

// TestFusedExpertsHostileShape: the expert count of a fused tensor comes from its
// header; it is checked against config.json and the quantizer table before anything
// is sized by it, and zero-size dimensions are refused. Each problem is listed once.
func TestFusedExpertsHostileShape(t *testing.T) {
	const p = "model.layers.0.mlp.experts."
	qs := table{
		p + "gate_up_proj_weight_quantizers.0": fp8Q(true), p + "gate_up_proj_weight_quantizers.1": fp8Q(true),
		p + "down_proj_weight_quantizers.0": fp8Q(true), p + "down_proj_weight_quantizers.1": fp8Q(true),
	}
	for _, tc := range []struct {
		name     string
		config   string
		gu, down []int64
		want     string
	}{
		{"huge expert count, zero dim", qwenMoEConfig, []int64{2000000000, 0, 256}, []int64{2000000000, 256, 0}, "zero-size"},
		{"huge expert count", qwenMoEConfig, []int64{2000000000, 4, 4}, []int64{2000000000, 4, 2}, "2 " + p + "gate_up_proj_weight_quantizers.<e>"},
		{"config disagrees", `{"architectures": ["Qwen3MoeForCausalLM"], "model_type": "qwen3_moe", "num_experts": 3}`, []int64{2, 4, 4}, []int64{2, 4, 2}, "config.json says 3"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			infos := []quantstream.TensorInfo{
				{Name: p + "gate_up_proj", DType: quant.BF16, Shape: tc.gu},
				{Name: p + "down_proj", DType: quant.BF16, Shape: tc.down},
			}
			pl, err := NewPlan(infos, []byte(tc.config), qs, Options{})
			if !errors.Is(err, ErrShape) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want ErrShape with %q", err, tc.want)
			}
			if len(pl.Problems) != 1 {
				t.Fatalf("%d problems: %v", len(pl.Problems), pl.Problems)
			}
		})
	}
}

func TestPlanZeroDimQuantizedWeight(t *testing.T) {
	sd, qs := tinyLlama(1)
	infos := infosOf(sd)
	for i := range infos {
		if infos[i].Name == "model.layers.0.mlp.up_proj.weight" {
			infos[i].Shape = []int64{0, 32}
		}
	}
	if _, err := NewPlan(infos, []byte(tinyLlamaConfig), qs, Options{}); !errors.Is(err, ErrShape) || !strings.Contains(err.Error(), "up_proj.weight has shape [0 32]") {
		t.Fatalf("got %v", err)
	}
}

// processErr runs layer 0 of sd, with the tensors of edit replaced, through a Stage of
// a plan of sd and returns its error; the output of a successful run is released.
func processErr(t *testing.T, sd map[string]quant.Tensor, qs table, edit map[string]quant.Tensor) error {
	t.Helper()
	p, err := NewPlan(infosOf(sd), []byte(tinyLlamaConfig), qs, Options{})
	if err != nil {
		t.Fatal(err)
	}
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	lp := p.Layer(0)
	in := make([]quantstream.Tensor, len(lp.Inputs))
	for i, h := range lp.Inputs {
		tt := sd[h.Name]
		if e, ok := edit[h.Name]; ok {
			tt = e
		}
		in[i] = quantstream.Tensor{Name: h.Name, Tensor: tt}
	}
	l, err := quantstream.NewLayer(mem, lp.Index, lp.Prefix, in)
	if err != nil {
		t.Fatal(err)
	}
	out, err := NewStage(p, mem).Process(t.Context(), l)
	if err == nil {
		out.Release()
	}
	return err
}

// TestProcessRefusesBadAmax: non-finite or negative calibration values, and a zero
// amax a format divides by as it is, fail the layer with the tensor's name (once).
func TestProcessRefusesBadAmax(t *testing.T) {
	nan := float32(math.NaN())
	inf := float32(math.Inf(1))
	fp8 := func() (map[string]quant.Tensor, table) {
		sd, qs := tinyLlama(1)
		for n, q := range qs {
			if q.Enabled && q.NumBits == quant.BitsE2M1 {
				qs[n] = fp8Q(true)
			}
		}
		return sd, qs
	}
	const k = "model.layers.0.self_attn.k_proj."
	for _, tc := range []struct {
		name   string
		state  func() (map[string]quant.Tensor, table)
		tensor string
		v      float32
		want   error
	}{
		{"nvfp4 weight amax NaN", func() (map[string]quant.Tensor, table) { return tinyLlama(1) }, k + "weight_quantizer._amax", nan, quant.ErrNonFinite},
		{"fp8 weight amax NaN", fp8, k + "weight_quantizer._amax", nan, quant.ErrNonFinite},
		{"fp8 weight amax Inf", fp8, k + "weight_quantizer._amax", inf, quant.ErrNonFinite},
		{"fp8 weight amax negative", fp8, k + "weight_quantizer._amax", -1, quant.ErrNonPositive},
		{"fp8 weight amax zero", fp8, "model.layers.0.mlp.down_proj.weight_quantizer._amax", 0, quant.ErrNonPositive},
		{"nvfp4 weight amax zero", func() (map[string]quant.Tensor, table) { return tinyLlama(1) }, "model.layers.0.mlp.down_proj.weight_quantizer._amax", 0, quant.ErrNonPositive},
		{"fp8 input amax NaN", fp8, k + "input_quantizer._amax", nan, quant.ErrNonFinite},
		{"kv amax NaN", fp8, "model.layers.0.self_attn.k_bmm_quantizer._amax", nan, quant.ErrNonFinite},
		{"nvfp4 input amax zero", func() (map[string]quant.Tensor, table) { return tinyLlama(1) }, "model.layers.0.mlp.down_proj.input_quantizer._amax", 0, quant.ErrNonPositive},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sd, qs := tc.state()
			err := processErr(t, sd, qs, map[string]quant.Tensor{tc.tensor: bf16Tensor([]int64{}, []float32{tc.v})})
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			if n := strings.Count(err.Error(), tc.tensor); n != 1 {
				t.Fatalf("the error names %s %d times: %v", tc.tensor, n, err)
			}
		})
	}
	t.Run("valid state", func(t *testing.T) {
		sd, qs := tinyLlama(1)
		if err := processErr(t, sd, qs, nil); err != nil {
			t.Fatal(err)
		}
	})
}

// TestPlanChecksBufferHeaders: buffer dtypes and the per-tensor FP8 amax's element
// count are known from headers, so plan reports them, naming the tensor.
func TestPlanChecksBufferHeaders(t *testing.T) {
	const k = "model.layers.0.self_attn.k_proj."
	for _, tc := range []struct {
		name   string
		tensor string
		t      quant.Tensor
		want   error
	}{
		{"fp8 weight amax of two elements", k + "weight_quantizer._amax", bf16Tensor([]int64{2}, []float32{1, 2}), ErrShape},
		{"integer input amax", k + "input_quantizer._amax", quant.Tensor{DType: quant.I32, Shape: []int64{}, Data: make([]byte, 4)}, ErrDType},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sd, qs := tinyLlama(1)
			for n, q := range qs {
				if q.Enabled && q.NumBits == quant.BitsE2M1 {
					qs[n] = fp8Q(true)
				}
			}
			sd[tc.tensor] = tc.t
			_, err := NewPlan(infosOf(sd), []byte(tinyLlamaConfig), qs, Options{})
			if !errors.Is(err, tc.want) || strings.Count(err.Error(), tc.tensor) != 1 {
				t.Fatalf("got %v, want %v naming %s once", err, tc.want, tc.tensor)
			}
		})
	}
}

// TestProcessErrorNamesTensorOnce: a layer whose data does not match what was
// planned (an I16 weight where the plan saw BF16) fails naming the weight, once.
func TestProcessErrorNamesTensorOnce(t *testing.T) {
	sd, qs := tinyLlama(1)
	const w = "model.layers.0.self_attn.k_proj.weight"
	bad := sd[w]
	bad.DType = quant.I16 // same size, not a float the export casts
	err := processErr(t, sd, qs, map[string]quant.Tensor{w: bad})
	if !errors.Is(err, ErrDType) {
		t.Fatalf("got %v, want ErrDType", err)
	}
	if n := strings.Count(err.Error(), "model.layers.0.self_attn.k_proj"); n != 1 {
		t.Fatalf("module named %d times: %v", n, err)
	}
}

func TestNameOnce(t *testing.T) {
	const m = "model.layers.0.mlp.up_proj"
	for _, tc := range []struct{ err, want string }{
		{m + ": quant: shape mismatch", m + ": quant: shape mismatch"},
		{"quant: assertion failed: scaling factor 0 not positive", "module " + m + ": quant: assertion failed: scaling factor 0 not positive"},
	} {
		if got := nameOnce(m, errors.New(tc.err)).Error(); got != tc.want {
			t.Errorf("nameOnce(%q) = %q, want %q", tc.err, got, tc.want)
		}
	}
	if nameOnce(m, nil) != nil {
		t.Error("nameOnce(nil) != nil")
	}
}

// TestStageProcessLeavesPanicsToPipeline: Process does not turn a panic into an error
// of its own (pipeline.protect recovers it with ErrPanic and the stack), and still
// releases its input.
func TestStageProcessLeavesPanicsToPipeline(t *testing.T) {
	sd, _ := tinyLlama(1)
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	in := []quantstream.Tensor{{Name: "model.norm.weight", Tensor: sd["model.norm.weight"]}}
	l, err := quantstream.NewLayer(mem, quantstream.NonDecoder, "", in)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if recover() == nil {
			t.Fatal("the panic was swallowed")
		}
	}()
	NewStage(nil, mem).Process(t.Context(), l) // a nil plan panics
}
