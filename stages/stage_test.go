package stages

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/apache/arrow-go/v18/arrow/memory"

	quantstream "github.com/quantstream/quantstream"
	"github.com/quantstream/quantstream/quant"
)

// convert runs every planned layer through the stage with up to workers concurrent
// Process calls and returns the output layers serialized in plan order.
func convert(t *testing.T, mem memory.Allocator, p *Plan, st *Stage, sd map[string]quant.Tensor, workers int) []byte {
	t.Helper()
	out := make([][]byte, len(p.Layers))
	errs := make([]error, len(p.Layers))
	sem := make(chan struct{}, workers)
	var wg sync.WaitGroup
	for i, lp := range p.Layers {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			in := make([]quantstream.Tensor, len(lp.Inputs))
			for j, h := range lp.Inputs {
				in[j] = quantstream.Tensor{Name: h.Name, Tensor: sd[h.Name]}
			}
			l, err := quantstream.NewLayer(mem, lp.Index, lp.Prefix, in)
			if err != nil {
				errs[i] = err
				return
			}
			ol, err := st.Process(t.Context(), l)
			if err != nil {
				errs[i] = err
				return
			}
			defer ol.Release()
			var b bytes.Buffer
			got := ol.Tensors()
			if len(got) != len(lp.Outputs) {
				errs[i] = fmt.Errorf("layer %d: %d tensors, plan says %d", lp.Index, len(got), len(lp.Outputs))
				return
			}
			for k, tt := range got {
				h := lp.Outputs[k]
				if tt.Name != h.Name || tt.DType != h.DType || !slices.Equal(tt.Shape, h.Shape) {
					errs[i] = fmt.Errorf("layer %d: tensor %d is %s %v %v, plan says %s %s %v", lp.Index, k, tt.Name, tt.DType, tt.Shape, h.Name, h.DType, h.Shape)
					return
				}
				fmt.Fprintf(&b, "%s %v %v\n", tt.Name, tt.DType, tt.Shape)
				b.Write(tt.Data)
			}
			out[i] = b.Bytes()
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	return bytes.Join(out, nil)
}

func TestStageConcurrencyDeterministic(t *testing.T) {
	sd, qs := tinyLlama(4)
	p, err := NewPlan(infosOf(sd), []byte(tinyLlamaConfig), qs, Options{})
	if err != nil {
		t.Fatal(err)
	}
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	st := NewStage(p, mem)
	one := convert(t, mem, p, st, sd, 1)
	four := convert(t, mem, p, st, sd, 4)
	if !bytes.Equal(one, four) {
		t.Fatal("output with 4 concurrent Process calls differs from 1")
	}
	if len(one) == 0 {
		t.Fatal("no output")
	}
}

func TestStageReleasesInputOnError(t *testing.T) {
	sd, qs := tinyLlama(1)
	p, err := NewPlan(infosOf(sd), []byte(tinyLlamaConfig), qs, Options{})
	if err != nil {
		t.Fatal(err)
	}
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	// A layer whose input amax is zero: NVFP4 input scales must be positive.
	lp := p.Layer(0)
	in := make([]quantstream.Tensor, len(lp.Inputs))
	for j, h := range lp.Inputs {
		tt := sd[h.Name]
		if h.Name == "model.layers.0.mlp.down_proj.input_quantizer._amax" {
			tt = bf16Tensor([]int64{}, []float32{0})
		}
		in[j] = quantstream.Tensor{Name: h.Name, Tensor: tt}
	}
	l, err := quantstream.NewLayer(mem, lp.Index, lp.Prefix, in)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewStage(p, mem).Process(t.Context(), l); err == nil {
		t.Fatal("zero NVFP4 input amax accepted")
	}
}

func TestStageCanceled(t *testing.T) {
	sd, qs := tinyLlama(1)
	p, err := NewPlan(infosOf(sd), []byte(tinyLlamaConfig), qs, Options{})
	if err != nil {
		t.Fatal(err)
	}
	mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
	defer mem.AssertSize(t, 0)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	lp := p.Layer(0)
	in := make([]quantstream.Tensor, len(lp.Inputs))
	for j, h := range lp.Inputs {
		in[j] = quantstream.Tensor{Name: h.Name, Tensor: sd[h.Name]}
	}
	l, err := quantstream.NewLayer(mem, lp.Index, lp.Prefix, in)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := NewStage(p, mem).Process(ctx, l); !errors.Is(err, context.Canceled) {
		t.Fatalf("Process after cancel: %v", err)
	}
}

func TestStagePlanMatchesPlan(t *testing.T) {
	sd, qs := tinyLlama(2)
	p, err := NewPlan(infosOf(sd), []byte(tinyLlamaConfig), qs, Options{})
	if err != nil {
		t.Fatal(err)
	}
	st := NewStage(p, memory.NewGoAllocator())
	for _, lp := range p.Layers {
		got, err := st.Plan(quantstream.LayerInfo{Index: lp.Index, Prefix: lp.Prefix, Tensors: lp.Inputs})
		if err != nil {
			t.Fatal(err)
		}
		if !sameInfos(got, lp.Outputs) {
			t.Fatalf("layer %d: Stage.Plan differs from the plan", lp.Index)
		}
	}
}

func ExampleNewPlan() {
	sd, qs := tinyLlama(1)
	p, err := NewPlan(infosOf(sd), []byte(tinyLlamaConfig), qs, Options{})
	if err != nil {
		fmt.Println(err)
		return
	}
	fmt.Println("model format:", p.ModelFormat, "kv:", p.KVFormat)
	for _, t := range p.Layer(0).Outputs {
		if slices.Contains([]string{"q_proj", "k_proj"}, t.Name[len("model.layers.0.self_attn."):min(len(t.Name), 31)]) {
			fmt.Println(t.Name, t.DType, t.Shape)
		}
	}
	hq, _ := p.HFQuantConfigJSON()
	fmt.Println(string(hq))
	// Output:
	// model format: nvfp4 kv: FP8
	// model.layers.0.self_attn.k_proj.input_scale F32 []
	// model.layers.0.self_attn.k_proj.k_scale F32 []
	// model.layers.0.self_attn.k_proj.weight U8 [16 16]
	// model.layers.0.self_attn.k_proj.weight_scale F8_E4M3 [16 2]
	// model.layers.0.self_attn.k_proj.weight_scale_2 F32 []
	// model.layers.0.self_attn.q_proj.input_scale F32 []
	// model.layers.0.self_attn.q_proj.weight U8 [32 16]
	// model.layers.0.self_attn.q_proj.weight_scale F8_E4M3 [32 2]
	// model.layers.0.self_attn.q_proj.weight_scale_2 F32 []
	// {
	//     "producer": {
	//         "name": "modelopt",
	//         "version": "0.47.0.dev81"
	//     },
	//     "quantization": {
	//         "quant_algo": "NVFP4",
	//         "kv_cache_quant_algo": "FP8",
	//         "group_size": 16,
	//         "exclude_modules": [
	//             "lm_head",
	//             "model.embed_tokens"
	//         ]
	//     }
	// }
}

func ExampleStage_Process() {
	sd, qs := tinyLlama(1)
	p, _ := NewPlan(infosOf(sd), []byte(tinyLlamaConfig), qs, Options{})
	mem := memory.NewGoAllocator()
	st := NewStage(p, mem)
	lp := p.Layer(0)
	in := make([]quantstream.Tensor, len(lp.Inputs))
	for i, h := range lp.Inputs {
		in[i] = quantstream.Tensor{Name: h.Name, Tensor: sd[h.Name]}
	}
	l, _ := quantstream.NewLayer(mem, lp.Index, lp.Prefix, in)
	out, err := st.Process(context.Background(), l) // takes ownership of l
	if err != nil {
		fmt.Println(err)
		return
	}
	defer out.Release()
	fmt.Println(lp.Index, len(lp.Inputs), "tensors in,", out.Len(), "out")
	// Output:
	// 0 25 tensors in, 32 out
}

func ExampleStage_Plan() {
	sd, qs := tinyLlama(1)
	p, _ := NewPlan(infosOf(sd), []byte(tinyLlamaConfig), qs, Options{})
	st := NewStage(p, memory.NewGoAllocator())
	in := []quantstream.TensorInfo{
		{Name: "model.layers.0.mlp.down_proj.weight", DType: quant.BF16, Shape: []int64{32, 64}},
		{Name: "model.layers.0.mlp.down_proj.weight_quantizer._amax", DType: quant.BF16, Shape: []int64{}},
		{Name: "model.layers.0.mlp.down_proj.input_quantizer._amax", DType: quant.BF16, Shape: []int64{}},
	}
	out, err := st.Plan(quantstream.LayerInfo{Index: 0, Prefix: "model.layers.0.", Tensors: in})
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, t := range out {
		fmt.Println(t.Name, t.DType, t.Shape)
	}
	// Output:
	// model.layers.0.mlp.down_proj.input_scale F32 []
	// model.layers.0.mlp.down_proj.weight U8 [32 32]
	// model.layers.0.mlp.down_proj.weight_scale F8_E4M3 [32 4]
	// model.layers.0.mlp.down_proj.weight_scale_2 F32 []
}
