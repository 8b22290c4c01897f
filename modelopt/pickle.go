package modelopt

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"strings"
	"unicode/utf8"

	"github.com/quantstream/quantstream/quant"
)

var (
	// ErrCorrupt is returned for a modelopt_state file that is damaged or malformed:
	// truncated data, a bad opcode argument, a length beyond the data, a wrong stack shape.
	ErrCorrupt = errors.New("modelopt: corrupt modelopt_state")
	// ErrUnsupported is returned for a well-formed pickle that uses something this
	// reader refuses on purpose: an opcode outside the allowed set, a global that is not
	// on the allow list, a call with unexpected arguments.
	ErrUnsupported = errors.New("modelopt: unsupported pickle content")
	// ErrLimit is returned when a file exceeds one of the Limits (size, object count,
	// nesting depth, tensor bytes).
	ErrLimit = errors.New("modelopt: limit exceeded")
)

// Limits bound what the unpickler may allocate and how deep the decoded tree may go.
// The zero value of a field means its default (DefaultLimits).
type Limits struct {
	MaxPickleBytes int64 // size of data.pkl
	MaxObjects     int   // values pushed on the pickle stack, in total
	MaxMemo        int   // memo entries
	MaxDepth       int   // nesting of containers in the result, and of MARKs
	MaxVisits      int   // nodes visited when walking the result (shared nodes count each time)
	MaxTensorBytes int64 // bytes of one tensor view, and of one storage entry
	MaxTotalBytes  int64 // bytes of all storages together
}

// DefaultLimits are generous for any modelopt_state (a few MB of attributes) and small
// enough that a hostile file cannot exhaust memory.
var DefaultLimits = Limits{
	MaxPickleBytes: 256 << 20,
	MaxObjects:     1 << 22,
	MaxMemo:        1 << 22,
	MaxDepth:       64,
	MaxVisits:      1 << 24,
	MaxTensorBytes: 1 << 30,
	MaxTotalBytes:  4 << 30,
}

func (l Limits) withDefaults() Limits {
	d := DefaultLimits
	if l.MaxPickleBytes > 0 {
		d.MaxPickleBytes = l.MaxPickleBytes
	}
	if l.MaxObjects > 0 {
		d.MaxObjects = l.MaxObjects
	}
	if l.MaxMemo > 0 {
		d.MaxMemo = l.MaxMemo
	}
	if l.MaxDepth > 0 {
		d.MaxDepth = l.MaxDepth
	}
	if l.MaxVisits > 0 {
		d.MaxVisits = l.MaxVisits
	}
	if l.MaxTensorBytes > 0 {
		d.MaxTensorBytes = l.MaxTensorBytes
	}
	if l.MaxTotalBytes > 0 {
		d.MaxTotalBytes = l.MaxTotalBytes
	}
	return d
}

// StorageLoader returns the raw little-endian bytes of the archive entry data/<key>,
// which must be exactly want bytes long. The unpickler calls it once per key.
type StorageLoader func(key string, want int64) ([]byte, error)

// Pickle opcodes, protocol 2. These byte values are part of Python's pickle format.
const (
	opMark       = '('
	opStop       = '.'
	opBinInt     = 'J'
	opBinInt1    = 'K'
	opBinInt2    = 'M'
	opNone       = 'N'
	opBinPersID  = 'Q'
	opReduce     = 'R'
	opBinUnicode = 'X'
	opEmptyList  = ']'
	opAppends    = 'e'
	opGlobal     = 'c'
	opBinGet     = 'h'
	opLongBinGet = 'j'
	opBinPut     = 'q'
	opLongBinPut = 'r'
	opSetItem    = 's'
	opTuple      = 't'
	opSetItems   = 'u'
	opEmptyTuple = ')'
	opEmptyDict  = '}'
	opBinFloat   = 'G'
	opProto      = 0x80
	opTuple1     = 0x85
	opTuple2     = 0x86
	opTuple3     = 0x87
	opNewTrue    = 0x88
	opNewFalse   = 0x89
	opLong1      = 0x8a
)

