package quant

import (
	"encoding/binary"
	"fmt"
	"math"
)

// RowCalibration is CalibrateAmax cut into ranges of rows (the weight seen as rows of
// its last axis), so that a caller can reduce a weight in pieces, on several cores,
// straight from its bytes: no float32 copy of the weight, no zero-padded copy of its
// blocks.
//
// Every layout CalibrateAmax knows maps each row to a run of consecutive amax
// elements (cells): the row is cut into segments (a block of the last axis, the
// whole row when the last axis is reduced, one element when it is kept) and segment
// j goes to cell base(row)+j. Two rows have either the same cells or disjoint ones,
// and for the usual layouts base never decreases with the row, so that a range of
// rows shares cells with other rows at its ends only (a leading axis that is reduced
// or blocked outside an axis that is not, as axis=1 of a 3-D weight, breaks that:
// then every proper range reports its cells shared). A cell holds the largest magnitude bit
// pattern (sign cleared) of its elements in the weight's dtype: for IEEE formats
// that order is the order of |x|, and Inf and NaN sort above every finite value, so
// the maximum is exact, does not depend on how the rows are split, and tells at the
// end whether any element was not finite.
//
// Usage, on one goroutine:
//
//	c, err := NewRowCalibration(q, w)
//	cells := make([]uint32, c.Cells())
//	c.Reduce(cells, 0, c.Rows())
//	amax, err := c.Amax(cells)
//
// On several, each piece [r0, r1) takes lo, hi, shared := c.Span(r0, r1) and reduces
// into cells[lo:hi]; when shared is set other pieces reduce into some of those cells
// too, so the piece reduces into a buffer of its own and merges it (max, element by
// element) under a lock. A RowCalibration only reads w; Span and Reduce may be
// called concurrently.
type RowCalibration struct {
	w     Tensor
	esize int     // bytes per element: 2 or 4
	outDT DType   // the amax's dtype
	shape []int64 // the amax's shape
	rows  int     // rows of the last axis (a 0-dim weight is one row of one)
	cols  int
	seg   int     // elements of a row per cell
	segs  int     // cells per row
	lead  []int64 // the leading dims, shape[:rank-1]
	div   []int64 // per leading dim: index/div is the cell's index on it; 0: reduced
	step  []int64 // per leading dim: cells per step of index/div
	cells int
	// monotone: base never decreases with the row.
	monotone bool
}

