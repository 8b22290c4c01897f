package pyjson

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
)

// Object is a JSON object whose keys keep an order, as a Python dict's do: Len keys,
// the i-th being At(i).
type Object interface {
	Len() int
	At(i int) (key string, value any)
}

// Compact writes v with no whitespace (separators "," and ":"), keys in order.
func Compact(v any) ([]byte, error) {
	var b bytes.Buffer
	if err := writeVal(&b, v, "", "", 0); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// Indent writes v as Python's json.dumps(v, indent=len(indent)) does: one element
// per line, separators "," and ": ", keys in order, ASCII escapes (WriteString), no
// trailing newline. v may hold nil, bool, int, int64, json.Number, string, []string,
// []any and Object; anything else is an error.
func Indent(v any, indent string) ([]byte, error) {
	var b bytes.Buffer
	if err := writeVal(&b, v, "\n", indent, 0); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

func writeVal(w *bytes.Buffer, v any, nl, ind string, depth int) error {
	newline := func(d int) {
		if nl == "" {
			return
		}
		w.WriteString(nl)
		for range d {
			w.WriteString(ind)
		}
	}
	sep := "," // both modes: compact, and indented (Python's separators for indent)
	switch x := v.(type) {
	case nil:
		w.WriteString("null")
	case bool:
		w.WriteString(strconv.FormatBool(x))
	case int:
		w.WriteString(strconv.Itoa(x))
	case int64:
		w.WriteString(strconv.FormatInt(x, 10))
	case json.Number:
		w.WriteString(string(x))
	case string:
		WriteString(w, x)
	case []string:
		a := make([]any, len(x))
		for i, s := range x {
			a[i] = s
		}
		return writeVal(w, a, nl, ind, depth)
	case []any:
		if len(x) == 0 {
			w.WriteString("[]")
			return nil
		}
		w.WriteByte('[')
		for i, e := range x {
			if i > 0 {
				w.WriteString(sep)
			}
			newline(depth + 1)
			if err := writeVal(w, e, nl, ind, depth+1); err != nil {
				return err
			}
		}
		newline(depth)
		w.WriteByte(']')
	case Object:
		if x.Len() == 0 {
			w.WriteString("{}")
			return nil
		}
		w.WriteByte('{')
		for i := range x.Len() {
			k, v := x.At(i)
			if i > 0 {
				w.WriteString(sep)
			}
			newline(depth + 1)
			WriteString(w, k)
			if nl == "" && ind == "" {
				w.WriteString(":")
			} else {
				w.WriteString(": ")
			}
			if err := writeVal(w, v, nl, ind, depth+1); err != nil {
				return err
			}
		}
		newline(depth)
		w.WriteByte('}')
	default:
		return fmt.Errorf("pyjson: cannot write %T as JSON", v)
	}
	return nil
}

// Sorted is m as an Object whose keys are in sorted order, the way
// json.dumps(sort_keys=True) writes a dict (byte order of UTF-8 is code-point order,
// Python's). It reads m when written, so m must not change until then.
func Sorted[V any](m map[string]V) Object {
	return sorted[V]{slices.Sorted(maps.Keys(m)), m}
}

type sorted[V any] struct {
	keys []string
	m    map[string]V
}

func (s sorted[V]) Len() int               { return len(s.keys) }
func (s sorted[V]) At(i int) (string, any) { return s.keys[i], s.m[s.keys[i]] }

// Float formats f as Python's repr(float) does, which is also how json.dumps writes
// a finite float: the shortest round-trip digits, fixed notation for decimal
// exponents in [-4, 16), scientific otherwise, and ".0" on integral values.
func Float(f float64) string {
	if f == 0 {
		if math.Signbit(f) {
			return "-0.0"
		}
		return "0.0"
	}
	e := strconv.FormatFloat(f, 'e', -1, 64)
	exp, _ := strconv.Atoi(e[strings.IndexByte(e, 'e')+1:])
	if exp >= -4 && exp < 16 {
		s := strconv.FormatFloat(f, 'f', -1, 64)
		if !strings.Contains(s, ".") {
			s += ".0"
		}
		return s
	}
	return e
}
