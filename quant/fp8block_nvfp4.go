package quant

import (
	"encoding/binary"
	"fmt"
	"math"
)

// Block-FP8 weights exported to NVFP4 without the BF16 weight in between.
//
// Inside one FP8 block (one scale s) the BF16 value of a code is a monotone
// function of its magnitude: |W| = bf16(f32(e4m3(q & 0x7F)) · s), the sign apart.
// So the largest |W| of any run of codes under one scale is the value of the
// largest magnitude code, and an NVFP4 block of 16 elements that lies inside one
// FP8 block (they are 128 wide) has its E4M3 block scale — and with it the nibble
// of each of its codes — fixed by that one largest code m. For each FP8 block and
// each m that occurs, a table of 256 nibbles is built with the very expressions
// NVFP4.AppendQuantizeRows evaluates on the BF16 weight; a 16-element block then
// costs a maximum over 16 bytes and 16 table lookups. The bytes are those of
// DequantRows followed by AppendQuantizeRows, for any scales (zero, huge products
// that round to infinity), with NaN codes refused as DequantRows refuses them.

// absMaxBF16 is the amax ModelOpt's max calibration computes on the BF16 weight
// DequantRows gives for rows [r0, r1) (q holds exactly their codes), as a BF16 bit
// pattern without sign: the largest magnitude code of each FP8 block, decoded
// under the block's scale. A product that rounds to infinity gives 0x7F80 (the
// caller refuses it as ModelOpt does); an E4M3 NaN code is refused
// (ErrNonFinite), naming the element. Call Check first.
//
// Reference loop: max over i, j of F32ToBF16(|E4M3ToF32(q[i][j]) · Scale[i/BlockRows][j/BlockCols]|).
func (b FP8Block) absMaxBF16(q []byte, r0, r1 int) (uint16, error) {
	if r0 < 0 || r1 > b.Rows || r0 > r1 || len(q) != (r1-r0)*b.Cols {
		return 0, fmt.Errorf("%w: FP8 block rows [%d,%d) of %d×%d: %d codes", ErrShape, r0, r1, b.Rows, b.Cols, len(q))
	}
	nbj := ceilDivInt(b.Cols, b.BlockCols)
	// Row by row into the largest magnitude code of each column of the band, so
	// that the codes are read front to back; then each block's from its columns.
	acc := make([]uint8, b.Cols)
	var best uint16
	for band0 := r0; band0 < r1; {
		br := band0 / b.BlockRows
		band1 := min(r1, (br+1)*b.BlockRows)
		clear(acc)
		for r := band0; r < band1; r++ {
			maxCodesRow(acc, q[(r-r0)*b.Cols:(r-r0+1)*b.Cols])
		}
		for j := range nbj {
			m := maxMagnitudeCode(acc[j*b.BlockCols : min((j+1)*b.BlockCols, b.Cols)])
			if m == 0x7F {
				return 0, fp8NaNError(q, r0, b.Cols)
			}
			best = max(best, F32ToBF16(e4m3Table[m]*b.Scale[br*nbj+j]))
		}
		band0 = band1
	}
	return best, nil
}

// fp8NaNError names the first E4M3 NaN code of q (rows from r0 of cols codes).
func fp8NaNError(q []byte, r0, cols int) error {
	i := fp8NaNIndex(q)
	return fmt.Errorf("%w: element [%d][%d] is an E4M3 NaN (0x%02X)", ErrNonFinite, r0+i/cols, i%cols, q[i])
}

// maxMagnitudeCode is max(c & 0x7F) over codes: 0x7F exactly when a NaN code is
// among them. Eight codes at a time: (x|H) − y has the high bit of each byte set
// where x ≥ y (7-bit bytes never borrow across), which selects the larger byte.
func maxMagnitudeCode(codes []byte) uint8 {
	const lo7, hi = 0x7F7F7F7F7F7F7F7F, 0x8080808080808080
	var acc uint64
	k := 0
	for ; k+8 <= len(codes); k += 8 {
		x := binary.LittleEndian.Uint64(codes[k:]) & lo7
		ge := ((acc | hi) - x) & hi // acc ≥ x per byte
		sel := (ge >> 7) * 0xFF
		acc = (acc & sel) | (x &^ sel)
	}
	for _, sh := range [3]uint{32, 16, 8} {
		x := acc >> sh
		ge := ((acc | hi) - x) & hi
		sel := (ge >> 7) * 0xFF
		acc = (acc & sel) | (x &^ sel)
	}
	m := uint8(acc)
	for ; k < len(codes); k++ {
		m = max(m, codes[k]&0x7F)
	}
	return m
}

