package modelopt

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
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
