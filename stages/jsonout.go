package stages

import (
	"bytes"
	"encoding/json"
	"fmt"
	"github.com/quantstream/quantstream/internal/pyjson"
	"io"
	"strconv"
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

// MarshalJSON writes compact JSON in key order (for comparisons and tests).
func (o Obj) MarshalJSON() ([]byte, error) {
	var b bytes.Buffer
	if err := writePy(&b, o, "", ""); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// MarshalPython writes v as Python's json.dump(v, indent=4) does: ", "/": "
// separators, ASCII escapes, no trailing newline.
func MarshalPython(v any) ([]byte, error) {
	var b bytes.Buffer
	if err := writePy(&b, v, "\n", "    "); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

func writePy(w *bytes.Buffer, v any, nl, ind string) error {
	return writeVal(w, v, nl, ind, 0)
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
	sep := ", "
	if nl != "" {
		sep = ","
	}
	if nl == "" && ind == "" {
		sep = ","
	}
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
		pyjson.WriteString(w, x)
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
	case Obj:
		if len(x) == 0 {
			w.WriteString("{}")
			return nil
		}
		w.WriteByte('{')
		for i, f := range x {
			if i > 0 {
				w.WriteString(sep)
			}
			newline(depth + 1)
			pyjson.WriteString(w, f.K)
			if nl == "" && ind == "" {
				w.WriteString(":")
			} else {
				w.WriteString(": ")
			}
			if err := writeVal(w, f.V, nl, ind, depth+1); err != nil {
				return err
			}
		}
		newline(depth)
		w.WriteByte('}')
	default:
		return fmt.Errorf("stages: cannot write %T as JSON", v)
	}
	return nil
}

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
