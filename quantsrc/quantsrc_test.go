package quantsrc

import (
	"bytes"
	"encoding/json"
	"errors"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/quantstream/quantstream"
	"github.com/quantstream/quantstream/arrowio"
	"github.com/quantstream/quantstream/modelopt"
	"github.com/quantstream/quantstream/quant"
	"github.com/quantstream/quantstream/stages"
)

const e2e = "../testdata/golden-qsrc/e2e"

// source reads a golden source's config.json and tensor headers.
func source(t *testing.T, name string) ([]byte, []quantstream.TensorInfo) {
	t.Helper()
	dir := filepath.Join(e2e, "src_"+name)
	cfg, err := os.ReadFile(filepath.Join(dir, "config.json"))
	if err != nil {
		t.Fatal(err)
	}
	ck, err := arrowio.OpenCheckpoint(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer ck.Close()
	var infos []quantstream.TensorInfo
	for _, r := range ck.Tensors() {
		infos = append(infos, r.Info())
	}
	return cfg, infos
}

// setConfig returns cfg with quantization_config replaced (nil deletes it).
func setConfig(t *testing.T, cfg []byte, qc any) []byte {
	t.Helper()
	var m map[string]any
	if err := json.Unmarshal(cfg, &m); err != nil {
		t.Fatal(err)
	}
	if qc == nil {
		delete(m, "quantization_config")
	} else {
		m["quantization_config"] = qc
	}
	b, _ := json.Marshal(m)
	return b
}

func edit(infos []quantstream.TensorInfo, f func(ts []quantstream.TensorInfo) []quantstream.TensorInfo) []quantstream.TensorInfo {
	out := make([]quantstream.TensorInfo, len(infos))
	for i, t := range infos {
		t.Shape = slices.Clone(t.Shape)
		out[i] = t
	}
	return f(out)
}

func drop(name string) func([]quantstream.TensorInfo) []quantstream.TensorInfo {
	return func(ts []quantstream.TensorInfo) []quantstream.TensorInfo {
		return slices.DeleteFunc(ts, func(t quantstream.TensorInfo) bool { return t.Name == name })
	}
}

func TestDetectGoldenSources(t *testing.T) {
	for _, tc := range []struct {
		name    string
		method  Method
		weights int
	}{
		{"deepseek_v3_fp8", FP8Block, 49}, {"qwen3_fp8", FP8Block, 7}, {"qwen3_moe_fp8", FP8Block, 16}, {"gpt_oss_mxfp4", MXFP4, 4},
	} {
		cfg, infos := source(t, tc.name)
		s, err := Detect("config.json", cfg, infos)
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if s == nil || s.Method != tc.method || s.Weights() != tc.weights || s.Key != "quantization_config" {
			t.Fatalf("%s: %+v", tc.name, s)
		}
	}
	// The compressed-tensors source: one refusal naming the quant_method and format.
	cfg, infos := source(t, "llama_ct")
	_, err := Detect("src_llama_ct/config.json", cfg, infos)
	if !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), `"compressed-tensors"`) ||
		!strings.Contains(err.Error(), `format "pack-quantized"`) || !strings.Contains(err.Error(), "src_llama_ct/config.json") ||
		strings.Count(err.Error(), "\n") != 0 {
		t.Fatalf("compressed-tensors: %v", err)
	}
	// The same tensors without the config: refused for what the tensors are.
	_, err = Detect("config.json", setConfig(t, cfg, nil), infos)
	if !errors.Is(err, ErrUnsupported) || !strings.Contains(err.Error(), "weight_packed I32") {
		t.Fatalf("compressed-tensors without config: %v", err)
	}
	// A plain checkpoint is nil.
	plain, pinfos := source(t, "qwen3_fp8")
	for i := range pinfos {
		if pinfos[i].DType == quant.F8E4M3 {
			pinfos[i].DType = quant.BF16
		}
	}
	pinfos = slices.DeleteFunc(pinfos, func(t quantstream.TensorInfo) bool { return strings.HasSuffix(t.Name, "_scale_inv") })
	if s, err := Detect("config.json", setConfig(t, plain, nil), pinfos); s != nil || err != nil {
		t.Fatalf("plain: %v %v", s, err)
	}
}

