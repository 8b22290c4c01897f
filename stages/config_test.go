package stages

import (
	"fmt"
	"slices"
	"sort"
	"testing"
)

func TestSummarizeExcludeModules(t *testing.T) {
	for _, tc := range []struct {
		name   string
		unq, q []string
		want   []string
	}{
		{"router", []string{"model.embed_tokens", "model.layers.0.mlp.gate", "lm_head"},
			[]string{"model.layers.0.mlp.experts.0.gate_proj", "model.layers.0.self_attn.q_proj"},
			[]string{"lm_head", "model.embed_tokens", "model.layers.0.mlp.gate"}},
		{"vision tower", []string{"model.visual.blocks.0.attn.qkv", "model.visual.blocks.1.mlp.fc1"},
			[]string{"model.layers.0.self_attn.q_proj"}, []string{"model.visual*"}},
		{"prefix of a quantized index", []string{"model.layers.10.mlp.down_proj", "model.layers.10.self_attn.o_proj"},
			[]string{"model.layers.100.mlp.down_proj", "model.layers.1.mlp.down_proj"}, []string{"model.layers.10.*"}},
		{"nothing quantized", []string{"lm_head"}, nil, []string{"lm_head"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := summarizeExcludeModules(tc.unq, tc.q)
			sort.Strings(got)
			if !slices.Equal(got, tc.want) {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
		})
	}
}

func TestProcessLayerQuantConfigMixed(t *testing.T) {
	got := processLayerQuantConfig([]ConfigModule{
		{Name: "a.q_proj", Format: "fp8"}, {Name: "a.down_proj", Format: "nvfp4", Block: 16}, {Name: "lm_head"}})
	b, _ := got.MarshalJSON()
	want := `{"quant_algo":"MIXED_PRECISION","kv_cache_quant_algo":null,"quantized_layers":{"a.q_proj":{"quant_algo":"FP8"},"a.down_proj":{"quant_algo":"NVFP4","group_size":16}}}`
	if string(b) != want {
		t.Fatalf("got  %s\nwant %s", b, want)
	}
	hf := hfQuantConfigFormat(Obj{{"producer", nil}, {"quantization", got}})
	b, _ = hf.MarshalJSON()
	want = `{"config_groups":{"group_0":{"input_activations":{"dynamic":false,"num_bits":8,"type":"float"},"weights":{"dynamic":false,"num_bits":8,"type":"float"},"targets":["a.q_proj"]},` +
		`"group_1":{"input_activations":{"dynamic":false,"num_bits":4,"type":"float","group_size":16},"weights":{"dynamic":false,"num_bits":4,"type":"float","group_size":16},"targets":["a.down_proj"]}},` +
		`"quantized_layers":{"a.q_proj":{"quant_algo":"FP8"},"a.down_proj":{"quant_algo":"NVFP4","group_size":16}},"ignore":[],"quant_algo":"MIXED_PRECISION","quant_method":"modelopt"}`
	if string(b) != want {
		t.Fatalf("got  %s\nwant %s", b, want)
	}
}

func TestProcessLayerQuantConfigNone(t *testing.T) {
	b, _ := processLayerQuantConfig([]ConfigModule{{Name: "lm_head"}}).MarshalJSON()
	if want := `{"quant_algo":null,"kv_cache_quant_algo":null,"quantized_layers":{}}`; string(b) != want {
		t.Fatalf("got %s, want %s", b, want)
	}
}

func TestWriteConfigJSONKeepsOrderAndNumbers(t *testing.T) {
	in := []byte(`{"b": 1e-05, "a": [1, 2.50], "quantization_config": {"old": true}, "z": "\u00e9"}`)
	qc := QuantConfig([]ConfigModule{{Name: "x.q_proj", Format: "fp8"}}, nil, "FP8", "v")
	out, err := writeConfigJSON(in, qc)
	if err != nil {
		t.Fatal(err)
	}
	want := `{
    "b": 1e-05,
    "a": [
        1,
        2.50
    ],
    "quantization_config": {
        "config_groups": {
            "group_0": {
                "input_activations": {
                    "dynamic": false,
                    "num_bits": 8,
                    "type": "float"
                },
                "weights": {
                    "dynamic": false,
                    "num_bits": 8,
                    "type": "float"
                },
                "targets": [
                    "Linear"
                ]
            }
        },
        "ignore": [],
        "quant_algo": "FP8",
        "kv_cache_scheme": {
            "dynamic": false,
            "num_bits": 8,
            "type": "float"
        },
        "producer": {
            "name": "modelopt",
            "version": "v"
        },
        "quant_method": "modelopt"
    },
    "z": "\u00e9"
}`
	if string(out) != want {
		t.Fatalf("got\n%s\nwant\n%s", out, want)
	}
}

func TestLayerQuantConfigRawFormats(t *testing.T) {
	for _, f := range []string{"mxfp4", "fp8_pb_wo", "fp8_pb_real"} {
		b, _ := LayerQuantConfig(f, 32).MarshalJSON()
		if want := fmt.Sprintf(`{"quant_algo":%q}`, f); string(b) != want {
			t.Errorf("%s: got %s, want %s", f, b, want)
		}
	}
}

func TestSummarizeExcludeModulesWildcard(t *testing.T) {
	ex := summarizeExcludeModules(
		[]string{"model.visual.blocks.0.attn.qkv", "model.visual.merger.fc", "lm_head"},
		[]string{"model.layers.0.self_attn.q_proj"})
	sort.Strings(ex)
	if got := fmt.Sprint(ex); got != "[lm_head model.visual*]" {
		t.Errorf("got %s, want [lm_head model.visual*]", got)
	}
}

func ExampleQuantConfig() {
	qc := QuantConfig([]ConfigModule{
		{Name: "model.embed_tokens"},
		{Name: "model.layers.0.self_attn.q_proj", Format: "int4_awq", Block: 128},
		{Name: "lm_head"},
	}, nil, "", ModelOptVersion)
	b, _ := marshalPython(qc)
	fmt.Println(string(b))
	// Output:
	// {
	//     "producer": {
	//         "name": "modelopt",
	//         "version": "0.47.0.dev81"
	//     },
	//     "quantization": {
	//         "quant_algo": "W4A16_AWQ",
	//         "kv_cache_quant_algo": null,
	//         "group_size": 128,
	//         "has_zero_point": false,
	//         "pre_quant_scale": true,
	//         "exclude_modules": [
	//             "lm_head",
	//             "model.embed_tokens"
	//         ]
	//     }
	// }
}
