package modelopt

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"math/big"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/quantstream/quantstream/quant"
)

// savedCases are the golden e2e cases that have a saved/ folder with modelopt_state.pth.
var savedCases = []string{"fp8", "nvfp4", "nvfp4_kv_fp8", "int4_awq", "w4a8_awq", "moe_nvfp4"}

func goldenE2E(parts ...string) string {
	return filepath.Join(append([]string{"..", "testdata", "golden", "e2e"}, parts...)...)
}

// parseJSONNumbers decodes JSON keeping numbers as json.Number, so that ints and floats
// stay distinguishable.
func parseJSONNumbers(t *testing.T, b []byte) any {
	t.Helper()
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	var v any
	if err := d.Decode(&v); err != nil {
		t.Fatalf("parse JSON: %v\n%.300s", err, b)
	}
	return v
}

// jsonDiff reports the first difference between two parsed JSON values. Numbers must
// agree in kind (int: no "." and no exponent) and value; objects in their key sets.
func jsonDiff(path string, a, b any) string {
	switch x := a.(type) {
	case map[string]any:
		y, ok := b.(map[string]any)
		if !ok {
			return fmt.Sprintf("%s: object vs %T", path, b)
		}
		for k := range x {
			if _, ok := y[k]; !ok {
				return fmt.Sprintf("%s: key %q only in ours", path, k)
			}
		}
		for k := range y {
			if _, ok := x[k]; !ok {
				return fmt.Sprintf("%s: key %q missing", path, k)
			}
			if d := jsonDiff(path+"."+k, x[k], y[k]); d != "" {
				return d
			}
		}
	case []any:
		y, ok := b.([]any)
		if !ok || len(x) != len(y) {
			return fmt.Sprintf("%s: list %d vs %T %v", path, len(x), b, b)
		}
		for i := range x {
			if d := jsonDiff(fmt.Sprintf("%s[%d]", path, i), x[i], y[i]); d != "" {
				return d
			}
		}
	case json.Number:
		y, ok := b.(json.Number)
		if !ok {
			return fmt.Sprintf("%s: number %v vs %T %v", path, x, b, b)
		}
		isFloat := func(n json.Number) bool { return strings.ContainsAny(string(n), ".eE") }
		if isFloat(x) != isFloat(y) {
			return fmt.Sprintf("%s: %v vs %v (int/float)", path, x, y)
		}
		if isFloat(x) {
			fx, _ := x.Float64()
			fy, _ := y.Float64()
			if fx != fy {
				return fmt.Sprintf("%s: %v vs %v", path, x, y)
			}
		} else {
			bx, _ := new(big.Int).SetString(string(x), 10)
			by, _ := new(big.Int).SetString(string(y), 10)
			if bx == nil || by == nil || bx.Cmp(by) != 0 {
				return fmt.Sprintf("%s: %v vs %v", path, x, y)
			}
		}
	default:
		if a != b {
			return fmt.Sprintf("%s: %#v vs %#v", path, a, b)
		}
	}
	return ""
}

func TestDecodeMatchesSavedDecoded(t *testing.T) {
	for _, name := range savedCases {
		t.Run(name, func(t *testing.T) {
			v, err := DecodeFile(goldenE2E(name, "saved", "modelopt_state.pth"), Limits{})
			if err != nil {
				t.Fatal(err)
			}
			got, err := EncodeJSON(v)
			if err != nil {
				t.Fatal(err)
			}
			want, err := os.ReadFile(goldenE2E(name, "saved_decoded", "modelopt_state.json"))
			if err != nil {
				t.Fatal(err)
			}
			if d := jsonDiff("$", parseJSONNumbers(t, got), parseJSONNumbers(t, want)); d != "" {
				t.Errorf("decoded modelopt_state differs from saved_decoded: %s", d)
			}
		})
	}
}

// quantizerDiff compares the attributes ModelOpt's export reads.
func quantizerDiff(got, want *quant.Quantizer, withClass bool) string {
	var d []string
	if got.Enabled != want.Enabled {
		d = append(d, fmt.Sprintf("enabled %v want %v", got.Enabled, want.Enabled))
	}
	if got.NumBits != want.NumBits {
		d = append(d, fmt.Sprintf("num_bits %v want %v", got.NumBits, want.NumBits))
	}
	if !slices.Equal(got.Axis, want.Axis) || got.AxisTuple != want.AxisTuple {
		d = append(d, fmt.Sprintf("axis %v(tuple %v) want %v(tuple %v)", got.Axis, got.AxisTuple, want.Axis, want.AxisTuple))
	}
	if !blockSizesEqual(got.BlockSizes, want.BlockSizes) {
		d = append(d, fmt.Sprintf("block_sizes %+v want %+v", got.BlockSizes, want.BlockSizes))
	}
	if got.FakeQuant != want.FakeQuant || got.Unsigned != want.Unsigned || got.NarrowRange != want.NarrowRange {
		d = append(d, fmt.Sprintf("fake_quant/unsigned/narrow_range %v/%v/%v want %v/%v/%v",
			got.FakeQuant, got.Unsigned, got.NarrowRange, want.FakeQuant, want.Unsigned, want.NarrowRange))
	}
	if (got.MaxBound == nil) != (want.MaxBound == nil) || (got.MaxBound != nil && *got.MaxBound != *want.MaxBound) {
		d = append(d, fmt.Sprintf("maxbound %v want %v", fmtPtr(got.MaxBound), fmtPtr(want.MaxBound)))
	}
	if withClass && got.Class != want.Class {
		d = append(d, fmt.Sprintf("class %s want %s", got.Class, want.Class))
	}
	return strings.Join(d, "; ")
}