// TestDetectRefusesMutatedSources: each mutation of a supported source is refused
// with the right sentinel and a message naming what is wrong.
func TestDetectRefusesMutatedSources(t *testing.T) {
	fcfg, finfos := source(t, "qwen3_fp8")
	mcfg, minfos := source(t, "gpt_oss_mxfp4")
	qcfg := func(cfg []byte) map[string]any {
		var m map[string]any
		json.Unmarshal(cfg, &m)
		return m["quantization_config"].(map[string]any)
	}
	with := func(cfg []byte, k string, v any) []byte {
		q := qcfg(cfg)
		if v == nil {
			delete(q, k)
		} else {
			q[k] = v
		}
		return setConfig(t, cfg, q)
	}
	const down = "model.layers.0.mlp.down_proj.weight"
	for _, tc := range []struct {
		name   string
		cfg    []byte
		infos  []quantstream.TensorInfo
		want   error
		naming []string
	}{
		{"missing scale", fcfg, edit(finfos, drop(down+"_scale_inv")), ErrInvalid, []string{down, "weight_scale_inv"}},
		{"wrong scale shape", fcfg, edit(finfos, func(ts []quantstream.TensorInfo) []quantstream.TensorInfo {
			for i := range ts {
				if ts[i].Name == down+"_scale_inv" {
					ts[i].Shape = []int64{2, 3} // transformers' rows//ceil(rows/128) layout would say [2, 4]
				}
			}
			return ts
		}), ErrInvalid, []string{down + "_scale_inv", "[2 3]", "[2 4]"}},
		{"BF16 scale", fcfg, edit(finfos, func(ts []quantstream.TensorInfo) []quantstream.TensorInfo {
			for i := range ts {
				if ts[i].Name == down+"_scale_inv" {
					ts[i].DType = quant.BF16
				}
			}
			return ts
		}), ErrInvalid, []string{"want F32"}},
		{"scale without weight", fcfg, edit(finfos, func(ts []quantstream.TensorInfo) []quantstream.TensorInfo {
			return append(ts, quantstream.TensorInfo{Name: "model.layers.0.x.weight_scale_inv", DType: quant.F32, Shape: []int64{1, 1}})
		}), ErrInvalid, []string{"model.layers.0.x.weight_scale_inv"}},
		{"F8 weight in modules_to_not_convert", with(fcfg, "modules_to_not_convert", []string{"lm_head", "model.layers.*.mlp"}), finfos, ErrInvalid,
			[]string{"modules_to_not_convert", "model.layers.0.mlp.down_proj"}},
		{"E5M2 tensor", fcfg, edit(finfos, func(ts []quantstream.TensorInfo) []quantstream.TensorInfo {
			return append(ts, quantstream.TensorInfo{Name: "model.layers.0.k_cache", DType: quant.F8E5M2, Shape: []int64{4}})
		}), ErrInvalid, []string{"model.layers.0.k_cache F8_E5M2"}},
		{"unknown quant_method", with(fcfg, "quant_method", "gptq"), finfos, ErrUnsupported, []string{`"gptq"`, "fp8", "mxfp4"}},
		{"no quant_method", with(fcfg, "quant_method", nil), finfos, ErrUnsupported, []string{"without a quant_method"}},
		{"static activations", with(fcfg, "activation_scheme", "static"), finfos, ErrUnsupported, []string{"activation_scheme", "static"}},
		{"per-tensor FP8", with(fcfg, "weight_block_size", json.RawMessage("null")), finfos, ErrUnsupported, []string{"weight_block_size null"}},
		{"bad block size", with(fcfg, "weight_block_size", []int{128}), finfos, ErrInvalid, []string{"weight_block_size"}},
		{"e5m2 fmt", with(fcfg, "fmt", "e5m2"), finfos, ErrUnsupported, []string{"fmt"}},
		{"unknown key", with(fcfg, "weight_dtype", "x"), finfos, ErrUnsupported, []string{"weight_dtype"}},
		{"fp8 without F8 weights", fcfg, edit(finfos, func(ts []quantstream.TensorInfo) []quantstream.TensorInfo {
			ts = slices.DeleteFunc(ts, func(t quantstream.TensorInfo) bool { return strings.HasSuffix(t.Name, "_scale_inv") })
			for i := range ts {
				ts[i].DType = quant.BF16
			}
			return ts
		}), ErrInvalid, []string{"no tensor is F8_E4M3"}},
		{"lone MXFP4 blocks", mcfg, edit(minfos, drop("model.layers.1.mlp.experts.down_proj_scales")), ErrInvalid, []string{"model.layers.1.mlp.experts.down_proj_blocks", "_scales"}},
		{"lone MXFP4 scales", mcfg, edit(minfos, drop("model.layers.1.mlp.experts.down_proj_blocks")), ErrInvalid, []string{"model.layers.1.mlp.experts.down_proj_scales"}},
		{"MXFP4 experts vs config", setConfig(t, bytes.Replace(mcfg, []byte(`"num_local_experts": 4`), []byte(`"num_local_experts": 8`), 1), qcfg(mcfg)), minfos, ErrInvalid, []string{"num_local_experts 8"}},
		{"MXFP4 listed as not converted", with(mcfg, "modules_to_not_convert", []string{"model.layers.*.mlp"}), minfos, ErrInvalid, []string{"modules_to_not_convert"}},
		{"MXFP4 unknown projection", mcfg, edit(minfos, func(ts []quantstream.TensorInfo) []quantstream.TensorInfo {
			return append(ts, quantstream.TensorInfo{Name: "model.layers.0.mlp.experts.w9_blocks", DType: quant.U8, Shape: []int64{4, 1, 1, 16}},
				quantstream.TensorInfo{Name: "model.layers.0.mlp.experts.w9_scales", DType: quant.U8, Shape: []int64{4, 1, 1}})
		}), ErrInvalid, []string{"w9_blocks"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Detect("config.json", tc.cfg, tc.infos)
			if !errors.Is(err, tc.want) {
				t.Fatalf("got %v, want %v", err, tc.want)
			}
			for _, n := range tc.naming {
				if !strings.Contains(err.Error(), n) {
					t.Errorf("message does not name %q: %v", n, err)
				}
			}
		})
	}
}

