package modelopt

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"strconv"

	"github.com/quantstream/quantstream/internal/pyjson"
	"github.com/quantstream/quantstream/quant"
)

// EncodeJSON writes a decoded pickle tree in the tagged JSON form of the golden set's
// saved_decoded/modelopt_state.json: dicts with only string keys are JSON objects in
// insertion order; everything JSON cannot express is an object with one "$" key:
// {"$tuple": [...]}, {"$size": [...]}, {"$dtype": "bfloat16"}, {"$dict": [[k, v], ...]},
// {"$ordereddict": [[k, v], ...]}, {"$float": "inf"|"-inf"|"nan"} and
// {"$tensor": {storage_class, storage_key, location, storage_numel, storage_offset,
// shape, stride, requires_grad, dtype, values}}. Floats are written as Python's repr
// writes them (always with a "." or an exponent), ints without.
func EncodeJSON(v any) ([]byte, error) {
	var b bytes.Buffer
	w := walker{maxDepth: DefaultLimits.MaxDepth, maxVisits: DefaultLimits.MaxVisits}
	if err := encodeValue(&b, v, &w, 0); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

func encodeString(b *bytes.Buffer, s string) { pyjson.WriteString(b, s) }

// pyFloat formats f as Python's repr(float) does.
func pyFloat(f float64) string { return pyjson.Float(f) }

func encodeFloat(b *bytes.Buffer, f float64) {
	switch {
	case math.IsNaN(f):
		b.WriteString(`{"$float": "nan"}`)
	case math.IsInf(f, 1):
		b.WriteString(`{"$float": "inf"}`)
	case math.IsInf(f, -1):
		b.WriteString(`{"$float": "-inf"}`)
	default:
		b.WriteString(pyFloat(f))
	}
}

func encodeInts(b *bytes.Buffer, xs []int64) {
	b.WriteByte('[')
	for i, x := range xs {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(strconv.FormatInt(x, 10))
	}
	b.WriteByte(']')
}

func encodeValue(b *bytes.Buffer, v any, w *walker, depth int) error {
	if err := w.enter(depth); err != nil {
		return err
	}
	switch t := v.(type) {
	case nil:
		b.WriteString("null")
	case bool:
		b.WriteString(strconv.FormatBool(t))
	case int64:
		b.WriteString(strconv.FormatInt(t, 10))
	case float64:
		encodeFloat(b, t)
	case string:
		encodeString(b, t)
	case DType:
		b.WriteString(`{"$dtype": `)
		encodeString(b, string(t))
		b.WriteByte('}')
	case Size:
		b.WriteString(`{"$size": `)
		encodeInts(b, t)
		b.WriteByte('}')
	case Tuple:
		b.WriteString(`{"$tuple": `)
		if err := encodeSeq(b, t, w, depth); err != nil {
			return err
		}
		b.WriteByte('}')
	case *List:
		return encodeSeq(b, t.Items, w, depth)
	case *Dict:
		return encodeDict(b, t, w, depth)
	case *Tensor:
		return encodeTensor(b, t)
	default:
		return fmt.Errorf("%w: cannot encode a %T", ErrUnsupported, v)
	}
	return nil
}

func encodeSeq(b *bytes.Buffer, items []any, w *walker, depth int) error {
	b.WriteByte('[')
	for i, e := range items {
		if i > 0 {
			b.WriteString(", ")
		}
		if err := encodeValue(b, e, w, depth+1); err != nil {
			return err
		}
	}
	b.WriteByte(']')
	return nil
}

func encodeDict(b *bytes.Buffer, d *Dict, w *walker, depth int) error {
	allStr := !d.Ordered
	for _, k := range d.Keys {
		if _, ok := k.(string); !ok {
			allStr = false
		}
	}
	if allStr {
		b.WriteByte('{')
		for i, k := range d.Keys {
			if i > 0 {
				b.WriteString(", ")
			}
			encodeString(b, k.(string))
			b.WriteString(": ")
			if err := encodeValue(b, d.Values[i], w, depth+1); err != nil {
				return err
			}
		}
		b.WriteByte('}')
		return nil
	}
	if d.Ordered {
		b.WriteString(`{"$ordereddict": [`)
	} else {
		b.WriteString(`{"$dict": [`)
	}
	for i, k := range d.Keys {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteByte('[')
		if err := encodeValue(b, k, w, depth+1); err != nil {
			return err
		}
		b.WriteString(", ")
		if err := encodeValue(b, d.Values[i], w, depth+1); err != nil {
			return err
		}
		b.WriteByte(']')
	}
	b.WriteString("]}")
	return nil
}

func encodeTensor(b *bytes.Buffer, t *Tensor) error {
	b.WriteString(`{"$tensor": {"storage_class": `)
	encodeString(b, t.StorageClass)
	b.WriteString(`, "storage_key": `)
	encodeString(b, t.StorageKey)
	b.WriteString(`, "location": `)
	encodeString(b, t.Location)
	fmt.Fprintf(b, `, "storage_numel": %d, "storage_offset": %d, "shape": `, t.StorageNumel, t.StorageOffset)
	encodeInts(b, t.Shape)
	b.WriteString(`, "stride": `)
	encodeInts(b, t.Stride)
	fmt.Fprintf(b, `, "requires_grad": %t, "dtype": `, t.RequiresGrad)
	encodeString(b, t.DType.String())
	b.WriteString(`, "values": [`)
	esz := t.DType.Size()
	if esz == 0 || len(t.Data)%esz != 0 {
		return fmt.Errorf("%w: tensor data of %d bytes for %s", ErrCorrupt, len(t.Data), t.DType)
	}
	for i := 0; i < len(t.Data); i += esz {
		if i > 0 {
			b.WriteString(", ")
		}
		e := t.Data[i : i+esz]
		switch t.DType {
		case quant.BF16:
			encodeFloat(b, float64(quant.BF16ToF32(binary.LittleEndian.Uint16(e))))
		case quant.F16:
			encodeFloat(b, float64(quant.F16ToF32(binary.LittleEndian.Uint16(e))))
		case quant.F32:
			encodeFloat(b, float64(math.Float32frombits(binary.LittleEndian.Uint32(e))))
		case quant.F64:
			encodeFloat(b, math.Float64frombits(binary.LittleEndian.Uint64(e)))
		case quant.U8:
			b.WriteString(strconv.Itoa(int(e[0])))
		case quant.I8:
			b.WriteString(strconv.Itoa(int(int8(e[0]))))
		case quant.I16:
			b.WriteString(strconv.Itoa(int(int16(binary.LittleEndian.Uint16(e)))))
		case quant.I32:
			b.WriteString(strconv.Itoa(int(int32(binary.LittleEndian.Uint32(e)))))
		case quant.I64:
			b.WriteString(strconv.FormatInt(int64(binary.LittleEndian.Uint64(e)), 10))
		case quant.BOOL:
			b.WriteString(strconv.FormatBool(e[0] != 0))
		default:
			return fmt.Errorf("%w: tensor values of dtype %s", ErrUnsupported, t.DType)
		}
	}
	b.WriteString("]}}")
	return nil
}
