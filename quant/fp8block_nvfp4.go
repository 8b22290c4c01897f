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
	tile := make([]uint8, nbj) // largest magnitude code per block of the band
	var best uint16
	for band0 := r0; band0 < r1; {
		br := band0 / b.BlockRows
		band1 := min(r1, (br+1)*b.BlockRows)
		clear(tile)
		band := q[(band0-r0)*b.Cols : (band1-r0)*b.Cols]
		for j := range tile {
			c0, c1 := j*b.BlockCols, min((j+1)*b.BlockCols, b.Cols)
			if m, ok := maxCodesTile(band[c0:], b.Cols, band1-band0, c1-c0); ok {
				tile[j] = m
				continue
			}
			for r := range band1 - band0 {
				tile[j] = max(tile[j], maxMagnitudeCode(band[r*b.Cols+c0:r*b.Cols+c1]))
			}
		}
		for j, m := range tile {
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
	t := &nvfp4FromFP8{d: float32(E2M1Max * s2), s2: s2}
	maxes := make([]uint8, b.BlockCols/nvBlock) // largest magnitude code per NVFP4 block of one row's FP8 block
	thr := make([]uint64, len(maxes))           // and the thresholds of its table
	for band0 := r0; band0 < r1; {
		br := band0 / b.BlockRows
		band1 := min(r1, (br+1)*b.BlockRows)
		// Block by block of the band, so that one block's tables serve all its rows.
		for j := range nbj {
			t.reset(b.Scale[br*nbj+j])
			c0, c1 := j*b.BlockCols, min((j+1)*b.BlockCols, b.Cols)
			mx := maxes[:(c1-c0)/nvBlock]
			for r := band0; r < band1; r++ {
				row := q[(r-r0)*b.Cols : (r-r0+1)*b.Cols]
				seg := row[c0:c1]
				k := 0
				if nvBlock == 16 {
					k = maxCodes16(mx, seg)
				}
				for ; k < len(mx); k++ {
					mx[k] = maxMagnitudeCode(seg[k*nvBlock : (k+1)*nvBlock])
				}
				o := out[(r-r0)*half+c0/2 : (r-r0)*half+c1/2]
				so := sout[(r-r0)*nb+c0/nvBlock : (r-r0)*nb+c1/nvBlock]
				vec := nvBlock == 16
				th := thr[:len(mx)]
				for k, m := range mx {
					if m == 0x7F {
						return dst, scales, fp8NaNError(q, r0, b.Cols)
					}
					if !t.built[m] {
						t.table(m)
					}
					so[k], th[k] = t.code[m], t.thr[m]
					vec = vec && t.vec[m]
				}
				if vec && nvfp4Codes16(o, seg, th) {
					continue
				}
				for k, m := range mx {
					lut := t.lut(m)
					codes := seg[k*nvBlock : (k+1)*nvBlock]
					ob := o[k*nvBlock/2 : (k+1)*nvBlock/2]
					for i := range ob {
						ob[i] = lut[codes[2*i]] | lut[codes[2*i+1]]<<4
					}
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
	lutBuilt [128]bool      // which m have luts
	luts     [128][256]byte // nibble of each code for m
}

// reset starts the FP8 block of scale s.
func (t *nvfp4FromFP8) reset(s float32) {
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
	// first is the smallest v in [0, m] where f holds (f monotone), else 128.
	first := func(f func(v int) bool) int {
		lo, hi := 0, int(m)+1
		for lo < hi {
			mid := (lo + hi) / 2
			if f(mid) {
				hi = mid
			} else {
				lo = mid + 1
			}
		}
		if lo > int(m) {
			return 128
		}
		return lo
	}
	var packed uint64
	for k := range 7 {
		tk := first(func(v int) bool {
			return int(e2m1NVTable[e2m1Index(math.Float32bits(t.abs[v]/div))]&7) > k
		})
		packed |= uint64(uint8(int8(tk-1))) << (8 * k)
	}
	ts := first(func(v int) bool { return t.abs[v]/div > 0 })
	t.thr[m] = packed | uint64(uint8(int8(ts-1)))<<56
}

// lut is the nibble of every code of a block whose largest magnitude code is m
// (table first), each computed as AppendQuantizeRows computes it; codes above m
// are left 0.
func (t *nvfp4FromFP8) lut(m uint8) *[256]byte {
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