// TestDetectTextConfig: a quantization_config under text_config is found, and
// stripped there.
func TestDetectTextConfig(t *testing.T) {
	cfg, infos := source(t, "qwen3_fp8")
	var m map[string]any
	json.Unmarshal(cfg, &m)
	qc := m["quantization_config"]
	delete(m, "quantization_config")
	m["text_config"] = map[string]any{"hidden_size": 256, "quantization_config": qc}
	b, _ := json.MarshalIndent(m, "", "  ")
	s, err := Detect("config.json", b, infos)
	if err != nil || s == nil || s.Key != "text_config.quantization_config" {
		t.Fatalf("%v %+v", err, s)
	}
	out, err := s.StripConfig(b)
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("%v: %s", err, out)
	}
	delete(m["text_config"].(map[string]any), "quantization_config")
	if g, w := mustJSON(got), mustJSON(m); g != w {
		t.Fatalf("stripped config\n%s\nwant\n%s", g, w)
	}
}

func mustJSON(v any) string { b, _ := json.Marshal(v); return string(b) }

// TestStripConfigKeepsBytes: the member is cut out and nothing else changes,
// wherever it stands.
func TestStripConfigKeepsBytes(t *testing.T) {
	s := &Scheme{}
	for _, tc := range []struct{ in, want string }{
		{`{"a": 1, "quantization_config": {"x": [1, 2]}, "b": 2}`, `{"a": 1, "b": 2}`},
		{"{\n  \"quantization_config\": {},\n  \"b\": 2\n}", "{\n  \"b\": 2\n}"},
		{`{"a": 1, "quantization_config": null}`, `{"a": 1}`},
		{`{"quantization_config": 1}`, `{}`},
		{`{"a": "quantization_config"}`, `{"a": "quantization_config"}`},
	} {
		got, err := s.StripConfig([]byte(tc.in))
		if err != nil || string(got) != tc.want {
			t.Errorf("%s: got %s, %v; want %s", tc.in, got, err, tc.want)
		}
	}
}

