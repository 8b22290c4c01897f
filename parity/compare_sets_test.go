package parity

import (
	"strings"
	"testing"

	"github.com/quantstream/quantstream/quant"
)

// TestCompareTensorSetsNamesTheFirstInOrder: with several tensors missing (or in
// excess), the error names the first in sorted order on every run, whatever order a
// map walk gives.
func TestCompareTensorSetsNamesTheFirstInOrder(t *testing.T) {
	ten := func(b ...byte) quant.Tensor {
		return quant.Tensor{DType: quant.U8, Shape: []int64{int64(len(b))}, Data: b}
	}
	set := func(names ...string) map[string]quant.Tensor {
		m := map[string]quant.Tensor{}
		for _, n := range names {
			m[n] = ten(1, 2)
		}
		return m
	}
	many := []string{"m.e", "m.c", "m.a", "m.d", "m.b", "m.f", "m.g", "m.h"}
	for _, tc := range []struct {
		name      string
		got, want map[string]quant.Tensor
		msg       string
	}{
		{"missing", set("m.x"), set(append([]string{"m.x"}, many...)...), `model.safetensors: tensor "m.a" missing (and 7 more)`},
		{"one missing", set("m.a"), set("m.a", "m.b"), `model.safetensors: tensor "m.b" missing`},
		{"unexpected", set(append([]string{"m.x"}, many...)...), set("m.x"), `model.safetensors: unexpected tensor "m.a" (and 7 more)`},
		{"missing before unexpected", set("m.z", "m.y"), set("m.b", "m.a"), `model.safetensors: tensor "m.a" missing (and 1 more)`},
		{"bytes", map[string]quant.Tensor{"m.a": ten(1, 2), "m.b": ten(1, 3), "m.c": ten(0, 0)},
			map[string]quant.Tensor{"m.a": ten(1, 2), "m.b": ten(1, 2), "m.c": ten(1, 2)}, `tensor "m.b": `},
		{"equal", set(many...), set(many...), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for range 20 { // map walks differ from run to run; the message must not
				got := ""
				if err := compareTensorSets(tc.got, tc.want); err != nil {
					got = err.Error()
				}
				if tc.name == "bytes" && strings.HasPrefix(got, tc.msg) {
					continue // the rest is CompareExact's account of the bytes
				}
				if got != tc.msg {
					t.Fatalf("error %q, want %q", got, tc.msg)
				}
			}
		})
	}
}