// global is a reference to an allowed Python global; it is only ever a value on the
// stack (dtype, storage class) or the callee of REDUCE. Nothing is executed: REDUCE
// dispatches on the name to a Go function that builds plain data.
type global struct{ module, name string }

func (g global) String() string { return g.module + "." + g.name }

// storageClasses maps the allowed torch storage classes to their element dtype.
var storageClasses = map[string]quant.DType{
	"BFloat16Storage": quant.BF16,
	"FloatStorage":    quant.F32,
	"HalfStorage":     quant.F16,
	"DoubleStorage":   quant.F64,
	"ByteStorage":     quant.U8,
	"CharStorage":     quant.I8,
	"ShortStorage":    quant.I16,
	"IntStorage":      quant.I32,
	"LongStorage":     quant.I64,
	"BoolStorage":     quant.BOOL,
}

// torchDTypes are the torch.dtype attributes accepted as values, with their
// element types.
var torchDTypes = map[string]quant.DType{
	"bfloat16": quant.BF16, "float32": quant.F32, "float": quant.F32, "float16": quant.F16,
	"half": quant.F16, "float64": quant.F64, "double": quant.F64, "uint8": quant.U8,
	"int8": quant.I8, "int16": quant.I16, "int32": quant.I32, "int64": quant.I64,
	"bool": quant.BOOL, "float8_e4m3fn": quant.F8E4M3, "float8_e5m2": quant.F8E5M2,
}

func allowedGlobal(module, name string) bool {
	switch module {
	case "torch":
		if _, ok := torchDTypes[name]; name == "Size" || ok {
			return true
		}
		_, ok := storageClasses[name]
		return ok
	case "torch._utils":
		return name == "_rebuild_tensor_v2"
	case "collections":
		return name == "OrderedDict"
	}
	return false
}

// storage is what BINPERSID yields: one storage of the archive.
type storage struct {
	class    string
	key      string
	location string
	numel    int64
	dtype    quant.DType
	data     []byte
}

type unpickler struct {
	data    []byte
	pos     int
	lim     Limits
	stack   []any
	marks   []int
	memo    map[uint32]any
	objects int
	load    StorageLoader
	stores  map[string]*storage
	total   int64
}

// Unpickle decodes a pickle (protocol ≤ 2) restricted to the opcodes and globals
// torch.save uses for plain data and tensors. It executes nothing: the only callables
// are torch.Size, collections.OrderedDict and torch._utils._rebuild_tensor_v2, each
// rebuilt by Go code. load supplies tensor storages (nil: a pickle with a tensor is an
// error). The result is checked against lim: no cycle, nesting ≤ MaxDepth, and a walk
// of the whole tree visits ≤ MaxVisits nodes.
func Unpickle(data []byte, load StorageLoader, lim Limits) (any, error) {
	lim = lim.withDefaults()
	if int64(len(data)) > lim.MaxPickleBytes {
		return nil, fmt.Errorf("%w: pickle of %d bytes > %d", ErrLimit, len(data), lim.MaxPickleBytes)
	}
	u := &unpickler{data: data, lim: lim, memo: map[uint32]any{}, load: load, stores: map[string]*storage{}}
	v, err := u.run()
	if err != nil {
		return nil, err
	}
	w := walker{maxDepth: lim.MaxDepth, maxVisits: lim.MaxVisits}
	if err := w.check(v, 0); err != nil {
		return nil, err
	}
	return v, nil
}

func (u *unpickler) errf(format string, args ...any) error {
	return fmt.Errorf("%w: at byte %d: %s", ErrCorrupt, u.pos, fmt.Sprintf(format, args...))
}