// appendNVFP4Rows quantizes rows [r0, r1) of the weight (q holds exactly their
// codes) to NVFP4 with blocks of nvBlock elements and the global scale s2 (wsf2),
// appending the packed bytes (Cols/2 a row) to dst and the E4M3 block scales
// (Cols/nvBlock a row) to scales: the bytes of NVFP4{Block: nvBlock, Scale2:
// []float32{s2}}.AppendQuantizeRows on the BF16 weight DequantRows gives, without
// that weight. NVFP4 blocks must tile each row and lie inside FP8 blocks (nvBlock
// even, dividing Cols and BlockCols); other layouts are refused (ErrShape), as is
// an E4M3 NaN code (ErrNonFinite). Call Check first.
func (b FP8Block) appendNVFP4Rows(dst, scales, q []byte, r0, r1, nvBlock int, s2 float32) ([]byte, []byte, error) {
	if r0 < 0 || r1 > b.Rows || r0 > r1 || len(q) != (r1-r0)*b.Cols {
		return dst, scales, fmt.Errorf("%w: FP8 block rows [%d,%d) of %d×%d: %d codes", ErrShape, r0, r1, b.Rows, b.Cols, len(q))
	}
	if nvBlock < 2 || nvBlock%2 != 0 || b.Cols%nvBlock != 0 || b.BlockCols%nvBlock != 0 {
		return dst, scales, fmt.Errorf("%w: NVFP4 blocks of %d in a [%d, %d] weight of %d×%d FP8 blocks", ErrShape, nvBlock, b.Rows, b.Cols, b.BlockRows, b.BlockCols)
	}
	half, nb := b.Cols/2, b.Cols/nvBlock
	dst = growBytes(dst, (r1-r0)*half)
	out := dst[len(dst)-(r1-r0)*half:]
	scales = growBytes(scales, (r1-r0)*nb)
	sout := scales[len(scales)-(r1-r0)*nb:]
	nbj := ceilDivInt(b.Cols, b.BlockCols)
	// One table set per FP8 block of the band, and the rows walked in order: the
	// codes are read front to back (a walk down each block's column of rows reads
	// 128-byte runs a row apart, which the prefetchers do not follow).
	ts := make([]nvfp4FromFP8, nbj)
	d := float32(E2M1Max * s2)
	for j := range ts {
		ts[j].d, ts[j].s2 = d, s2
	}
	per := b.BlockCols / nvBlock // NVFP4 blocks per FP8 block
	mx := make([]uint8, nb)      // largest magnitude code per NVFP4 block of a row
	th := make([]uint64, nb)     // and the thresholds of its table (0: not vectorised)
	vec := make([]bool, nb)
	for band0 := r0; band0 < r1; {
		br := band0 / b.BlockRows
		band1 := min(r1, (br+1)*b.BlockRows)
		for j := range ts {
			ts[j].reset(b.Scale[br*nbj+j])
		}
		for r := band0; r < band1; r++ {
			row := q[(r-r0)*b.Cols : (r-r0+1)*b.Cols]
			k := 0
			if nvBlock == 16 {
				k = maxCodes16(mx, row)
			}
			for ; k < nb; k++ {
				mx[k] = maxMagnitudeCode(row[k*nvBlock : (k+1)*nvBlock])
			}
			o := out[(r-r0)*half : (r-r0+1)*half]
			so := sout[(r-r0)*nb : (r-r0+1)*nb]
			all := nvBlock == 16
			for j := range ts {
				t := &ts[j]
				k0 := j * per
				for k, m := range mx[k0:min(k0+per, nb)] {
					if m == 0x7F {
						return dst, scales, fp8NaNError(q, r0, b.Cols)
					}
					if !t.built[m] {
						t.table(m)
					}
					so[k0+k], th[k0+k], vec[k0+k] = t.code[m], t.thr[m], t.vec[m]
					all = all && t.vec[m]
				}
			}
			n := 0
			if nvBlock == 16 {
				n = nb &^ 1
				if !nvfp4Codes16(o, row[:16*n], th[:n]) {
					n = 0
				}
			}
			if all && n == nb {
				continue
			}
			// The blocks the vector kernel did not take, or took with a table it
			// cannot use (a zero, infinite or NaN divisor), are packed from the
			// full table; the vector kernel's bytes there are overwritten.
			for k, m := range mx {
				if k < n && vec[k] {
					continue
				}
				lut := ts[k/per].lut(m)
				codes := row[k*nvBlock : (k+1)*nvBlock]
				ob := o[k*nvBlock/2 : (k+1)*nvBlock/2]
				for i := range ob {
					ob[i] = lut[codes[2*i]] | lut[codes[2*i+1]]<<4
				}
			}
		}
		band0 = band1
	}
	return dst, scales, nil
}

// nvfp4FromFP8 holds, for the FP8 block being quantized, the NVFP4 block scale and
// the nibble of every code for each largest magnitude code m met so far.
type nvfp4FromFP8 struct {
	d, s2 float32      // f32(6·wsf2) and wsf2
	s     float32      // the FP8 block's scale
	abs   [128]float32 // |W| of each magnitude code under the block's scale
	built [128]bool    // which m have code, div and (vec) thr
	code  [128]uint8   // E4M3 block scale for m
	div   [128]float32 // its divisor, E4M3ToF32(code)·wsf2
	// thr holds m's nibbles as thresholds when vec[m]: byte k < 7 is t−1 for the
	// smallest magnitude t whose nibble magnitude exceeds k, byte 7 is t−1 for
	// the smallest t whose negative code gets the sign bit (128: none), as
	// nvfp4Codes16 takes them.
	thr      [128]uint64
	vec      [128]bool
	lutBuilt [128]bool       // which m have luts
	luts     *[128][256]byte // nibble of each code for m (allocated when first needed)
}

