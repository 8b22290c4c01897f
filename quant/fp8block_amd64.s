//go:build amd64 && !purego

#include "textflag.h"

// The block-FP8 decode (FP8Block.DequantRows) on AVX2; fp8block_amd64.go says what
// it must equal. Go assembler operand order is the reverse of Intel's.

#define QVEC(name, v) \
	DATA name<>+0x00(SB)/4, $v; \
	DATA name<>+0x04(SB)/4, $v; \
	DATA name<>+0x08(SB)/4, $v; \
	DATA name<>+0x0c(SB)/4, $v; \
	DATA name<>+0x10(SB)/4, $v; \
	DATA name<>+0x14(SB)/4, $v; \
	DATA name<>+0x18(SB)/4, $v; \
	DATA name<>+0x1c(SB)/4, $v; \
	GLOBL name<>(SB), RODATA|NOPTR, $32

QVEC(q7f, 0x7f)
QVEC(q80, 0x80)
QVEC(q7, 7)
QVEC(q8, 8)
QVEC(qOne, 1)
QVEC(q7fff, 0x7fff)
QVEC(qBF16NaN, 0x7fc0)
QVEC(qRebias, 0x3c000000) // 120<<23: exponent bias 7 → 127

// qSub is the value of the E4M3 subnormal magnitude m (codes 0..7), m·2^-9.
DATA qSub<>+0x00(SB)/4, $0x00000000
DATA qSub<>+0x04(SB)/4, $0x3b000000
DATA qSub<>+0x08(SB)/4, $0x3b800000
DATA qSub<>+0x0c(SB)/4, $0x3bc00000
DATA qSub<>+0x10(SB)/4, $0x3c000000
DATA qSub<>+0x14(SB)/4, $0x3c200000
DATA qSub<>+0x18(SB)/4, $0x3c400000
DATA qSub<>+0x1c(SB)/4, $0x3c600000
GLOBL qSub<>(SB), RODATA|NOPTR, $32

// DEC8 decodes the 8 codes at off(SI) under the scale in Y9 into the dwords of out
// (BF16 bit patterns): e4m3 → float32 exactly (normal magnitudes by rebiasing the
// exponent, subnormal ones from qSub), the sign, one float32 multiply, then
// round-to-nearest-even to BF16 with any NaN → 0x7FC0 (F32ToBF16). Lanes whose
// magnitude is 0x7F (the NaN codes) are marked in Y6. Clobbers Y0-Y4.
#define DEC8(off, out) \
	VPMOVZXBD off(SI), Y0; \
	VPAND Y15, Y0, Y1; \
	VPCMPEQD Y15, Y1, Y2; \
	VPOR Y2, Y6, Y6; \
	VPSLLD $20, Y1, Y2; \
	VPADDD Y13, Y2, Y2; \
	VPAND Y11, Y0, Y3; \
	VPERMPS Y10, Y3, Y3; \
	VPCMPGTD Y1, Y12, Y4; \
	VPBLENDVB Y4, Y3, Y2, Y2; \
	VPAND Y14, Y0, Y0; \
	VPSLLD $24, Y0, Y0; \
	VPOR Y0, Y2, Y2; \
	VMULPS Y9, Y2, Y2; \
	VCMPPS $3, Y2, Y2, Y4; \
	VPSRLD $16, Y2, Y3; \
	VPAND Y8, Y3, Y3; \
	VPADDD Y7, Y3, Y3; \
	VPADDD Y2, Y3, Y3; \
	VPSRLD $16, Y3, Y3; \
	VPBLENDVB Y4, qBF16NaN<>(SB), Y3, out