func (u *unpickler) take(n int) ([]byte, error) {
	if n < 0 || n > len(u.data)-u.pos {
		return nil, u.errf("need %d bytes, %d left", n, len(u.data)-u.pos)
	}
	b := u.data[u.pos : u.pos+n]
	u.pos += n
	return b, nil
}

func (u *unpickler) line() (string, error) {
	const maxLine = 256 // module and attribute names; far more than any real one
	rest := u.data[u.pos:]
	if len(rest) > maxLine {
		rest = rest[:maxLine]
	}
	i := strings.IndexByte(string(rest), '\n')
	if i < 0 {
		return "", u.errf("GLOBAL name without newline within %d bytes", maxLine)
	}
	s := string(rest[:i])
	u.pos += i + 1
	return s, nil
}

func (u *unpickler) push(v any) error {
	u.objects++
	if u.objects > u.lim.MaxObjects {
		return fmt.Errorf("%w: more than %d pickle objects", ErrLimit, u.lim.MaxObjects)
	}
	u.stack = append(u.stack, v)
	return nil
}

func (u *unpickler) pop() (any, error) {
	base := 0
	if len(u.marks) > 0 {
		base = u.marks[len(u.marks)-1]
	}
	if len(u.stack) <= base {
		return nil, u.errf("pop from empty stack")
	}
	v := u.stack[len(u.stack)-1]
	u.stack = u.stack[:len(u.stack)-1]
	return v, nil
}

// popMark returns the items pushed since the last MARK and removes them and the mark.
func (u *unpickler) popMark() ([]any, error) {
	if len(u.marks) == 0 {
		return nil, u.errf("no MARK on the stack")
	}
	m := u.marks[len(u.marks)-1]
	u.marks = u.marks[:len(u.marks)-1]
	items := append([]any(nil), u.stack[m:]...)
	u.stack = u.stack[:m]
	return items, nil
}

func (u *unpickler) top() (any, error) {
	base := 0
	if len(u.marks) > 0 {
		base = u.marks[len(u.marks)-1]
	}
	if len(u.stack) <= base {
		return nil, u.errf("empty stack")
	}
	return u.stack[len(u.stack)-1], nil
}

