package modelopt

import (
	"fmt"
	"math"
	"strconv"

	"github.com/quantstream/quantstream/quant"
)

// The decoded pickle is a tree of these Go values:
//
//	None                   nil
//	bool, int, float, str  bool, int64, float64, string
//	list                   *List
//	tuple                  Tuple
//	dict                   *Dict (insertion order kept, any hashable key)
//	collections.OrderedDict *Dict with Ordered set
//	torch.Size             Size
//	torch.dtype            DType ("bfloat16", "float32", ...)
//	tensor                 *Tensor (data read from the archive's data/<key> entry)
//
// Lists and dicts are pointers because the pickle builds them empty, memoizes them and
// fills them afterwards; the tree can therefore share nodes (and, in a hostile file,
// contain cycles), which is why every walker in this package is bounded.

// Tuple is a Python tuple.
type Tuple []any

// List is a Python list.
type List struct{ Items []any }

// Size is a torch.Size.
type Size []int64

// DType is a torch.dtype, by its attribute name in the torch module ("bfloat16").
type DType string

// Quant is the element type of d (quant.BF16 for "bfloat16"), quant.Invalid for a
// name the unpickler does not accept.
func (d DType) Quant() quant.DType { return torchDTypes[string(d)] }

// Dict is a Python dict (or an OrderedDict when Ordered): keys in insertion order.
type Dict struct {
	Ordered bool
	Keys    []any
	Values  []any
	index   map[string]int
}

// Tensor is a tensor rebuilt by torch._utils._rebuild_tensor_v2. Data holds the
// elements of the view (Shape, Stride, StorageOffset applied) in row-major order,
// little-endian; the Tensor owns it.
type Tensor struct {
	StorageClass  string // "torch.BFloat16Storage"
	StorageKey    string // the archive entry data/<key>
	Location      string // "cpu"
	StorageNumel  int64
	StorageOffset int64
	Shape         []int64
	Stride        []int64
	RequiresGrad  bool
	DType         quant.DType
	Data          []byte
}

// Quant returns the tensor as a quant.Tensor sharing Data.
func (t *Tensor) Quant() quant.Tensor {
	return quant.Tensor{DType: t.DType, Shape: t.Shape, Data: t.Data}
}

// hashKey gives the identity Python's dict uses for a key, or false for an unhashable
// key. Python treats True, 1 and 1.0 as the same key, so numbers are normalized.
func hashKey(k any) (string, bool) {
	switch v := k.(type) {
	case nil:
		return "N", true
	case bool:
		if v {
			return "i1", true
		}
		return "i0", true
	case int64:
		return "i" + strconv.FormatInt(v, 10), true
	case float64:
		if v == math.Trunc(v) && math.Abs(v) < 1<<62 {
			return "i" + strconv.FormatInt(int64(v), 10), true
		}
		return "f" + strconv.FormatUint(math.Float64bits(v), 16), true
	case string:
		return "s" + v, true
	case DType:
		return "d" + string(v), true
	case Tuple:
		s := "("
		for _, e := range v {
			h, ok := hashKey(e)
			if !ok {
				return "", false
			}
			s += strconv.Itoa(len(h)) + ":" + h
		}
		return s + ")", true
	case Size:
		s := "S("
		for _, e := range v {
			s += strconv.FormatInt(e, 10) + ","
		}
		return s + ")", true
	}
	return "", false
}

// Set stores v under k, keeping the position of an existing equal key as Python does.
func (d *Dict) Set(k, v any) error {
	h, ok := hashKey(k)
	if !ok {
		return fmt.Errorf("%w: unhashable dict key of type %T", ErrCorrupt, k)
	}
	if d.index == nil {
		d.index = map[string]int{}
	}
	if i, ok := d.index[h]; ok {
		d.Values[i] = v
		return nil
	}
	d.index[h] = len(d.Keys)
	d.Keys = append(d.Keys, k)
	d.Values = append(d.Values, v)
	return nil
}

// Get returns the value stored under k.
func (d *Dict) Get(k any) (any, bool) {
	if d == nil {
		return nil, false
	}
	h, ok := hashKey(k)
	if !ok {
		return nil, false
	}
	i, ok := d.index[h]
	if !ok {
		return nil, false
	}
	return d.Values[i], true
}

// Len is the number of entries.
func (d *Dict) Len() int {
	if d == nil {
		return 0
	}
	return len(d.Keys)
}
