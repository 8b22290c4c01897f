package quant

import (
	"encoding/binary"
	"fmt"
)

// MXFP4 expert weights as OpenAI ships gpt-oss: for each expert, R output rows of
// G blocks of 32 input features, a block being 16 bytes of E2M1 nibbles (element
// 2j in the low nibble of byte j) and one E8M0 scale byte. The value of element c
// of row r is
//
//	v(r, c) = E2M1(nibble) · 2^(scale[r][c/32] − 127)
//
// (transformers' convert_moe_packed_tensors, ModelOpt's MXFP4QTensor.dequantize).
// Every such product is exactly a bfloat16 (2^-127 · 0.5 is a bfloat16 subnormal),
// so no rounding happens, unless it overflows: from scale byte 253 up the large
// codes exceed the bfloat16 range (4 · 2^126 = 2^128). A nibble 8 (sign, code 0)
// is −0.0.
// The in-memory (hub BF16) layout is the transpose, [32·G, R] per expert.

// MXFP4BlockBytes is the number of packed bytes of one 32-element MXFP4 block.
const MXFP4BlockBytes = 16

// mxfp4FirstOverflowScale is the smallest scale byte under which some E2M1 code
// decodes beyond the bfloat16 range: 4 · 2^(253−127) = 2^128.
const mxfp4FirstOverflowScale = 253

// mxfp4BF16 holds, per scale byte (0…254) and nibble, the BF16 bit pattern of the
// element: E2M1(nibble) · 2^(scale − 127).
var mxfp4BF16 = func() (t [255][16]uint16) {
	vals := [16]float32{0, 0.5, 1, 1.5, 2, 3, 4, 6, 0, -0.5, -1, -1.5, -2, -3, -4, -6}
	for s := range 255 {
		p := E8M0ToF32(uint8(s))
		for n, v := range vals {
			b := F32ToBF16(float32(v * p))
			if n == 8 {
				b = 0x8000 // −0 · 2^k is −0.0
			}
			t[s][n] = b
		}
	}
	return
}()

// MXFP4DequantTransposed decodes one expert: blocks holds R·G·16 bytes ([R, G, 16])
// and scales R·G bytes ([R, G]); dst receives the BF16 transpose [32·G, R]
// (little-endian, 2·32·G·R bytes): dst[c][r] = v(r, c). A scale byte of 255 (NaN in
// E8M0), or an element that would be infinite, is refused with ErrNonFinite, naming
// the block: ModelOpt's quantizer never writes either for finite weights.
//
// Reference loop: for r, c: dst[c][r] = F32ToBF16(E2M1(nibble(r, c)) * E8M0ToF32(scales[r][c/32])).
func MXFP4DequantTransposed(dst, blocks, scales []byte, R, G int) error {
	if R < 0 || G < 0 || len(scales) != R*G || len(blocks) != R*G*MXFP4BlockBytes || len(dst) != 2*R*G*32 {
		return fmt.Errorf("%w: MXFP4 expert of %d rows × %d blocks: %d block bytes, %d scales, %d output bytes", ErrShape, R, G, len(blocks), len(scales), len(dst))
	}
	for k, s := range scales {
		if s == 255 {
			return fmt.Errorf("%w: scale of row %d block %d is 0xFF (NaN in E8M0)", ErrNonFinite, k/G, k%G)
		}
		if s >= mxfp4FirstOverflowScale {
			tab := &mxfp4BF16[s]
			for _, by := range blocks[k*MXFP4BlockBytes : (k+1)*MXFP4BlockBytes] {
				if tab[by&0xF]&0x7FFF == 0x7F80 || tab[by>>4]&0x7FFF == 0x7F80 {
					return fmt.Errorf("%w: row %d block %d decodes to an infinite value (scale byte %d)", ErrNonFinite, k/G, k%G, s)
				}
			}
		}
	}
	// Tiles of 32 rows × one block (32 columns): the block's nibbles are decoded
	// along a row and written down the columns of the transpose, so each tile
	// touches 32 output rows of 64 contiguous bytes.
	const tile = 32
	var t [32][tile]uint16 // t[c][r-r0] for one block
	for r0 := 0; r0 < R; r0 += tile {
		r1 := min(r0+tile, R)
		for g := range G {
			for r := r0; r < r1; r++ {
				tab := &mxfp4BF16[scales[r*G+g]]
				src := blocks[(r*G+g)*MXFP4BlockBytes : (r*G+g+1)*MXFP4BlockBytes]
				for j, by := range src {
					t[2*j][r-r0] = tab[by&0xF]
					t[2*j+1][r-r0] = tab[by>>4]
				}
			}
			for k := range 32 {
				c := g*32 + k
				out := dst[2*(c*R+r0) : 2*(c*R+r1)]
				for i, v := range t[k][:r1-r0] {
					binary.LittleEndian.PutUint16(out[2*i:], v)
				}
			}
		}
	}
	return nil
}