// func fp8RowBF16AVX2(dst, src []byte, scales []float32, block int) bool
// len(src) and block are multiples of 16, dst holds 2·len(src) bytes, scales one
// value per block of src (the last may be partial). It reports whether src holds a
// NaN code (0x7F, 0xFF); dst is then written but meaningless.
TEXT ·fp8RowBF16AVX2(SB), NOSPLIT, $0-81
	MOVQ dst_base+0(FP), DI
	MOVQ src_base+24(FP), SI
	MOVQ src_len+32(FP), CX
	MOVQ scales_base+48(FP), DX
	MOVQ block+72(FP), R8
	SHRQ $4, CX       // chunks of 16 codes left
	SHRQ $4, R8       // chunks per block
	VMOVDQU q7fff<>(SB), Y7
	VMOVDQU qOne<>(SB), Y8
	VMOVDQU qSub<>(SB), Y10
	VMOVDQU q7<>(SB), Y11
	VMOVDQU q8<>(SB), Y12
	VMOVDQU qRebias<>(SB), Y13
	VMOVDQU q80<>(SB), Y14
	VMOVDQU q7f<>(SB), Y15
	VPXOR Y6, Y6, Y6
	TESTQ CX, CX
	JZ done

block:
	VBROADCASTSS (DX), Y9
	ADDQ $4, DX
	MOVQ R8, BX
	CMPQ CX, BX
	CMOVQLT CX, BX    // chunks of this block
	SUBQ BX, CX

chunk:
	DEC8(0, Y5)
	DEC8(8, Y0)
	VPACKUSDW Y0, Y5, Y5
	VPERMQ $0xd8, Y5, Y5
	VMOVDQU Y5, (DI)
	ADDQ $16, SI
	ADDQ $32, DI
	DECQ BX
	JNZ chunk
	TESTQ CX, CX
	JNZ block

done:
	VPTEST Y6, Y6
	SETNE ret+80(FP)
	VZEROUPPER
	RET

// func maxCodes16AVX2(dst, src []byte)
// dst[k] = max(src[16k+i] & 0x7F) for i < 16; len(dst) is even and not zero, and
// src holds 16·len(dst) bytes.
TEXT ·maxCodes16AVX2(SB), NOSPLIT, $0-48
	MOVQ dst_base+0(FP), DI
	MOVQ dst_len+8(FP), CX
	MOVQ src_base+24(FP), SI
	SHRQ $1, CX
	VPCMPEQB Y7, Y7, Y7
	VPSRLW $9, Y7, Y7     // 0x007F in every word
	VPACKUSWB Y7, Y7, Y7  // 0x7F in every byte

pair:
	VPAND (SI), Y7, Y0
	VPSRLDQ $8, Y0, Y1
	VPMAXUB Y1, Y0, Y0
	VPSRLDQ $4, Y0, Y1
	VPMAXUB Y1, Y0, Y0
	VPSRLDQ $2, Y0, Y1
	VPMAXUB Y1, Y0, Y0
	VPSRLDQ $1, Y0, Y1
	VPMAXUB Y1, Y0, Y0
	VPEXTRB $0, X0, AX
	VEXTRACTI128 $1, Y0, X1
	VPEXTRB $0, X1, BX
	MOVB AX, (DI)
	MOVB BX, 1(DI)
	ADDQ $32, SI
	ADDQ $2, DI
	DECQ CX
	JNZ pair
	VZEROUPPER
	RET

// qThrIdx<k> picks byte k of the first 8 of a lane's... of each 128-bit lane's
// 16 bytes: byte k in the low lane (block A's thresholds), byte 8+k in the high
// lane (block B's), after VBROADCASTI128 of the two blocks' thresholds.
#define THRIDX(name, a, b) \
	DATA name<>+0x00(SB)/8, $a; \
	DATA name<>+0x08(SB)/8, $a; \
	DATA name<>+0x10(SB)/8, $b; \
	DATA name<>+0x18(SB)/8, $b; \
	GLOBL name<>(SB), RODATA|NOPTR, $32