// TestViewIsTheDequantizedCheckpoint: every golden source read through its view
// equals the BF16 checkpoint of its dequant case, tensor for tensor (names,
// dtypes, shapes, bytes), with no allocation left behind.
func TestViewIsTheDequantizedCheckpoint(t *testing.T) {
	for _, name := range []string{"deepseek_v3_fp8", "qwen3_fp8", "qwen3_moe_fp8", "gpt_oss_mxfp4"} {
		cfg, infos := source(t, name)
		s, err := Detect("config.json", cfg, infos)
		if err != nil {
			t.Fatal(err)
		}
		ck, err := arrowio.OpenCheckpoint(filepath.Join(e2e, "src_"+name))
		if err != nil {
			t.Fatal(err)
		}
		v, err := s.View(ck)
		if err != nil {
			t.Fatal(err)
		}
		want, err := arrowio.ReadAllTensors(filepath.Join(e2e, name+"-dequant", "expected"))
		if err != nil {
			t.Fatal(err)
		}
		mem := memory.NewCheckedAllocator(memory.NewGoAllocator())
		n := 0
		for _, li := range v.Layers() {
			l, err := v.ReadLayer(t.Context(), mem, li)
			if err != nil {
				t.Fatal(err)
			}
			for _, tn := range l.Tensors() {
				w, ok := want[tn.Name]
				if !ok || w.DType != tn.DType || !slices.Equal(w.Shape, tn.Shape) || !bytes.Equal(w.Data, tn.Data) {
					t.Errorf("%s: tensor %s %v %v differs from the dequantized checkpoint", name, tn.Name, tn.DType, tn.Shape)
				}
				n++
			}
			l.Release()
		}
		mem.AssertSize(t, 0)
		if n != len(want) {
			t.Errorf("%s: view has %d tensors, the dequantized checkpoint %d", name, n, len(want))
		}
		v.Close()
	}
}

func TestFindMTP(t *testing.T) {
	cfg, infos := source(t, "deepseek_v3_fp8")
	m, err := FindMTP("config.json", cfg, infos)
	if err != nil || !slices.Equal(m.Prefixes, []string{"model.layers.2"}) {
		t.Fatalf("%v %v", m, err)
	}
	if !m.Has("model.layers.2.eh_proj.weight") || m.Has("model.layers.20.x") || m.Has("model.layers.1.mlp.gate.weight") {
		t.Error("Has")
	}
	// No tensor under the prefix: no MTP layer (load_mtp_weights finds nothing).
	none := slices.DeleteFunc(slices.Clone(infos), func(t quantstream.TensorInfo) bool { return m.Has(t.Name) })
	if m2, err := FindMTP("config.json", cfg, none); err != nil || len(m2.Prefixes) != 0 {
		t.Errorf("without MTP tensors: %v %v", m2, err)
	}
	// The separate-file convention is refused.
	sep := append(slices.Clone(none), quantstream.TensorInfo{Name: "mtp.fc.weight", DType: quant.BF16, Shape: []int64{1}})
	if _, err := FindMTP("config.json", cfg, sep); !errors.Is(err, ErrMTP) || !strings.Contains(err.Error(), "mtp.fc.weight") {
		t.Errorf("separate MTP: %v", err)
	}
	// Exclude: the planner's entries inside the layer go, the wildcard is appended
	// after the sorted list, even where sorting would put it elsewhere.
	m = MTP{Prefixes: []string{"model.layers.61"}}
	qc := stages.Obj{{K: "producer", V: "x"}, {K: "quantization", V: stages.Obj{{K: "quant_algo", V: "NVFP4"},
		{K: "exclude_modules", V: []string{"lm_head", "model.layers.61.mlp.gate", "model.layers.9.mlp.gate"}}}}}
	if err := m.Exclude(qc); err != nil {
		t.Fatal(err)
	}
	q, _ := qc.Get("quantization")
	ex, _ := q.(stages.Obj).Get("exclude_modules")
	if !slices.Equal(ex.([]string), []string{"lm_head", "model.layers.9.mlp.gate", "model.layers.61*"}) {
		t.Errorf("exclude_modules %v", ex)
	}
}