// NewRowCalibration checks q and w as CalibrateAmax does (ErrShape, ErrNoAmax,
// ErrUnsupportedDType, a weight whose bytes do not match its shape) and lays out the
// amax. It retains w, which must not change until the last Reduce.
func NewRowCalibration(q *Quantizer, w Tensor) (*RowCalibration, error) {
	if q == nil || isSequential(q) {
		return nil, fmt.Errorf("%w: calibrate a single quantizer", ErrShape)
	}
	if q.Dynamic || IsMXFormat(q) {
		return nil, ErrNoAmax
	}
	if !intFloatDType(w.DType) {
		return nil, fmt.Errorf("%w: calibrate on %v", ErrUnsupportedDType, w.DType)
	}
	if err := w.Check(); err != nil {
		return nil, fmt.Errorf("weight: %w", err)
	}
	rank := len(w.Shape)
	// div per axis of w: 1 kept, b blocked by b, 0 reduced. The layouts and the
	// amax shapes are CalibrateAmax's (see calibrateAmaxRef).
	div := make([]int64, rank)
	outDT := w.DType
	var shape []int64
	keepAxes := func(keep map[int]bool) {
		shape = cloneShape(w.Shape)
		for i := range rank {
			if keep[i] {
				div[i] = 1
			} else {
				shape[i] = 1
			}
		}
	}
	bs := q.BlockSizes
	axes := calibBlockAxes(bs, rank)
	if bs.Dynamic() {
		axes, bs = nil, nil
	}
	switch {
	case bs != nil && len(axes) == 0 && calibPerChannelBlocks(bs):
		keep := map[int]bool{}
		for ax := range bs.Dims {
			keep[normAxis(ax, rank)] = true
		}
		all := true
		for i := range rank {
			all = all && keep[i]
		}
		if all {
			shape = []int64{} // nothing left to reduce over: reduce_amax(axis=None)
		} else {
			keepAxes(keep)
		}
	case len(axes) == 1 && axes[0] == rank-1:
		if rank == 0 {
			return nil, fmt.Errorf("%w: block sizes %v on a 0-dim weight", ErrShape, bs.Dims)
		}
		b := int64(bs.Dims[calibKey(bs, rank-1, rank)])
		if b <= 0 {
			return nil, fmt.Errorf("%w: block sizes %v name the last axis twice", ErrShape, bs.Dims)
		}
		for i := range rank - 1 {
			div[i] = 1
		}
		div[rank-1] = b
		in := w.Shape[rank-1]
		rows := Numel(w.Shape) / max(in, 1)
		shape = []int64{rows * ((in + b - 1) / b), 1}
		outDT = CalibratedAmaxDType(q, w.DType, rank)
	case len(axes) > 0:
		for i := range rank {
			d := w.Shape[i]
			if b := int64(bs.Dims[calibKey(bs, i, rank)]); b > 0 {
				div[i] = b
				shape = append(shape, (d+b-1)/b, 1)
				continue
			}
			div[i] = 1
			shape = append(shape, d)
		}
		if shape == nil {
			shape = []int64{}
		}
	case q.Axis == nil:
		shape = []int64{}
	default:
		keep := map[int]bool{}
		for _, a := range q.Axis {
			keep[normAxis(a, rank)] = true
		}
		keepAxes(keep)
	}
	if Numel(shape) == 1 {
		shape = []int64{}
	}

	c := &RowCalibration{w: w, esize: w.DType.Size(), outDT: outDT, shape: shape, rows: 1, cols: 1}
	lastDiv := int64(0)
	if rank > 0 {
		c.cols = int(w.Shape[rank-1])
		c.rows = 0
		if c.cols > 0 {
			c.rows = int(Numel(w.Shape) / int64(c.cols))
		}
		c.lead, c.div, lastDiv = w.Shape[:rank-1], div[:rank-1], div[rank-1]
	}
	switch lastDiv {
	case 0:
		c.seg, c.segs = max(c.cols, 1), 1
	default:
		c.seg = int(lastDiv)
		c.segs = (c.cols + c.seg - 1) / c.seg
	}
	// Strides of the cell grid (row-major over the leading dims' cell counts).
	c.step = make([]int64, len(c.lead))
	acc := int64(c.segs)
	for i := len(c.lead) - 1; i >= 0; i-- {
		c.step[i] = acc
		if c.div[i] > 0 {
			acc *= (c.lead[i] + c.div[i] - 1) / c.div[i]
		}
	}
	c.cells = int(acc)
	// base decreases where an axis wraps under an axis whose cell index can stay
	// put as its index steps (reduced, or blocked by more than one).
	c.monotone = true
	span := int64(0) // cells spanned by the axes inside axis i
	for i := len(c.lead) - 1; i >= 0; i-- {
		if span > 0 && c.div[i] != 1 && c.lead[i] > 1 {
			c.monotone = false
		}
		if c.div[i] > 0 {
			span += ((c.lead[i]+c.div[i]-1)/c.div[i] - 1) * c.step[i]
		}
	}
	if int64(c.cells) != Numel(shape) {
		return nil, fmt.Errorf("%w: calibration grid of %d cells for an amax of shape %v", ErrShape, c.cells, shape)
	}
	return c, nil
}

// Rows is the number of rows of the weight (of its last axis).
func (c *RowCalibration) Rows() int { return c.rows }

// RowBytes is the size of one row of the weight in bytes.
func (c *RowCalibration) RowBytes() int64 { return int64(c.cols * c.esize) }

// Cells is the number of elements of the amax.
func (c *RowCalibration) Cells() int { return c.cells }

// base is the first cell of row r.
func (c *RowCalibration) base(r int) int {
	b := int64(0)
	x := int64(r)
	for i := len(c.lead) - 1; i >= 0; i-- {
		d := c.lead[i]
		if c.div[i] > 0 {
			b += x % d / c.div[i] * c.step[i]
		}
		x /= d
	}
	return int(b)
}