func fmtPtr(p *float64) string {
	if p == nil {
		return "nil"
	}
	return fmt.Sprint(*p)
}

func blockSizesEqual(a, b *quant.BlockSizes) bool {
	if a == nil || b == nil {
		return a == b
	}
	if a.Type != b.Type || a.FourOverSix != b.FourOverSix || !maps.Equal(a.Dims, b.Dims) {
		return false
	}
	if (a.ScaleBits == nil) != (b.ScaleBits == nil) {
		return false
	}
	return a.ScaleBits == nil || *a.ScaleBits == *b.ScaleBits
}

// rawQuantizers reads the quantizers.json fields LoadQuantizersJSON does not keep.
func rawQuantizers(t *testing.T, path string) map[string]struct {
	Class            string  `json:"class"`
	AmaxShape        []int64 `json:"amax_shape"`
	HasPreQuantScale bool    `json:"has_pre_quant_scale"`
} {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]struct {
		Class            string  `json:"class"`
		AmaxShape        []int64 `json:"amax_shape"`
		HasPreQuantScale bool    `json:"has_pre_quant_scale"`
	}
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func TestStateTableMatchesQuantizersJSON(t *testing.T) {
	for _, name := range savedCases {
		t.Run(name, func(t *testing.T) {
			st, err := ReadSavedDir(goldenE2E(name, "saved"))
			if err != nil {
				t.Fatal(err)
			}
			qpath := goldenE2E(name, "input", "quantizers.json")
			want, err := LoadQuantizersJSON(qpath)
			if err != nil {
				t.Fatal(err)
			}
			raw := rawQuantizers(t, qpath)
			if g, w := st.Quantizers.Names(), want.Names(); !slices.Equal(g, w) {
				t.Fatalf("quantizer names differ:\n got %v\nwant %v", g, w)
			}
			for _, qn := range want.Names() {
				g, w := st.Quantizers[qn], want[qn]
				// The state does not record HardDisabledTensorQuantizer (nn.Embedding's
				// input slot); every other class is derived from it.
				withClass := w.Class != "HardDisabledTensorQuantizer"
				if d := quantizerDiff(g, w, withClass); d != "" {
					t.Errorf("%s: %s", qn, d)
				}
				x := st.Extra[qn]
				r := raw[qn]
				// Both decoders record the buffers the planner checks the input against.
				for _, q := range []*quant.Quantizer{g, w} {
					if q.HasBufferShape != (r.AmaxShape != nil) || !slices.Equal(q.BufferShape, r.AmaxShape) || q.HasPreQuantScale != r.HasPreQuantScale {
						t.Errorf("%s: buffer shape %v (%v), pre_quant_scale %v; quantizers.json amax_shape %v, has_pre_quant_scale %v",
							qn, q.BufferShape, q.HasBufferShape, q.HasPreQuantScale, r.AmaxShape, r.HasPreQuantScale)
					}
				}
				amax, has := x.Buffers["_amax"]
				if has != (r.AmaxShape != nil) || (has && !slices.Equal(amax.Shape, r.AmaxShape)) {
					t.Errorf("%s: _amax buffer %v (%v), quantizers.json amax_shape %v", qn, amax.Shape, has, r.AmaxShape)
				}
				if has && (amax.Name != qn+"._amax" || amax.DType == quant.Invalid) {
					t.Errorf("%s: _amax buffer named %q of dtype %v, want %q with the metadata's dtype", qn, amax.Name, amax.DType, qn+"._amax")
				}
				if x.HasBuffer("_pre_quant_scale") != r.HasPreQuantScale {
					t.Errorf("%s: _pre_quant_scale %v, quantizers.json %v", qn, x.HasBuffer("_pre_quant_scale"), r.HasPreQuantScale)
				}
			}
			if st.CalibMode == "quantize" {
				t.Errorf("calibration mode not found: %v", st.Modes)
			}
		})
	}
}
