package parity

import (
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"slices"
	"strings"

	"github.com/quantstream/quantstream/quant"
)

// CompareExact reports the first difference between two tensors: dtype, shape, or the
// first differing byte (with the element index). NaN payloads count: bytes are compared.
func CompareExact(got, want quant.Tensor) error {
	if got.DType != want.DType {
		return fmt.Errorf("dtype %v, want %v", got.DType, want.DType)
	}
	if !slices.Equal(got.Shape, want.Shape) {
		return fmt.Errorf("shape %v, want %v", got.Shape, want.Shape)
	}
	if len(got.Data) != len(want.Data) {
		return fmt.Errorf("%d bytes, want %d", len(got.Data), len(want.Data))
	}
	if bytes.Equal(got.Data, want.Data) {
		return nil
	}
	n := 0
	first := -1
	for i := range got.Data {
		if got.Data[i] != want.Data[i] {
			if first < 0 {
				first = i
			}
			n++
		}
	}
	es := want.DType.Size()
	if es == 0 {
		es = 1
	}
	e := first / es
	return fmt.Errorf("%d of %d bytes differ; first at element %d: got % x, want % x",
		n, len(got.Data), e, got.Data[e*es:e*es+es], want.Data[e*es:e*es+es])
}

// JSONEqual compares two JSON documents as parsed values. ignore lists dotted paths
// to drop from both sides before comparing ("producer", "quantization_config.producer");
// only, when non-empty, keeps just those top-level keys.
func JSONEqual(got, want []byte, ignore, only []string) error {
	var g, w any
	if err := json.Unmarshal(got, &g); err != nil {
		return fmt.Errorf("got is not JSON: %v", err)
	}
	if err := json.Unmarshal(want, &w); err != nil {
		return fmt.Errorf("want is not JSON: %v", err)
	}
	return ValuesEqual(g, w, ignore, only)
}

// ValuesEqual compares decoded JSON values, as JSONEqual does.
func ValuesEqual(g, w any, ignore, only []string) error {
	g, w = normalize(g), normalize(w)
	if len(only) > 0 {
		g, w = keep(g, only), keep(w, only)
	}
	for _, p := range ignore {
		drop(g, strings.Split(p, "."))
		drop(w, strings.Split(p, "."))
	}
	if reflect.DeepEqual(g, w) {
		return nil
	}
	return fmt.Errorf("differs at %s", firstDiff(g, w, "$"))
}

// normalize round-trips a Go value through JSON so that typed values compare
// equal to decoded ones.
func normalize(v any) any {
	b, err := json.Marshal(v)
	if err != nil {
		return v
	}
	var out any
	json.Unmarshal(b, &out)
	return out
}

func keep(v any, keys []string) any {
	m, ok := v.(map[string]any)
	if !ok {
		return v
	}
	out := map[string]any{}
	for _, k := range keys {
		if x, ok := m[k]; ok {
			out[k] = x
		}
	}
	return out
}

func drop(v any, path []string) {
	m, ok := v.(map[string]any)
	if !ok || len(path) == 0 {
		return
	}
	if len(path) == 1 {
		delete(m, path[0])
		return
	}
	drop(m[path[0]], path[1:])
}

func firstDiff(g, w any, at string) string {
	switch wv := w.(type) {
	case map[string]any:
		gv, ok := g.(map[string]any)
		if !ok {
			return fmt.Sprintf("%s: got %s, want an object", at, short(g))
		}
		for k := range wv {
			if _, ok := gv[k]; !ok {
				return fmt.Sprintf("%s.%s: missing", at, k)
			}
		}
		for k := range gv {
			if _, ok := wv[k]; !ok {
				return fmt.Sprintf("%s.%s: unexpected", at, k)
			}
			if !reflect.DeepEqual(gv[k], wv[k]) {
				return firstDiff(gv[k], wv[k], at+"."+k)
			}
		}
	case []any:
		gv, ok := g.([]any)
		if !ok || len(gv) != len(wv) {
			return fmt.Sprintf("%s: got %s, want %s", at, short(g), short(w))
		}
		for i := range wv {
			if !reflect.DeepEqual(gv[i], wv[i]) {
				return firstDiff(gv[i], wv[i], fmt.Sprintf("%s[%d]", at, i))
			}
		}
	}
	return fmt.Sprintf("%s: got %s, want %s", at, short(g), short(w))
}

func short(v any) string {
	b, _ := json.Marshal(v)
	if len(b) > 120 {
		return string(b[:117]) + "..."
	}
	return string(b)
}
