package stages

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"

	"github.com/quantstream/quantstream/internal/pyjson"
)

// Obj is a JSON object that keeps its key order, as Python dicts do.
type Obj []Field

// Field is one key of an Obj.
type Field struct {
	K string
	V any
}

// Get returns the value of key k.
func (o Obj) Get(k string) (any, bool) {
	for _, f := range o {
		if f.K == k {
			return f.V, true
		}
	}
	return nil, false
}

// Set replaces k in place, or appends it (Python dict assignment).
func (o *Obj) Set(k string, v any) {
	for i := range *o {
		if (*o)[i].K == k {
			(*o)[i].V = v
			return
		}
	}
	*o = append(*o, Field{k, v})
}

// Delete removes k.
func (o *Obj) Delete(k string) {
	for i := range *o {
		if (*o)[i].K == k {
			*o = append((*o)[:i], (*o)[i+1:]...)
			return
		}
	}
}

// Len and At make an Obj a pyjson.Object, which pyjson writes.
func (o Obj) Len() int { return len(o) }

// At returns the i-th key and its value.
func (o Obj) At(i int) (string, any) { return o[i].K, o[i].V }

// MarshalJSON writes compact JSON in key order (for comparisons and tests).
func (o Obj) MarshalJSON() ([]byte, error) { return pyjson.Compact(o) }

// marshalPython writes v as ModelOpt's json.dump(v, indent=4) does.
func marshalPython(v any) ([]byte, error) { return pyjson.Indent(v, "    ") }

// ParseOrdered decodes JSON keeping object key order (as Obj) and number literals
// (as json.Number), so a config.json can be rewritten without reordering it.
func ParseOrdered(b []byte) (any, error) {
	d := json.NewDecoder(bytes.NewReader(b))
	d.UseNumber()
	v, err := parseVal(d)
	if err != nil {
		return nil, err
	}
	if _, err := d.Token(); err != io.EOF {
		return nil, fmt.Errorf("stages: trailing data after JSON value")
	}
	return v, nil
}

func parseVal(d *json.Decoder) (any, error) {
	t, err := d.Token()
	if err != nil {
		return nil, err
	}
	switch x := t.(type) {
	case json.Delim:
		switch x {
		case '{':
			o := Obj{}
			for d.More() {
				k, err := d.Token()
				if err != nil {
					return nil, err
				}
				v, err := parseVal(d)
				if err != nil {
					return nil, err
				}
				o = append(o, Field{k.(string), v})
			}
			_, err := d.Token()
			return o, err
		case '[':
			a := []any{}
			for d.More() {
				v, err := parseVal(d)
				if err != nil {
					return nil, err
				}
				a = append(a, v)
			}
			_, err := d.Token()
			return a, err
		}
		return nil, fmt.Errorf("stages: unexpected %v", x)
	default:
		return x, nil
	}
}