// Span returns the cells [lo, hi) that rows [r0, r1) reduce into
// (0 ≤ r0 < r1 ≤ Rows()), and whether rows outside the range reduce into any of them.
func (c *RowCalibration) Span(r0, r1 int) (lo, hi int, shared bool) {
	if !c.monotone {
		lo, last := c.bounds(r0, r1)
		return lo, last + c.segs, r0 > 0 || r1 < c.rows
	}
	lo, last := c.base(r0), c.base(r1-1)
	shared = (r0 > 0 && c.base(r0-1) == lo) || (r1 < c.rows && c.base(r1) == last)
	return lo, last + c.segs, shared
}

// bounds is the least and the greatest base of rows [r0, r1).
func (c *RowCalibration) bounds(r0, r1 int) (lo, last int) {
	lo, last = c.base(r0), c.base(r0)
	for r := r0 + 1; r < r1; r++ {
		b := c.base(r)
		lo, last = min(lo, b), max(last, b)
	}
	return lo, last
}

// Reduce raises each cell of rows [r0, r1) to the largest magnitude bit pattern of
// its elements in those rows: dst[k] is cell lo+k, lo from Span(r0, r1), and dst is
// at least hi-lo long. It writes nothing else and does not allocate.
//
// Reference loop: for each element x of the rows, in cell k:
// dst[k-lo] = max(dst[k-lo], bits(|x|)).
func (c *RowCalibration) Reduce(dst []uint32, r0, r1 int) {
	if r0 >= r1 {
		return
	}
	lo := c.base(r0)
	if !c.monotone {
		lo, _ = c.bounds(r0, r1)
	}
	rb := c.cols * c.esize
	for r := r0; r < r1; r++ {
		b := c.base(r) - lo
		c.reduceRow(dst[b:b+c.segs], c.w.Data[r*rb:(r+1)*rb])
	}
}

// reduceRow raises dst[j] to the largest magnitude bit pattern of segment j of row.
func (c *RowCalibration) reduceRow(dst []uint32, row []byte) {
	if c.seg == 1 {
		if c.esize == 2 {
			for j := maxElems16(dst, row); j < len(dst); j++ {
				dst[j] = max(dst[j], uint32(binary.LittleEndian.Uint16(row[2*j:])&0x7FFF))
			}
		} else {
			for j := range dst {
				dst[j] = max(dst[j], binary.LittleEndian.Uint32(row[4*j:])&0x7FFFFFFF)
			}
		}
		return
	}
	n := c.seg * c.esize
	j0 := 0
	if c.esize == 2 {
		j0 = maxSegs16(dst, row, c.seg) // the whole segments the vector kernel takes
	}
	for j := j0; j < len(dst); j++ {
		s := row[j*n : min((j+1)*n, len(row))]
		if c.esize == 2 {
			dst[j] = max(dst[j], calibMax16(s))
		} else {
			dst[j] = max(dst[j], calibMax32(s))
		}
	}
}

// Amax turns the reduced cells (Cells() of them) into the amax tensor, in
// CalibrateAmax's dtype and shape; a cell that saw a NaN or an infinity is an
// ErrAssertion, as ModelOpt's max calibrator asserts. cells is only read.
func (c *RowCalibration) Amax(cells []uint32) (Tensor, error) {
	if len(cells) != c.cells {
		return Tensor{}, fmt.Errorf("%w: %d cells for an amax of shape %v", ErrShape, len(cells), c.shape)
	}
	var m uint32
	for _, x := range cells {
		m = max(m, x)
	}
	inf := uint32(0x7F800000)
	switch c.w.DType {
	case BF16:
		inf = 0x7F80
	case F16:
		inf = 0x7C00
	}
	if m >= inf {
		return Tensor{}, fmt.Errorf("%w: detected nan or inf values in amax", ErrAssertion)
	}
	out := Tensor{DType: c.outDT, Shape: cloneShape(c.shape), Data: make([]byte, len(cells)*c.outDT.Size())}
	switch {
	case c.outDT == c.w.DType && c.esize == 2:
		for i, x := range cells {
			binary.LittleEndian.PutUint16(out.Data[2*i:], uint16(x))
		}
	case c.outDT == c.w.DType:
		for i, x := range cells {
			binary.LittleEndian.PutUint32(out.Data[4*i:], x)
		}
	case c.outDT == F32:
		// Widened exactly: BF16 and F16 values are all float32 values.
		widen := F16ToF32
		if c.w.DType == BF16 {
			widen = BF16ToF32
		}
		for i, x := range cells {
			binary.LittleEndian.PutUint32(out.Data[4*i:], math.Float32bits(widen(uint16(x))))
		}
	default:
		return Tensor{}, fmt.Errorf("%w: amax of a %v weight in %v", ErrUnsupportedDType, c.w.DType, c.outDT)
	}
	return out, nil
}

