package quant

import (
	"encoding/binary"
	"fmt"
	"math"
)

// Shared plumbing of the float formats (FP8, NVFP4, MX): row views, decoding of
// element ranges, dtype promotion and the map from a weight element to its scale.

// fqRowsCols views shape as rows of its last dimension (a 0-dim tensor is 1×1).
func fqRowsCols(shape []int64) (rows, cols int) {
	if len(shape) == 0 {
		return 1, 1
	}
	cols = int(shape[len(shape)-1])
	if cols == 0 {
		return 0, 0
	}
	return int(Numel(shape)) / cols, cols
}

// fqIsFloat reports whether dt is a weight dtype the float kernels read.
func fqIsFloat(dt DType) bool { return dt == BF16 || dt == F16 || dt == F32 }

// fqCheckWeight validates a weight tensor (float dtype, bytes matching the shape).
func fqCheckWeight(t Tensor, role string) error {
	if err := t.Check(); err != nil {
		return fmt.Errorf("%s: %w", role, err)
	}
	if !fqIsFloat(t.DType) {
		return fmt.Errorf("%w: %s is %v, want BF16, F16 or F32", ErrUnsupportedDType, role, t.DType)
	}
	return nil
}

// fqValues decodes a scale-like tensor (any float dtype, F8 included) to float32.
func fqValues(t Tensor, role string) ([]float32, error) {
	v, err := appendFloat32(nil, t)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", role, err)
	}
	return v, nil
}

// fqDecode decodes len(dst) elements of t starting at element off. t must have
// passed fqCheckWeight.
func fqDecode(dst []float32, t Tensor, off int) {
	switch t.DType {
	case BF16:
		b := t.Data[2*off : 2*(off+len(dst))]
		for i := range dst {
			lo, hi := b[2*i], b[2*i+1]
			dst[i] = math.Float32frombits(uint32(lo)<<16 | uint32(hi)<<24)
		}
	case F16:
		b := t.Data[2*off : 2*(off+len(dst))]
		for i := range dst {
			dst[i] = F16ToF32(binary.LittleEndian.Uint16(b[2*i:]))
		}
	case F32:
		b := t.Data[4*off : 4*(off+len(dst))]
		for i := range dst {
			dst[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
		}
	}
}

// fqPromote is torch.promote_types for two float dtypes.
func fqPromote(a, b DType) DType {
	if a == b {
		return a
	}
	return F32
}

// fqQuotientDType is the dtype of w / s in PyTorch: a 0-dim s does not promote a
// dimensioned w of the same category (torch.result_type's rule for 0-dim operands).
func fqQuotientDType(w DType, s Tensor) DType {
	if len(s.Shape) == 0 {
		return w
	}
	return fqPromote(w, s.DType)
}

// fqAbsMax is max(m, max|x|) as torch's abs-then-max reductions give it, for m ≥ 0:
// NaN if any element is NaN (with its sign cleared, as torch.abs does). On the
// sign-cleared bit patterns float order is integer order and every NaN is above
// +Inf, so an integer max is exact.
//
// Four independent running maxima keep the loop free of a single dependency
// chain; max is associative and commutative on integers, so the result does not
// depend on the grouping.
func fqAbsMax(m float32, x []float32) float32 {
	m0 := math.Float32bits(m) & 0x7FFFFFFF
	var m1, m2, m3 uint32
	for len(x) >= 4 {
		m0 = max(m0, math.Float32bits(x[0])&0x7FFFFFFF)
		m1 = max(m1, math.Float32bits(x[1])&0x7FFFFFFF)
		m2 = max(m2, math.Float32bits(x[2])&0x7FFFFFFF)
		m3 = max(m3, math.Float32bits(x[3])&0x7FFFFFFF)
		x = x[4:]
	}
	for _, v := range x {
		m0 = max(m0, math.Float32bits(v)&0x7FFFFFFF)
	}
	return math.Float32frombits(max(m0, m1, m2, m3))
}

// fqClamp is torch.clamp(x, lo, hi): NaN passes through.
func fqClamp(x, lo, hi float32) float32 {
	if x < lo {
		return lo
	}
	if x > hi {
		return hi
	}
	return x
}

// blockMap maps each weight element to its scale element: along dimension i the
// scale index is index/rep[i]; a scale dimension of size 1 broadcasts. It covers
// PyTorch broadcasting (rep 1), repeat_interleave of block scales (rep = block) and
// both at once.
type blockMap struct {
	shape  []int // weight shape
	rep    []int // per dimension; broadcast dimensions get rep = their size
	stride []int // scale strides (row-major over the scale shape)
	nScale int
}

// newBlockMap builds the map for a weight shape and a scale shape of the same rank.
// rep[i] is the block size along dimension i (1 for none); the scale dimension must
// be 1 (broadcast) or ceil(shape[i]/rep[i]).
func newBlockMap(shape []int64, scaleShape []int64, rep []int) (*blockMap, error) {
	if len(scaleShape) != len(shape) || len(rep) != len(shape) {
		return nil, fmt.Errorf("%w: scale %v for weight %v", ErrShape, scaleShape, shape)
	}
	m := &blockMap{shape: make([]int, len(shape)), rep: make([]int, len(shape)), stride: make([]int, len(shape))}
	n := 1
	for i := len(shape) - 1; i >= 0; i-- {
		d, sd, r := int(shape[i]), int(scaleShape[i]), rep[i]
		m.shape[i] = d
		if r < 1 {
			return nil, fmt.Errorf("%w: block size %d", ErrShape, r)
		}
		switch {
		case sd == (d+r-1)/r:
			m.rep[i] = r
		case sd == 1:
			m.rep[i] = max(d, 1)
		default:
			return nil, fmt.Errorf("%w: scale %v does not fit weight %v with blocks %v", ErrShape, scaleShape, shape, rep)
		}
		m.stride[i] = n
		n *= sd
	}
	m.nScale = n
	return m, nil
}

// broadcastMap aligns scaleShape to the right of shape (PyTorch broadcasting) and
// builds the element map. The scale may not have more dimensions than the weight.
func broadcastMap(shape, scaleShape []int64) (*blockMap, error) {
	if len(scaleShape) > len(shape) {
		return nil, fmt.Errorf("%w: scale %v has more dimensions than weight %v", ErrShape, scaleShape, shape)
	}
	s := make([]int64, len(shape))
	for i := range s {
		s[i] = 1
	}
	copy(s[len(shape)-len(scaleShape):], scaleShape)
	rep := make([]int, len(shape))
	for i := range rep {
		rep[i] = 1
		if s[i] != shape[i] && s[i] != 1 {
			return nil, fmt.Errorf("%w: scale %v does not broadcast to weight %v", ErrShape, scaleShape, shape)
		}
	}
	return newBlockMap(shape, s, rep)
}

// rowBase is the scale offset of row r's first element; the last dimension adds
// (col/colRep())*colStride().
func (m *blockMap) rowBase(r int) int {
	base := 0
	for i := len(m.shape) - 2; i >= 0; i-- {
		d := m.shape[i]
		idx := r % d
		r /= d
		base += idx / m.rep[i] * m.stride[i]
	}
	return base
}

func (m *blockMap) colRep() int {
	if len(m.shape) == 0 {
		return 1
	}
	return m.rep[len(m.shape)-1]
}

func (m *blockMap) colStride() int {
	if len(m.shape) == 0 {
		return 0
	}
	if m.rep[len(m.shape)-1] >= m.shape[len(m.shape)-1] {
		return 0
	}
	return m.stride[len(m.shape)-1]
}