THRIDX(qIdx0, 0x0000000000000000, 0x0808080808080808)
THRIDX(qIdx1, 0x0101010101010101, 0x0909090909090909)
THRIDX(qIdx2, 0x0202020202020202, 0x0a0a0a0a0a0a0a0a)
THRIDX(qIdx3, 0x0303030303030303, 0x0b0b0b0b0b0b0b0b)
THRIDX(qIdx4, 0x0404040404040404, 0x0c0c0c0c0c0c0c0c)
THRIDX(qIdx5, 0x0505050505050505, 0x0d0d0d0d0d0d0d0d)
THRIDX(qIdx6, 0x0606060606060606, 0x0e0e0e0e0e0e0e0e)
THRIDX(qIdx7, 0x0707070707070707, 0x0f0f0f0f0f0f0f0f)
THRIDX(qB7f, 0x7f7f7f7f7f7f7f7f, 0x7f7f7f7f7f7f7f7f)
THRIDX(qB08, 0x0808080808080808, 0x0808080808080808)
THRIDX(qPair, 0x1001100110011001, 0x1001100110011001) // bytes 1, 16: n0 + 16·n1

// THR adds 1 to the bytes of Y3 whose magnitude (Y1) exceeds threshold byte k of
// their block (Y2, selected by idx); clobbers Y4.
#define THR(idx) \
	VPSHUFB idx<>(SB), Y2, Y4; \
	VPCMPGTB Y4, Y1, Y4; \
	VPSUBB Y4, Y3, Y3

// func nvfp4Codes16AVX2(dst, src []byte, thr []uint64)
// For each block b of 16 codes (len(thr) blocks, an even number, not zero; src
// holds 16 per block, dst gets 8): the nibble of code c is the number of bytes
// k < 7 of thr[b] that are less than c & 0x7F (signed bytes), plus 8 when c is
// negative and c & 0x7F is greater than byte 7; nibbles are packed low first.
TEXT ·nvfp4Codes16AVX2(SB), NOSPLIT, $0-72
	MOVQ dst_base+0(FP), DI
	MOVQ src_base+24(FP), SI
	MOVQ thr_base+48(FP), DX
	MOVQ thr_len+56(FP), CX
	SHRQ $1, CX
	VMOVDQU qB7f<>(SB), Y8
	VMOVDQU qB08<>(SB), Y9
	VMOVDQU qPair<>(SB), Y10

pairs:
	VMOVDQU (SI), Y0
	VPAND Y8, Y0, Y1
	VBROADCASTI128 (DX), Y2
	VPXOR Y3, Y3, Y3
	THR(qIdx0)
	THR(qIdx1)
	THR(qIdx2)
	THR(qIdx3)
	THR(qIdx4)
	THR(qIdx5)
	THR(qIdx6)
	VPSHUFB qIdx7<>(SB), Y2, Y4
	VPCMPGTB Y4, Y1, Y4   // magnitude above the sign threshold
	VPXOR Y5, Y5, Y5
	VPCMPGTB Y0, Y5, Y5   // code negative
	VPAND Y5, Y4, Y4
	VPAND Y9, Y4, Y4
	VPOR Y4, Y3, Y3
	VPMADDUBSW Y10, Y3, Y3 // words n[2j] + 16·n[2j+1]
	VPACKUSWB Y3, Y3, Y3
	VPERMQ $0x08, Y3, Y3
	VMOVDQU X3, (DI)
	ADDQ $32, SI
	ADDQ $16, DI
	ADDQ $16, DX
	DECQ CX
	JNZ pairs
	VZEROUPPER
	RET

// func maxCodesRowAVX2(acc, src []byte)
// acc[i] = max(acc[i], src[i] & 0x7F) for len(acc) bytes, a multiple of 32.
TEXT ·maxCodesRowAVX2(SB), NOSPLIT, $0-48
	MOVQ acc_base+0(FP), DI
	MOVQ acc_len+8(FP), CX
	MOVQ src_base+24(FP), SI
	SHRQ $5, CX
	JZ   nothing
	VPCMPEQB Y7, Y7, Y7
	VPSRLW $9, Y7, Y7
	VPACKUSWB Y7, Y7, Y7  // 0x7F in every byte

acc32:
	VPAND (SI), Y7, Y0
	VPMAXUB (DI), Y0, Y0
	VMOVDQU Y0, (DI)
	ADDQ $32, SI
	ADDQ $32, DI
	DECQ CX
	JNZ acc32
	VZEROUPPER

nothing:
	RET