// MaxMagnitude16 is calibMax16 for callers outside quant that reduce BF16/F16 bit
// patterns themselves (the converter's whole-weight amax path).
func MaxMagnitude16(data []byte) uint32 { return calibMax16(data) }

// MaxMagnitude32 is calibMax32 for F32 bit patterns.
func MaxMagnitude32(data []byte) uint32 { return calibMax32(data) }

// calibMax16 is the largest of data's little-endian 16-bit words with the sign bit
// cleared: the vector kernel's prefix, then calibMax16Go.
func calibMax16(data []byte) uint32 {
	m, n := maxMag16(data)
	return max(m, calibMax16Go(data[n:]))
}

// calibMax32 is calibMax16 for 32-bit words.
func calibMax32(data []byte) uint32 {
	m, n := maxMag32(data)
	return max(m, calibMax32Go(data[n:]))
}

// calibMax16Go is calibMax16 in Go. It compares four words per step in one uint64
// (SWAR): with the top bit of every lane clear, (a|H)-b keeps a lane's top bit
// exactly when a ≥ b, and no lane borrows from the next.
//
// Reference loop: for i := 0; i+1 < len(data); i += 2 { m = max(m, u16(data[i:])&0x7FFF) }.
func calibMax16Go(data []byte) uint32 {
	const (
		mag = 0x7FFF_7FFF_7FFF_7FFF
		top = 0x8000_8000_8000_8000
	)
	maxw := func(a, b uint64) uint64 {
		ge := ((a | top) - b) & top // 0x8000 in the lanes where a ≥ b
		keep := ge | (ge - ge>>15)  // widened to 0xFFFF there
		return a&keep | b&^keep
	}
	var m0, m1, m2, m3 uint64
	i := 0
	for ; i+32 <= len(data); i += 32 {
		d := data[i : i+32 : i+32]
		m0 = maxw(m0, binary.LittleEndian.Uint64(d)&mag)
		m1 = maxw(m1, binary.LittleEndian.Uint64(d[8:])&mag)
		m2 = maxw(m2, binary.LittleEndian.Uint64(d[16:])&mag)
		m3 = maxw(m3, binary.LittleEndian.Uint64(d[24:])&mag)
	}
	for ; i+8 <= len(data); i += 8 {
		m0 = maxw(m0, binary.LittleEndian.Uint64(data[i:])&mag)
	}
	m := maxw(maxw(m0, m1), maxw(m2, m3))
	r := max(uint16(m), uint16(m>>16), uint16(m>>32), uint16(m>>48))
	for ; i+1 < len(data); i += 2 {
		r = max(r, binary.LittleEndian.Uint16(data[i:])&0x7FFF)
	}
	return uint32(r)
}

// calibMax32Go is the largest of data's little-endian 32-bit words with the sign
// bit cleared, with four independent running maxima.
func calibMax32Go(data []byte) uint32 {
	var m0, m1, m2, m3 uint32
	i := 0
	for ; i+16 <= len(data); i += 16 {
		d := data[i : i+16 : i+16]
		m0 = max(m0, binary.LittleEndian.Uint32(d)&0x7FFFFFFF)
		m1 = max(m1, binary.LittleEndian.Uint32(d[4:])&0x7FFFFFFF)
		m2 = max(m2, binary.LittleEndian.Uint32(d[8:])&0x7FFFFFFF)
		m3 = max(m3, binary.LittleEndian.Uint32(d[12:])&0x7FFFFFFF)
	}
	for ; i+3 < len(data); i += 4 {
		m0 = max(m0, binary.LittleEndian.Uint32(data[i:])&0x7FFFFFFF)
	}
	return max(m0, m1, m2, m3)
}