func (u *unpickler) run() (any, error) {
	for {
		if u.pos >= len(u.data) {
			return nil, u.errf("pickle ends without STOP")
		}
		op := u.data[u.pos]
		u.pos++
		var err error
		switch op {
		case opProto:
			var b []byte
			if b, err = u.take(1); err == nil && b[0] > 2 {
				err = fmt.Errorf("%w: pickle protocol %d (want ≤ 2)", ErrUnsupported, b[0])
			}
		case opStop:
			v, err := u.pop()
			if err != nil {
				return nil, err
			}
			if len(u.stack) != 0 || len(u.marks) != 0 {
				return nil, u.errf("STOP with %d values and %d marks left", len(u.stack), len(u.marks))
			}
			return v, nil
		case opMark:
			if len(u.marks) >= u.lim.MaxDepth {
				return nil, fmt.Errorf("%w: MARK nesting deeper than %d", ErrLimit, u.lim.MaxDepth)
			}
			u.marks = append(u.marks, len(u.stack))
		case opNone:
			err = u.push(nil)
		case opNewTrue:
			err = u.push(true)
		case opNewFalse:
			err = u.push(false)
		case opBinInt:
			var b []byte
			if b, err = u.take(4); err == nil {
				err = u.push(int64(int32(binary.LittleEndian.Uint32(b))))
			}
		case opBinInt1:
			var b []byte
			if b, err = u.take(1); err == nil {
				err = u.push(int64(b[0]))
			}
		case opBinInt2:
			var b []byte
			if b, err = u.take(2); err == nil {
				err = u.push(int64(binary.LittleEndian.Uint16(b)))
			}
		case opLong1:
			err = u.long1()
		case opBinFloat:
			var b []byte
			if b, err = u.take(8); err == nil {
				err = u.push(math.Float64frombits(binary.BigEndian.Uint64(b)))
			}
		case opBinUnicode:
			var b []byte
			if b, err = u.take(4); err == nil {
				n := binary.LittleEndian.Uint32(b)
				if int64(n) > int64(len(u.data)-u.pos) {
					return nil, u.errf("BINUNICODE length %d beyond the %d bytes left", n, len(u.data)-u.pos)
				}
				if b, err = u.take(int(n)); err == nil {
					if !utf8.Valid(b) {
						return nil, u.errf("BINUNICODE is not UTF-8")
					}
					err = u.push(string(b))
				}
			}
		case opEmptyList:
			err = u.push(&List{})
		case opEmptyDict:
			err = u.push(&Dict{})
		case opEmptyTuple:
			err = u.push(Tuple{})
		case opTuple:
			var items []any
			if items, err = u.popMark(); err == nil {
				err = u.push(Tuple(items))
			}
		case opTuple1, opTuple2, opTuple3:
			n := int(op-opTuple1) + 1
			items := make(Tuple, n)
			for i := n - 1; i >= 0 && err == nil; i-- {
				items[i], err = u.pop()
			}
			if err == nil {
				err = u.push(items)
			}
		case opAppends:
			err = u.appends()
		case opSetItem:
			err = u.setItem()
		case opSetItems:
			err = u.setItems()
		case opBinPut, opLongBinPut:
			err = u.put(op == opLongBinPut)
		case opBinGet, opLongBinGet:
			err = u.get(op == opLongBinGet)
		case opGlobal:
			err = u.global()
		case opReduce:
			err = u.reduce()
		case opBinPersID:
			err = u.persID()
		default:
			return nil, fmt.Errorf("%w: opcode 0x%02x at byte %d is not allowed", ErrUnsupported, op, u.pos-1)
		}
		if err != nil {
			return nil, err
		}
	}
}

func (u *unpickler) long1() error {
	b, err := u.take(1)
	if err != nil {
		return err
	}
	n := int(b[0])
	if n > 8 {
		return fmt.Errorf("%w: LONG1 of %d bytes (only 64-bit integers are supported)", ErrUnsupported, n)
	}
	if b, err = u.take(n); err != nil {
		return err
	}
	var v uint64
	for i := n - 1; i >= 0; i-- {
		v = v<<8 | uint64(b[i])
	}
	if n > 0 && n < 8 && b[n-1]&0x80 != 0 { // two's complement, sign-extend
		v |= ^uint64(0) << (8 * n)
	}
	if n == 8 && b[7]&0x80 == 0 && int64(v) < 0 {
		return fmt.Errorf("%w: LONG1 value beyond int64", ErrUnsupported)
	}
	return u.push(int64(v))
}

func (u *unpickler) appends() error {
	items, err := u.popMark()
	if err != nil {
		return err
	}
	t, err := u.top()
	if err != nil {
		return err
	}
	l, ok := t.(*List)
	if !ok {
		return u.errf("APPENDS to a %T", t)
	}
	l.Items = append(l.Items, items...)
	return nil
}

func (u *unpickler) setItem() error {
	v, err := u.pop()
	if err != nil {
		return err
	}
	k, err := u.pop()
	if err != nil {
		return err
	}
	return u.setOn(k, v)
}

func (u *unpickler) setItems() error {
	items, err := u.popMark()
	if err != nil {
		return err
	}
	if len(items)%2 != 0 {
		return u.errf("SETITEMS with an odd number (%d) of items", len(items))
	}
	for i := 0; i < len(items); i += 2 {
		if err := u.setOn(items[i], items[i+1]); err != nil {
			return err
		}
	}
	return nil
}