// reset starts the FP8 block of scale s.
func (t *nvfp4FromFP8) reset(s float32) {
	t.s = s
	for v := range t.abs {
		t.abs[v] = BF16ToF32(F32ToBF16(e4m3Table[v] * s))
	}
	clear(t.built[:])
	clear(t.lutBuilt[:])
}

// table prepares blocks whose largest magnitude code is m: the E4M3 block scale
// from the block's amax (nvfp4BlockScale, as AppendQuantizeRows computes it) and
// its divisor E4M3ToF32(scale)·wsf2, then, for a positive finite divisor, the
// nibbles as thresholds. There the nibble of ±|W| is F32ToE2M1Even(±|W| / div) =
// its magnitude code, plus the sign bit when the code is negative and the quotient
// is not zero; x / div is monotone in x and exactly symmetric in its sign, and so
// is the E2M1 rounding, so both the magnitude (0..7) and "the quotient is not
// zero" are monotone in the magnitude code v: each is fixed by the smallest v
// where it steps, found by bisection over 0..m (codes above m do not occur in
// such a block). Any other divisor (zero, infinite or NaN, from a zero, huge or
// NaN wsf2) takes the full table (lut).
func (t *nvfp4FromFP8) table(m uint8) {
	if t.built[m] {
		return
	}
	c := nvfp4BlockScale(t.abs[m:m+1], t.d)
	div := E4M3ToF32(c) * t.s2
	t.code[m], t.div[m], t.built[m], t.lutBuilt[m] = c, div, true, false
	t.vec[m] = div > 0 && !math.IsInf(float64(div), 0)
	if !t.vec[m] {
		return
	}
	hi := int(m)
	// first is the smallest v in [0, m] where the quotient's nibble magnitude
	// exceeds k (k = 7: where the quotient is not zero), else 128; nib is
	// monotone in v, so it is found by walking from a guess g, exactly whatever g
	// is: a step or two from a good one. Plain loops rather than closures: a
	// table is built for every largest code of every FP8 block.
	abs := &t.abs
	first := func(k int, g int) int {
		test := func(v int) bool {
			q := abs[v] / div
			if k == 7 {
				return q > 0
			}
			return int(e2m1NVTable[e2m1Index(math.Float32bits(q))]&7) > k
		}
		g = min(max(g, 0), hi+1)
		if g > hi || !test(g) {
			for g++; g <= hi; g++ {
				if test(g) {
					return g
				}
			}
			if !test(hi) {
				return 128
			}
			g = hi
		}
		for g > 0 && test(g-1) {
			g--
		}
		return g
	}
	var packed uint64
	for k := range 7 {
		// Where the E2M1 magnitude passes k (ties to even: 0.25 → 0, 0.75 → 1,
		// 1.25 → 1, 1.75 → 2, 2.5 → 2, 3.5 → 4, 5 → 4): the code whose value
		// under the block's scale is about that bound times div.
		tk := first(k, e4m3CeilCode(e2m1Bounds[k]*div/t.s))
		packed |= uint64(uint8(int8(tk-1))) << (8 * k)
	}
	ts := first(7, e4m3CeilCode(math.SmallestNonzeroFloat32*div/t.s))
	t.thr[m] = packed | uint64(uint8(int8(ts-1)))<<56
}

// e4m3CeilCode is about the smallest magnitude code whose E4M3 value is at least
// x ≥ 0 (128 above 448 or for NaN): a guess for nvfp4FromFP8.table, exact or a
// code off.
func e4m3CeilCode(x float32) int {
	if !(x <= E4M3Max) {
		return 128
	}
	u := math.Float32bits(x)
	e := int(u>>23&0xFF) - 127 + 7 // E4M3 biased exponent
	if e < 1 {
		// Subnormal codes 1..7 are v·2^-9.
		return min(8, int(math.Ceil(float64(x)*512)))
	}
	v := e<<3 | int(u>>20&7)
	if u&0xFFFFF != 0 {
		v++
	}
	return min(v, 128)
}

// lut is the nibble of every code of a block whose largest magnitude code is m
// (table first), each computed as AppendQuantizeRows computes it; codes above m
// are left 0.
func (t *nvfp4FromFP8) lut(m uint8) *[256]byte {
	if t.luts == nil {
		t.luts = new([128][256]byte)
	}
	l := &t.luts[m]
	if t.lutBuilt[m] {
		return l
	}
	div := t.div[m]
	for v := range int(m) + 1 {
		x := t.abs[v]
		l[v] = e2m1NVTable[e2m1Index(math.Float32bits(x/div))]
		l[v|0x80] = e2m1NVTable[e2m1Index(math.Float32bits(-x/div))]
	}
	t.lutBuilt[m] = true
	return l
}
