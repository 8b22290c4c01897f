package pyjson

import (
	"encoding/json"
	"math"
	"testing"
)

type kv []any // key, value, key, value, …: an Object in the order given

func (o kv) Len() int               { return len(o) / 2 }
func (o kv) At(i int) (string, any) { return o[2*i].(string), o[2*i+1] }

func TestIndentMatchesPython(t *testing.T) {
	// want: what python3 -c 'import json; print(json.dumps(v, indent=2[, sort_keys=True]))' prints.
	for _, tc := range []struct {
		name string
		v    any
		want string
	}{
		{"sorted", Sorted(map[string]any{"b": []any{int64(1), json.Number("2")}, "a": kv{}, "c": nil}),
			"{\n  \"a\": {},\n  \"b\": [\n    1,\n    2\n  ],\n  \"c\": null\n}"},
		{"ordered", kv{"z", true, "a", []string{}, "é", "ü"}, "{\n  \"z\": true,\n  \"a\": [],\n  \"\\u00e9\": \"\\u00fc\"\n}"},
		{"nested", kv{"x", kv{"y", []any{kv{"k", 1}}}}, "{\n  \"x\": {\n    \"y\": [\n      {\n        \"k\": 1\n      }\n    ]\n  }\n}"},
		{"scalar", "a\"b", `"a\"b"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Indent(tc.v, "  ")
			if err != nil || string(got) != tc.want {
				t.Errorf("Indent = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
	if _, err := Indent(kv{"f", 1.5}, "  "); err == nil {
		t.Error("Indent of a float64 value: no error (floats are not written by Indent)")
	}
	if got, _ := Compact(kv{"a", []any{1, "x"}, "b", kv{}}); string(got) != `{"a":[1,"x"],"b":{}}` {
		t.Errorf("Compact = %s", got)
	}
}

func TestFloatMatchesPythonRepr(t *testing.T) {
	for f, want := range map[float64]string{
		1: "1.0", 0.1: "0.1", 1e16: "1e+16", 1e15: "1000000000000000.0", 0.0001: "0.0001",
		1e-05: "1e-05", -2.5: "-2.5", 1.2345678901234568e+17: "1.2345678901234568e+17", 448: "448.0",
	} {
		if got := Float(f); got != want {
			t.Errorf("Float(%v) = %s, want %s", f, got, want)
		}
	}
	if got := Float(math.Copysign(0, -1)); got != "-0.0" {
		t.Errorf("Float(-0) = %s, want -0.0", got)
	}
}