func (u *unpickler) setOn(k, v any) error {
	t, err := u.top()
	if err != nil {
		return err
	}
	d, ok := t.(*Dict)
	if !ok {
		return u.errf("SETITEM on a %T", t)
	}
	switch k.(type) {
	case nil, bool, int64, float64, string:
	default:
		// Python allows tuple keys too; modelopt_state never has them, and refusing them
		// keeps key hashing flat.
		return fmt.Errorf("%w: dict key of type %T at byte %d", ErrUnsupported, k, u.pos)
	}
	return d.Set(k, v)
}

func (u *unpickler) put(long bool) error {
	idx, err := u.memoIndex(long)
	if err != nil {
		return err
	}
	t, err := u.top()
	if err != nil {
		return err
	}
	if _, ok := u.memo[idx]; !ok && len(u.memo) >= u.lim.MaxMemo {
		return fmt.Errorf("%w: more than %d memo entries", ErrLimit, u.lim.MaxMemo)
	}
	u.memo[idx] = t
	return nil
}

// memoIndex reads the memo key of a BINPUT/BINGET (one byte) or LONG_BINPUT/LONG_BINGET
// (four bytes, little-endian) opcode.
func (u *unpickler) memoIndex(long bool) (uint32, error) {
	if long {
		b, err := u.take(4)
		if err != nil {
			return 0, err
		}
		return binary.LittleEndian.Uint32(b), nil
	}
	b, err := u.take(1)
	if err != nil {
		return 0, err
	}
	return uint32(b[0]), nil
}

func (u *unpickler) get(long bool) error {
	idx, err := u.memoIndex(long)
	if err != nil {
		return err
	}
	v, ok := u.memo[idx]
	if !ok {
		return u.errf("memo key %d not defined", idx)
	}
	return u.push(v)
}

func (u *unpickler) global() error {
	module, err := u.line()
	if err != nil {
		return err
	}
	name, err := u.line()
	if err != nil {
		return err
	}
	if !allowedGlobal(module, name) {
		return fmt.Errorf("%w: global %s.%s is not on the allow list (torch.Size, torch dtypes and storages, torch._utils._rebuild_tensor_v2, collections.OrderedDict)", ErrUnsupported, module, name)
	}
	if _, ok := torchDTypes[name]; module == "torch" && ok {
		return u.push(DType(name))
	}
	return u.push(global{module, name})
}

func (u *unpickler) reduce() error {
	args, err := u.pop()
	if err != nil {
		return err
	}
	fn, err := u.pop()
	if err != nil {
		return err
	}
	g, ok := fn.(global)
	if !ok {
		return u.errf("REDUCE calls a %T", fn)
	}
	a, ok := args.(Tuple)
	if !ok {
		return u.errf("REDUCE %s with arguments of type %T", g, args)
	}
	var v any
	switch g {
	case global{"torch", "Size"}:
		v, err = u.size(a)
	case global{"collections", "OrderedDict"}:
		if len(a) != 0 {
			return fmt.Errorf("%w: OrderedDict called with %d arguments (want none)", ErrUnsupported, len(a))
		}
		v = &Dict{Ordered: true}
	case global{"torch._utils", "_rebuild_tensor_v2"}:
		v, err = u.rebuildTensor(a)
	default:
		return fmt.Errorf("%w: %s is not callable", ErrUnsupported, g)
	}
	if err != nil {
		return err
	}
	return u.push(v)
}

func (u *unpickler) size(a Tuple) (Size, error) {
	if len(a) != 1 {
		return nil, fmt.Errorf("%w: torch.Size called with %d arguments", ErrUnsupported, len(a))
	}
	dims, ok := a[0].(Tuple)
	if !ok {
		return nil, u.errf("torch.Size of a %T", a[0])
	}
	s := make(Size, len(dims))
	for i, d := range dims {
		n, ok := d.(int64)
		if !ok {
			return nil, u.errf("torch.Size dimension of type %T", d)
		}
		s[i] = n
	}
	return s, nil
}

