package quant

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
)

// Block-scaled FP8 weights as DeepSeek-V3/R1, Kimi-K2 and the Qwen3-*-FP8 releases
// ship them: an F8_E4M3 weight [rows, cols] and a float32 scale per block of
// BlockRows × BlockCols elements ("weight_scale_inv", [ceil(rows/BlockRows),
// ceil(cols/BlockCols)]); the blocks on the last row and column of blocks cover what
// is left (partial, never padded). The value of element (i, j) is DeepSeek's
// weight_dequant (inference/fp8_cast_bf16.py), which ModelOpt carries as its FP8
// kernel:
//
//	W[i][j] = bf16( f32(e4m3(q[i][j])) · s[i/BlockRows][j/BlockCols] )
//
// one float32 multiply, then one rounding to bfloat16 (nearest even). The two
// roundings are the reference: fusing them would change bytes.

// FP8Block describes one block-scaled FP8 weight.
type FP8Block struct {
	Rows, Cols           int
	BlockRows, BlockCols int
	// Scale holds one float32 per block, row-major: ceil(Rows/BlockRows) rows of
	// ceil(Cols/BlockCols).
	Scale []float32
}

// ScaleShape is the shape weight_scale_inv must have for this weight.
func (b FP8Block) ScaleShape() [2]int {
	return [2]int{ceilDivInt(b.Rows, b.BlockRows), ceilDivInt(b.Cols, b.BlockCols)}
}

func ceilDivInt(a, b int) int { return (a + b - 1) / b }

// Check validates the layout and every scale: the block sizes positive, one scale
// per block, each finite and not negative (a NaN, infinite or negative scale would
// give weights no checkpoint of this kind holds). Errors wrap ErrShape,
// ErrNonFinite or ErrNonPositive and say which block.
func (b FP8Block) Check() error {
	if b.Rows < 0 || b.Cols < 0 || b.BlockRows <= 0 || b.BlockCols <= 0 {
		return fmt.Errorf("%w: FP8 block weight [%d, %d] with blocks %d×%d", ErrShape, b.Rows, b.Cols, b.BlockRows, b.BlockCols)
	}
	s := b.ScaleShape()
	if len(b.Scale) != s[0]*s[1] {
		return fmt.Errorf("%w: %d block scales for a [%d, %d] weight in %d×%d blocks (want [%d, %d])", ErrShape, len(b.Scale), b.Rows, b.Cols, b.BlockRows, b.BlockCols, s[0], s[1])
	}
	for k, v := range b.Scale {
		switch {
		case v != v || math.IsInf(float64(v), 0):
			return fmt.Errorf("%w: block scale [%d][%d] is %v", ErrNonFinite, k/s[1], k%s[1], v)
		case v < 0 || (v == 0 && math.Signbit(float64(v))):
			return fmt.Errorf("%w: block scale [%d][%d] is %v", ErrNonPositive, k/s[1], k%s[1], v)
		}
	}
	return nil
}

// fp8BlockTable fills t with the BF16 bit pattern of every code under scale s:
// t[c] = bf16(f32(e4m3(c)) · s). Decoding a block is then one lookup per element.
func fp8BlockTable(t *[256]uint16, s float32) {
	for c := range 256 {
		t[c] = F32ToBF16(float32(e4m3Table[c] * s))
	}
}