// writeCheckpoint writes tensors (float32 values converted to each dtype) into dir.
func writeCheckpoint(t *testing.T, dir string, tensors map[string]quant.Tensor) {
	t.Helper()
	var infos []quantstream.TensorInfo
	for _, n := range slices.Sorted(maps.Keys(tensors)) {
		infos = append(infos, quantstream.TensorInfo{Name: n, DType: tensors[n].DType, Shape: tensors[n].Shape})
	}
	w, err := arrowio.Create(dir, infos, arrowio.WriteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for n, tn := range tensors {
		if err := w.WriteTensor(n, tn.Data); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
}

func f32(t *testing.T, shape []int64, v ...float32) quant.Tensor {
	t.Helper()
	x, err := quant.FromFloat32(quant.F32, shape, v)
	if err != nil {
		t.Fatal(err)
	}
	return x
}

// TestJoinFused: fused in-memory expert state on a per-expert checkpoint becomes
// per-expert quantizers and buffers: a per-channel amax cut in halves (gate rows
// first), the global amax and the input amax shared, the fused names gone.
func TestJoinFused(t *testing.T) {
	dir := t.TempDir()
	const c = "model.layers.0.mlp.experts"
	w := func(r, k int64) quant.Tensor { return f32(t, []int64{r, k}, make([]float32, r*k)...) }
	writeCheckpoint(t, dir, map[string]quant.Tensor{
		c + ".0.gate_proj.weight": w(2, 4), c + ".0.up_proj.weight": w(2, 4), c + ".0.down_proj.weight": w(4, 2),
		c + ".gate_up_proj_weight_quantizers.0._amax":        f32(t, []int64{4, 1}, 1, 2, 3, 4),
		c + ".gate_up_proj_weight_quantizers.0._global_amax": f32(t, []int64{}, 9),
		c + ".down_proj_weight_quantizers.0._amax":           f32(t, []int64{4, 1}, 5, 6, 7, 8),
		c + ".gate_up_proj_input_quantizer._amax":            f32(t, []int64{}, 0.5),
	})
	ck, err := arrowio.OpenCheckpoint(dir)
	if err != nil {
		t.Fatal(err)
	}
	q := func() *quant.Quantizer {
		return &quant.Quantizer{Enabled: true, NumBits: quant.BitsE4M3, Axis: []int{0}, AmaxShape: []int64{4, 1}}
	}
	table := modelopt.Table{
		c + ".gate_up_proj_weight_quantizers.0": q(), c + ".down_proj_weight_quantizers.0": q(),
		c + ".gate_up_proj_input_quantizer": {Enabled: true, NumBits: quant.BitsE4M3}, c + ".down_proj_input_quantizer": {Enabled: false},
	}
	j, err := JoinFused(ck, table)
	if err != nil {
		t.Fatal(err)
	}
	defer j.View.Close()
	if !slices.Equal(j.Containers, []string{c}) {
		t.Fatalf("containers %v", j.Containers)
	}
	want := []string{c + ".0.down_proj.input_quantizer", c + ".0.down_proj.weight_quantizer", c + ".0.gate_proj.input_quantizer",
		c + ".0.gate_proj.weight_quantizer", c + ".0.up_proj.input_quantizer", c + ".0.up_proj.weight_quantizer"}
	if got := j.Table.Names(); !slices.Equal(got, want) {
		t.Fatalf("table %v", got)
	}
	if s := j.Table[c+".0.gate_proj.weight_quantizer"].AmaxShape; !slices.Equal(s, []int64{2, 1}) {
		t.Errorf("gate amax_shape %v", s)
	}
	read := func(name string) []float32 {
		ref, ok := j.View.Lookup(name)
		if !ok {
			t.Fatalf("no %s in the view", name)
		}
		l, err := j.View.ReadLayer(t.Context(), memory.NewGoAllocator(), quantstream.LayerInfo{Index: 0, Tensors: []quantstream.TensorInfo{ref.Info()}})
		if err != nil {
			t.Fatal(err)
		}
		defer l.Release()
		v, _ := quant.Float32s(l.Tensor(0).Tensor)
		return v
	}
	for name, v := range map[string][]float32{
		c + ".0.gate_proj.weight_quantizer._amax": {1, 2}, c + ".0.up_proj.weight_quantizer._amax": {3, 4},
		c + ".0.gate_proj.weight_quantizer._global_amax": {9}, c + ".0.up_proj.weight_quantizer._global_amax": {9},
		c + ".0.down_proj.weight_quantizer._amax": {5, 6, 7, 8}, c + ".0.up_proj.input_quantizer._amax": {0.5},
	} {
		if got := read(name); !slices.Equal(got, v) {
			t.Errorf("%s = %v, want %v", name, got, v)
		}
	}
	if _, ok := j.View.Lookup(c + ".gate_up_proj_input_quantizer._amax"); ok {
		t.Error("fused buffer still in the view")
	}

	// An enabled expert quantizer without an amax cannot be joined.
	ck2, _ := arrowio.OpenCheckpoint(dir)
	defer ck2.Close()
	table[c+".gate_up_proj_weight_quantizers.1"] = q()
	if _, err := JoinFused(ck2, table); !errors.Is(err, ErrJoin) || !strings.Contains(err.Error(), "expert 1") {
		t.Errorf("missing expert: %v", err)
	}
}

// TestCastMXFP4MatchesModelOpt: the closed-form cast buffers derived from the gpt-oss
// source equal, bit for bit, the _amax and _global_amax ModelOpt's apply_to_model
// left in both cast cases' calibration state — the lossless tensors, the zero block
// of layer 1 (6·2^-127 in a lossless tensor) and the 2^-20 rows of layer 0 (a lossy
// tensor, where out-of-range blocks take max_nibble·2^k).
func TestCastMXFP4MatchesModelOpt(t *testing.T) {
	cfg, infos := source(t, "gpt_oss_mxfp4")
	s, err := Detect("config.json", cfg, infos)
	if err != nil {
		t.Fatal(err)
	}
	ck, err := arrowio.OpenCheckpoint(filepath.Join(e2e, "src_gpt_oss_mxfp4"))
	if err != nil {
		t.Fatal(err)
	}
	v, err := s.View(ck)
	if err != nil {
		t.Fatal(err)
	}
	c, err := s.CastMXFP4(v, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	for _, cs := range []string{"cast_nvfp4", "cast_w4a16_nvfp4"} {
		want, err := arrowio.ReadAllTensors(filepath.Join(e2e, "gpt_oss_mxfp4-"+cs, "input"))
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for _, p := range s.CastProjections() {
			for _, b := range []string{"._amax", "._global_amax"} {
				name := CastQuantizer(p) + b
				ref, ok := c.Lookup(name)
				if !ok {
					t.Fatalf("no %s", name)
				}
				l, err := c.ReadLayer(t.Context(), memory.NewGoAllocator(), quantstream.LayerInfo{Index: 0, Tensors: []quantstream.TensorInfo{ref.Info()}})
				if err != nil {
					t.Fatal(err)
				}
				got, w := l.Tensor(0), want[name]
				if got.DType != w.DType || !slices.Equal(got.Shape, w.Shape) || !bytes.Equal(got.Data, w.Data) {
					t.Errorf("%s: %s %v %v differs from ModelOpt's %v %v", cs, name, got.DType, got.Shape, w.DType, w.Shape)
				}
				l.Release()
				n++
			}
		}
		if n != 8 {
			t.Errorf("%d buffers compared", n)
		}
	}
}