func (u *unpickler) persID() error {
	pid, err := u.pop()
	if err != nil {
		return err
	}
	t, ok := pid.(Tuple)
	if !ok || len(t) != 5 {
		return u.errf("persistent id %T of length %d, want ('storage', class, key, location, numel)", pid, len(t))
	}
	tag, _ := t[0].(string)
	cls, okC := t[1].(global)
	key, okK := t[2].(string)
	loc, okL := t[3].(string)
	numel, okN := t[4].(int64)
	if tag != "storage" || !okC || !okK || !okL || !okN || cls.module != "torch" {
		return u.errf("persistent id %v is not ('storage', torch.<X>Storage, key, location, numel)", t)
	}
	dt, ok := storageClasses[cls.name]
	if !ok {
		return fmt.Errorf("%w: storage class %s", ErrUnsupported, cls)
	}
	if numel < 0 {
		return u.errf("storage %q with %d elements", key, numel)
	}
	if s, ok := u.stores[key]; ok {
		if s.dtype != dt || s.numel != numel {
			return u.errf("storage %q used as %s×%d and %s×%d", key, s.dtype, s.numel, dt, numel)
		}
		return u.push(s)
	}
	want, ok := dt.ByteLen(numel)
	if !ok || numel > u.lim.MaxTensorBytes || want > u.lim.MaxTensorBytes {
		return fmt.Errorf("%w: storage %q of %d %s elements > %d bytes", ErrLimit, key, numel, dt, u.lim.MaxTensorBytes)
	}
	if u.total+want > u.lim.MaxTotalBytes {
		return fmt.Errorf("%w: storages exceed %d bytes in total", ErrLimit, u.lim.MaxTotalBytes)
	}
	if u.load == nil {
		return fmt.Errorf("%w: tensor storage %q but no archive to read it from", ErrUnsupported, key)
	}
	data, err := u.load(key, want)
	if err != nil {
		return err
	}
	if int64(len(data)) != want {
		return fmt.Errorf("%w: storage %q has %d bytes, want %d", ErrCorrupt, key, len(data), want)
	}
	u.total += want
	s := &storage{class: cls.String(), key: key, location: loc, numel: numel, dtype: dt, data: data}
	u.stores[key] = s
	return u.push(s)
}

func int64s(v any) ([]int64, bool) {
	switch t := v.(type) {
	case Tuple:
		out := make([]int64, len(t))
		for i, e := range t {
			n, ok := e.(int64)
			if !ok {
				return nil, false
			}
			out[i] = n
		}
		return out, true
	case Size:
		return []int64(t), true
	}
	return nil, false
}