// DequantRows writes the BF16 values (little-endian, 2·Cols bytes a row) of rows
// [r0, r1) into dst, from q holding exactly those rows' codes ((r1−r0)·Cols bytes).
// Any row range may be decoded on its own, so callers split a weight across
// goroutines freely. An E4M3 NaN code (0x7F, 0xFF) is refused (ErrNonFinite, naming
// the element): the reference would write a NaN weight. Call Check first.
//
// Reference loop: for each i in [r0, r1), j in [0, Cols):
// dst[i-r0][j] = F32ToBF16(E4M3ToF32(q[i-r0][j]) * Scale[(i/BlockRows)*nbj + j/BlockCols]).
func (b FP8Block) DequantRows(dst, q []byte, r0, r1 int) error {
	if r0 < 0 || r1 > b.Rows || r0 > r1 {
		return fmt.Errorf("%w: rows [%d,%d) of %d", ErrShape, r0, r1, b.Rows)
	}
	n := (r1 - r0) * b.Cols
	if len(q) != n || len(dst) != 2*n {
		return fmt.Errorf("%w: FP8 block rows [%d,%d) of %d columns: %d codes, %d output bytes", ErrShape, r0, r1, b.Cols, len(q), len(dst))
	}
	nbj := ceilDivInt(b.Cols, b.BlockCols)
	if b.vector() {
		// The vector kernel decodes each row's whole 16-code chunks and marks NaN
		// codes on the way; the few codes after them (a row width not a multiple
		// of 16) go through the portable expression.
		nan := false
		for r := r0; r < r1 && !nan; r++ {
			br := r / b.BlockRows
			sc := b.Scale[br*nbj : (br+1)*nbj]
			src := q[(r-r0)*b.Cols : (r-r0+1)*b.Cols]
			out := dst[2*(r-r0)*b.Cols : 2*(r-r0+1)*b.Cols]
			var n int
			n, nan = fp8RowBF16(out, src, sc, b.BlockCols)
			for c := n; c < b.Cols; c++ {
				nan = nan || src[c]&0x7F == 0x7F
				binary.LittleEndian.PutUint16(out[2*c:], F32ToBF16(e4m3Table[src[c]]*sc[c/b.BlockCols]))
			}
		}
		if nan {
			i := fp8NaNIndex(q)
			return fmt.Errorf("%w: element [%d][%d] is an E4M3 NaN (0x%02X)", ErrNonFinite, r0+i/b.Cols, i%b.Cols, q[i])
		}
		return nil
	}
	if i := fp8NaNIndex(q); i >= 0 {
		return fmt.Errorf("%w: element [%d][%d] is an E4M3 NaN (0x%02X)", ErrNonFinite, r0+i/b.Cols, i%b.Cols, q[i])
	}
	tables := make([][256]uint16, nbj)
	band := -1
	for r := r0; r < r1; r++ {
		if br := r / b.BlockRows; br != band {
			band = br
			for j := range tables {
				fp8BlockTable(&tables[j], b.Scale[br*nbj+j])
			}
		}
		src := q[(r-r0)*b.Cols : (r-r0+1)*b.Cols]
		out := dst[2*(r-r0)*b.Cols : 2*(r-r0+1)*b.Cols]
		for j := range tables {
			c0, c1 := j*b.BlockCols, min((j+1)*b.BlockCols, b.Cols)
			fp8LookupBF16(out[2*c0:2*c1], src[c0:c1], &tables[j])
		}
	}
	return nil
}

// vector reports whether DequantRows runs the vector kernel (fp8RowBF16): on a
// CPU that has it, for column blocks of a multiple of 16.
func (b FP8Block) vector() bool { return kernels != kernelPortable && b.BlockCols%16 == 0 }

// fp8LookupBF16 writes t[src[k]] as little-endian uint16 at dst[2k], four codes
// per 8-byte store.
func fp8LookupBF16(dst, src []byte, t *[256]uint16) {
	dst = dst[:2*len(src)]
	k := 0
	for ; k+8 <= len(src); k += 8 {
		s := src[k : k+8 : k+8]
		d := dst[2*k : 2*k+16 : 2*k+16]
		binary.LittleEndian.PutUint64(d[0:8], uint64(t[s[0]])|uint64(t[s[1]])<<16|uint64(t[s[2]])<<32|uint64(t[s[3]])<<48)
		binary.LittleEndian.PutUint64(d[8:16], uint64(t[s[4]])|uint64(t[s[5]])<<16|uint64(t[s[6]])<<32|uint64(t[s[7]])<<48)
	}
	for ; k < len(src); k++ {
		binary.LittleEndian.PutUint16(dst[2*k:], t[src[k]])
	}
}

// fp8NaNIndex is the index of the first E4M3 NaN code (0x7F or 0xFF) in q, or -1.
func fp8NaNIndex(q []byte) int {
	i, j := bytes.IndexByte(q, 0x7F), bytes.IndexByte(q, 0xFF)
	switch {
	case i < 0:
		return j
	case j < 0:
		return i
	}
	return min(i, j)
}