// rebuildTensor is _rebuild_tensor_v2(storage, storage_offset, size, stride,
// requires_grad, backward_hooks[, metadata]): a strided view of a storage.
func (u *unpickler) rebuildTensor(a Tuple) (*Tensor, error) {
	if len(a) != 6 && len(a) != 7 {
		return nil, fmt.Errorf("%w: _rebuild_tensor_v2 with %d arguments", ErrUnsupported, len(a))
	}
	s, ok := a[0].(*storage)
	if !ok {
		return nil, u.errf("_rebuild_tensor_v2 storage argument of type %T", a[0])
	}
	off, okO := a[1].(int64)
	shape, okS := int64s(a[2])
	stride, okT := int64s(a[3])
	rg, okR := a[4].(bool)
	hooks, okH := a[5].(*Dict)
	if !okO || !okS || !okT || !okR || !okH || len(shape) != len(stride) {
		return nil, u.errf("_rebuild_tensor_v2 arguments %T %T %T %T %T", a[1], a[2], a[3], a[4], a[5])
	}
	if hooks.Len() != 0 {
		return nil, fmt.Errorf("%w: tensor with backward hooks", ErrUnsupported)
	}
	if len(a) == 7 {
		if m, ok := a[6].(*Dict); !ok || m.Len() != 0 {
			return nil, fmt.Errorf("%w: tensor with metadata", ErrUnsupported)
		}
	}
	esz := int64(s.dtype.Size())
	if esz == 0 {
		return nil, fmt.Errorf("%w: tensor of sub-byte dtype %s", ErrUnsupported, s.dtype)
	}
	numel, last := int64(1), off
	for i, d := range shape {
		if d < 0 || stride[i] < 0 {
			return nil, u.errf("tensor shape %v stride %v", shape, stride)
		}
		if d != 0 && numel > u.lim.MaxTensorBytes/d {
			return nil, fmt.Errorf("%w: tensor of shape %v", ErrLimit, shape)
		}
		numel *= d
	}
	if numel*esz > u.lim.MaxTensorBytes {
		return nil, fmt.Errorf("%w: tensor of shape %v > %d bytes", ErrLimit, shape, u.lim.MaxTensorBytes)
	}
	if numel > 0 {
		if off < 0 || off >= s.numel {
			return nil, u.errf("tensor offset %d beyond storage %q of %d elements", off, s.key, s.numel)
		}
		for i, d := range shape {
			if d == 1 {
				continue // torch allows any stride on a size-1 dimension
			}
			// Each term is < 2^60 (d and stride both ≤ 2^30) and last < numel before it,
			// so the sum cannot overflow.
			if stride[i] > s.numel {
				return nil, u.errf("tensor stride %v beyond storage %q of %d elements", stride, s.key, s.numel)
			}
			last += (d - 1) * stride[i]
			if last >= s.numel {
				return nil, u.errf("tensor view (offset %d, shape %v, stride %v) beyond storage %q of %d elements", off, shape, stride, s.key, s.numel)
			}
		}
	}
	t := &Tensor{
		StorageClass: s.class, StorageKey: s.key, Location: s.location,
		StorageNumel: s.numel, StorageOffset: off,
		Shape: shape, Stride: stride, RequiresGrad: rg, DType: s.dtype,
		Data: make([]byte, 0, numel*esz),
	}
	if numel > 0 {
		idx := make([]int64, len(shape))
		for {
			e := off
			for i := range idx {
				e += idx[i] * stride[i]
			}
			t.Data = append(t.Data, s.data[e*esz:(e+1)*esz]...)
			i := len(idx) - 1
			for ; i >= 0; i-- {
				idx[i]++
				if idx[i] < shape[i] {
					break
				}
				idx[i] = 0
			}
			if i < 0 {
				break
			}
		}
	}
	return t, nil
}

// walker bounds any recursive walk of a decoded tree: depth (which also catches
// cycles) and total nodes visited (which catches a small DAG that unfolds into a huge tree).
type walker struct {
	maxDepth, maxVisits, visits int
}

func (w *walker) enter(depth int) error {
	w.visits++
	if w.visits > w.maxVisits {
		return fmt.Errorf("%w: decoded tree has more than %d nodes (shared nodes counted each time)", ErrLimit, w.maxVisits)
	}
	if depth > w.maxDepth {
		return fmt.Errorf("%w: decoded tree nested deeper than %d (or cyclic)", ErrLimit, w.maxDepth)
	}
	return nil
}

func (w *walker) check(v any, depth int) error {
	if err := w.enter(depth); err != nil {
		return err
	}
	switch t := v.(type) {
	case nil, bool, int64, float64, string, DType, Size, *Tensor:
		return nil
	case Tuple:
		for _, e := range t {
			if err := w.check(e, depth+1); err != nil {
				return err
			}
		}
	case *List:
		for _, e := range t.Items {
			if err := w.check(e, depth+1); err != nil {
				return err
			}
		}
	case *Dict:
		for i := range t.Keys {
			if err := w.check(t.Values[i], depth+1); err != nil {
				return err
			}
		}
	default:
		// A bare global (a storage class, a function) or a storage outside a tensor.
		return fmt.Errorf("%w: a %T (%v) left in the decoded data", ErrUnsupported, v, v)
	}
	return nil
}
