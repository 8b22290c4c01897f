//go:build amd64 && !purego

#include "textflag.h"

// BF16 kernels; kernels.go says what they must equal. Go assembler operand order
// is the reverse of Intel's: "VDIVPS Z1, Z0, Z2" is Z2 = Z0 / Z1, and where NaNs
// meet, Intel's first source (the second operand here) is the one propagated, as
// in the portable x / d.

// VEC defines an 8-lane vector of the 32-bit constant v (AVX2 operands; AVX-512
// kernels broadcast its first lane).
#define VEC(name, v) \
	DATA name<>+0x00(SB)/4, $v; \
	DATA name<>+0x04(SB)/4, $v; \
	DATA name<>+0x08(SB)/4, $v; \
	DATA name<>+0x0c(SB)/4, $v; \
	DATA name<>+0x10(SB)/4, $v; \
	DATA name<>+0x14(SB)/4, $v; \
	DATA name<>+0x18(SB)/4, $v; \
	DATA name<>+0x1c(SB)/4, $v; \
	GLOBL name<>(SB), RODATA|NOPTR, $32

VEC(cAbs, 0x7fffffff)
VEC(cOne, 1)
VEC(c7f, 0x7f)
VEC(c80, 0x80)
VEC(c7fff, 0x7fff)
VEC(c7ffff, 0x7ffff)
VEC(cHi16, 0xffff0000)
VEC(cQNaN, 0x7fc00000)
VEC(cE4M3Rebias, 0x3c000000) // 120<<23: exponent bias 127 → 7
VEC(cE4M3MinNorm, 0x3c800000) // 121<<23 = 2^-6, the smallest E4M3 normal
VEC(cE4M3Magic, 0x46800000)   // 2^14: its ulp is 2^-9, the E4M3 subnormal step
VEC(cAbs16, 0x7fff7fff)       // sign bits of two BF16 lanes cleared
VEC(cZero, 0)
VEC(cOneF, 0x3f800000)        // 1.0
VEC(cF127, 0x42fe0000)        // 127.0
VEC(cFm128, 0xc3000000)       // -128.0
VEC(cF7, 0x40e00000)          // 7.0
VEC(cFm8, 0xc1000000)         // -8.0
VEC(cF448, 0x43e00000)        // 448.0
VEC(cFm448, 0xc3e00000)       // -448.0
VEC(cMinScale, 0x3b000000)    // 2^-9, NVFP4's lower clamp of block scales
VEC(c0f, 0x0f)
VEC(cf0, 0xf0)
VEC(c00ff, 0x00ff00ff)        // low byte of each 16-bit lane
VEC(c0000ffff, 0x0000ffff)    // low 16-bit lane of each dword
VEC(c7, 7)
VEC(c8, 8)
VEC(c1fffff, 0x1fffff)
VEC(cE2M1Rebias, 0x3f000000)  // 126<<23: exponent bias 127 → 1
VEC(cE2M1Magic, 0x4a800000)   // 2^22: its ulp is 0.5, the E2M1 subnormal step
VEC(cF075, 0x3f400000)        // 0.75

// packPerm puts the dwords of two VPACKUSDW and one VPACKUSWB back in order.
DATA packPerm<>+0x00(SB)/4, $0
DATA packPerm<>+0x04(SB)/4, $4
DATA packPerm<>+0x08(SB)/4, $1
DATA packPerm<>+0x0c(SB)/4, $5
DATA packPerm<>+0x10(SB)/4, $2
DATA packPerm<>+0x14(SB)/4, $6
DATA packPerm<>+0x18(SB)/4, $3
DATA packPerm<>+0x1c(SB)/4, $7
GLOBL packPerm<>(SB), RODATA|NOPTR, $32

// ---- AVX-512 ----

// E4M3_CONSTS_Z loads the registers E4M3_Z and RBF16_Z use.
#define E4M3_CONSTS_Z \
	VPBROADCASTD cAbs<>(SB), Z31; \
	VPBROADCASTD cE4M3Rebias<>(SB), Z30; \
	VPBROADCASTD cOne<>(SB), Z29; \
	VPBROADCASTD c7ffff<>(SB), Z28; \
	VPBROADCASTD c7f<>(SB), Z27; \
	VPBROADCASTD cE4M3MinNorm<>(SB), Z26; \
	VPBROADCASTD cE4M3Magic<>(SB), Z25; \
	VPBROADCASTD c80<>(SB), Z24; \
	VPBROADCASTD c7fff<>(SB), Z23; \
	VPBROADCASTD cHi16<>(SB), Z22; \
	VPBROADCASTD cQNaN<>(SB), Z21

// E4M3_Z is F32ToE4M3 on 16 lanes: out gets the code of the float32 in "in" in the
// low byte of each dword (the rest zero). Normal range: rebias and round the
// mantissa to 3 bits, ties to even, by integer addition; from 464 up (and Inf,
// NaN) the result reaches 0x7F and is capped there. Below 2^-6: |x| + 2^14 rounds
// |x| to the subnormal grid in the FPU. Uses K1, clobbers a and t.
#define E4M3_Z(in, out, a, t) \
	VPANDD Z31, in, a; \
	VPSUBD Z30, a, out; \
	VPSRLD $20, out, t; \
	VPANDD Z29, t, t; \
	VPADDD Z28, out, out; \
	VPADDD t, out, out; \
	VPSRLD $20, out, out; \
	VPMINUD Z27, out, out; \
	VPCMPUD $1, Z26, a, K1; \
	VADDPS Z25, a, t; \
	VPSUBD Z25, t, K1, out; \
	VPSRLD $24, in, t; \
	VPTERNLOGD $0xf8, Z24, t, out

// RBF16_Z is F32ToBF16 then back to float32 on 16 lanes: round to nearest even on
// bit 16; every NaN becomes 0x7FC0. Uses K2.
#define RBF16_Z(in, out) \
	VPSRLD $16, in, out; \
	VPANDD Z29, out, out; \
	VPADDD Z23, out, out; \
	VPADDD in, out, out; \
	VPANDD Z22, out, out; \
	VCMPPS $3, in, in, K2; \
	VMOVDQA32 Z21, K2, out

// func fp8DivBF16AVX512(dst, src []byte, d float32, roundBF16 bool)
// len(dst) is a multiple of 16, src holds 2·len(dst) bytes.
TEXT ·fp8DivBF16AVX512(SB), NOSPLIT, $0-53
	MOVQ dst_base+0(FP), DI
	MOVQ dst_len+8(FP), CX
	MOVQ src_base+24(FP), SI
	VBROADCASTSS d+48(FP), Z1
	MOVBLZX roundBF16+52(FP), AX
	E4M3_CONSTS_Z
	SHRQ $4, CX
	JZ done
	TESTL AX, AX
	JNZ round

plain:
	VPMOVZXWD (SI), Z0
	VPSLLD $16, Z0, Z0
	VDIVPS Z1, Z0, Z0
	E4M3_Z(Z0, Z2, Z3, Z4)
	VPMOVDB Z2, (DI)
	ADDQ $32, SI
	ADDQ $16, DI
	DECQ CX
	JNZ plain
	JMP done

round:
	VPMOVZXWD (SI), Z0
	VPSLLD $16, Z0, Z0
	VDIVPS Z1, Z0, Z0
	RBF16_Z(Z0, Z5)
	E4M3_Z(Z5, Z2, Z3, Z4)
	VPMOVDB Z2, (DI)
	ADDQ $32, SI
	ADDQ $16, DI
	DECQ CX
	JNZ round

done:
	VZEROUPPER
	RET

// ---- AVX2 ----

// E4M3_CONSTS_Y loads the registers E4M3_Y uses (Y8-Y15).
#define E4M3_CONSTS_Y \
	VMOVDQU c80<>(SB), Y8; \
	VMOVDQU cE4M3Magic<>(SB), Y9; \
	VMOVDQU cE4M3MinNorm<>(SB), Y10; \
	VMOVDQU c7f<>(SB), Y11; \
	VMOVDQU c7ffff<>(SB), Y12; \
	VMOVDQU cOne<>(SB), Y13; \
	VMOVDQU cE4M3Rebias<>(SB), Y14; \
	VMOVDQU cAbs<>(SB), Y15

// E4M3_Y is E4M3_Z on 8 lanes; it clobbers in, a and t.
#define E4M3_Y(in, out, a, t) \
	VPAND Y15, in, a; \
	VPSUBD Y14, a, out; \
	VPSRLD $20, out, t; \
	VPAND Y13, t, t; \
	VPADDD Y12, out, out; \
	VPADDD t, out, out; \
	VPSRLD $20, out, out; \
	VPMINUD Y11, out, out; \
	VADDPS Y9, a, t; \
	VPSUBD Y9, t, t; \
	VPCMPGTD a, Y10, a; \
	VPBLENDVB a, t, out, out; \
	VPSRLD $24, in, in; \
	VPAND Y8, in, in; \
	VPOR in, out, out

// RBF16_Y is RBF16_Z on 8 lanes, in place; it clobbers t and m.
#define RBF16_Y(x, t, m) \
	VPSRLD $16, x, t; \
	VPAND Y13, t, t; \
	VPADDD c7fff<>(SB), t, t; \
	VPADDD x, t, t; \
	VPAND cHi16<>(SB), t, t; \
	VCMPPS $3, x, x, m; \
	VBLENDVPS m, cQNaN<>(SB), t, x

// PACK4_Y packs the low bytes of the dwords of a, b, c, d (each ≤ 0xFF) into a,
// in order; it clobbers b and c.
#define PACK4_Y(a, b, c, d) \
	VPACKUSDW b, a, a; \
	VPACKUSDW d, c, c; \
	VPACKUSWB c, a, a; \
	VMOVDQU packPerm<>(SB), b; \
	VPERMD a, b, a

// FP8_Y quantizes the 8 BF16 values at off(SI) into the dwords of out.
#define FP8_Y(off, out) \
	VPMOVZXWD off(SI), Y0; \
	VPSLLD $16, Y0, Y0; \
	VDIVPS Y7, Y0, Y0; \
	E4M3_Y(Y0, out, Y1, Y2)

#define FP8R_Y(off, out) \
	VPMOVZXWD off(SI), Y0; \
	VPSLLD $16, Y0, Y0; \
	VDIVPS Y7, Y0, Y0; \
	RBF16_Y(Y0, Y1, Y2); \
	E4M3_Y(Y0, out, Y1, Y2)

// func fp8DivBF16AVX2(dst, src []byte, d float32, roundBF16 bool)
// len(dst) is a multiple of 32, src holds 2·len(dst) bytes.
TEXT ·fp8DivBF16AVX2(SB), NOSPLIT, $0-53
	MOVQ dst_base+0(FP), DI
	MOVQ dst_len+8(FP), CX
	MOVQ src_base+24(FP), SI
	VBROADCASTSS d+48(FP), Y7
	MOVBLZX roundBF16+52(FP), AX
	E4M3_CONSTS_Y
	SHRQ $5, CX
	JZ done
	TESTL AX, AX
	JNZ round

plain:
	FP8_Y(0, Y3)
	FP8_Y(16, Y4)
	FP8_Y(32, Y5)
	FP8_Y(48, Y6)
	PACK4_Y(Y3, Y4, Y5, Y6)
	VMOVDQU Y3, (DI)
	ADDQ $64, SI
	ADDQ $32, DI
	DECQ CX
	JNZ plain
	JMP done

round:
	FP8R_Y(0, Y3)
	FP8R_Y(16, Y4)
	FP8R_Y(32, Y5)
	FP8R_Y(48, Y6)
	PACK4_Y(Y3, Y4, Y5, Y6)
	VMOVDQU Y3, (DI)
	ADDQ $64, SI
	ADDQ $32, DI
	DECQ CX
	JNZ round

done:
	VZEROUPPER
	RET

// ---- AVX-512: integer formats ----

// INT_Z is intRound(x, lo, hi) on 16 float32 lanes, in place, as int32: clamp,
// then round half to even (VCVTPS2DQ under Go's default MXCSR), NaN → 0. Uses K1.
#define INT_Z(x, hi, lo) \
	VCMPPS $7, x, x, K1; \
	VMINPS hi, x, x; \
	VMAXPS lo, x, x; \
	VCVTPS2DQ.Z x, K1, x

// func int8RowBF16AVX512(dst, src []byte, s float32)
// len(dst) is a multiple of 16, src holds 2·len(dst) bytes.
TEXT ·int8RowBF16AVX512(SB), NOSPLIT, $0-52
	MOVQ dst_base+0(FP), DI
	MOVQ dst_len+8(FP), CX
	MOVQ src_base+24(FP), SI
	VBROADCASTSS s+48(FP), Z1
	VPBROADCASTD cF127<>(SB), Z2
	VPBROADCASTD cFm128<>(SB), Z3
	SHRQ $4, CX
	JZ done

loop:
	VPMOVZXWD (SI), Z0
	VPSLLD $16, Z0, Z0
	VDIVPS Z1, Z0, Z0
	INT_Z(Z0, Z2, Z3)
	VPMOVDB Z0, (DI)
	ADDQ $32, SI
	ADDQ $16, DI
	DECQ CX
	JNZ loop

done:
	VZEROUPPER
	RET

// func int4PairsBF16AVX512(dst, x0, x1 []byte, s0, s1 []float32, b int)
// len(s0) = len(s1) blocks of b columns (b a multiple of 16); x0 and x1 are the
// two rows (2·len(dst) bytes each); dst[c] = q0[c]&0xF | q1[c]<<4.
TEXT ·int4PairsBF16AVX512(SB), NOSPLIT, $0-128
	MOVQ dst_base+0(FP), DI
	MOVQ x0_base+24(FP), SI
	MOVQ x1_base+48(FP), DX
	MOVQ s0_base+72(FP), R8
	MOVQ s0_len+80(FP), R10
	MOVQ s1_base+96(FP), R9
	MOVQ b+120(FP), R11
	SHRQ $4, R11
	JZ done
	TESTQ R10, R10
	JZ done
	VPBROADCASTD cF7<>(SB), Z2
	VPBROADCASTD cFm8<>(SB), Z3
	VPBROADCASTD c0f<>(SB), Z6

block:
	VBROADCASTSS (R8), Z1
	VBROADCASTSS (R9), Z5
	MOVQ R11, CX

inner:
	VPMOVZXWD (SI), Z0
	VPSLLD $16, Z0, Z0
	VDIVPS Z1, Z0, Z0
	INT_Z(Z0, Z2, Z3)
	VPMOVZXWD (DX), Z4
	VPSLLD $16, Z4, Z4
	VDIVPS Z5, Z4, Z4
	INT_Z(Z4, Z2, Z3)
	VPSLLD $4, Z4, Z4
	VPTERNLOGD $0xec, Z6, Z4, Z0 // Z0 = Z0&0xF | Z4
	VPMOVDB Z0, (DI)
	ADDQ $32, SI
	ADDQ $32, DX
	ADDQ $16, DI
	DECQ CX
	JNZ inner
	ADDQ $4, R8
	ADDQ $4, R9
	DECQ R10
	JNZ block

done:
	VZEROUPPER
	RET

// ---- AVX-512: E2M1 formats ----

// E2M1_CONSTS_Z loads the registers E2M1NV_Z and E2M1MX_Z use.
#define E2M1_CONSTS_Z \
	VPBROADCASTD cAbs<>(SB), Z31; \
	VPBROADCASTD cOne<>(SB), Z29; \
	VPBROADCASTD cE2M1Rebias<>(SB), Z16; \
	VPBROADCASTD c1fffff<>(SB), Z17; \
	VPBROADCASTD c7<>(SB), Z18; \
	VPBROADCASTD cOneF<>(SB), Z19; \
	VPBROADCASTD cE2M1Magic<>(SB), Z20; \
	VPBROADCASTD c8<>(SB), Z14; \
	VPBROADCASTD cF075<>(SB), Z13; \
	VPXORD Z12, Z12, Z12

// E2M1NV_Z is F32ToE2M1Even on 16 lanes: the E2M1 grid is a float format with one
// mantissa bit, so NVFP4's ties-to-even-code rounding is IEEE rounding to it. From
// 1.0 up: rebias (127 → 1) and round the mantissa to 1 bit, ties to even, by
// integer addition, capped at code 7 (which also takes Inf and NaN). Below 1.0:
// |y| + 2^22 rounds |y| to the 0.5 grid in the FPU. Sign bit for y < 0 (not −0,
// not NaN). Uses K1, K2; clobbers a, t.
#define E2M1NV_Z(in, out, a, t) \
	VPANDD Z31, in, a; \
	VPSUBD Z16, a, out; \
	VPSRLD $22, out, t; \
	VPANDD Z29, t, t; \
	VPADDD Z17, out, out; \
	VPADDD t, out, out; \
	VPSRLD $22, out, out; \
	VPMINUD Z18, out, out; \
	VPCMPUD $1, Z19, a, K1; \
	VADDPS Z20, a, t; \
	VPSUBD Z20, t, K1, out; \
	VCMPPS $1, Z12, in, K2; \
	VPORD Z14, out, K2, out

// E2M1MX_Z is F32ToE2M1Down on 16 lanes: as E2M1NV_Z but ties go to the smaller
// magnitude (no round-to-even bit; below 1.0 the one tie the FPU sends up, 0.75,
// is taken back down), the sign bit for y <= 0, and NaN gives 0.
#define E2M1MX_Z(in, out, a, t) \
	VPANDD Z31, in, a; \
	VPSUBD Z16, a, out; \
	VPADDD Z17, out, out; \
	VPSRLD $22, out, out; \
	VPMINUD Z18, out, out; \
	VPCMPUD $1, Z19, a, K1; \
	VADDPS Z20, a, t; \
	VPSUBD Z20, t, K1, out; \
	VPCMPEQD Z13, a, K2; \
	VPSUBD Z29, out, K2, out; \
	VCMPPS $2, Z12, in, K2; \
	VPORD Z14, out, K2, out; \
	VCMPPS $7, in, in, K2; \
	VMOVDQA32.Z out, K2, out

// PAIRS_Z packs the 16 nibble codes in the dwords of c (element 2j low) into 8
// bytes at dst.
#define PAIRS_Z(c, t, dst) \
	VPSRLQ $28, c, t; \
	VPORQ t, c, c; \
	VPMOVQB c, dst

// HMAXW_X leaves in AX (low 16 bits, the rest zero) the largest unsigned 16-bit
// lane of X0; ones is an all-ones X register. Clobbers X0.
#define HMAXW_X(ones) \
	VPXOR ones, X0, X0; \
	VPHMINPOSUW X0, X0; \
	VMOVD X0, AX; \
	NOTL AX; \
	ANDL $0xffff, AX

// treePerm16 puts the block maxima TREE16_Z leaves back in block order.
DATA treePerm16<>+0x00(SB)/4, $0
DATA treePerm16<>+0x04(SB)/4, $4
DATA treePerm16<>+0x08(SB)/4, $8
DATA treePerm16<>+0x0c(SB)/4, $12
DATA treePerm16<>+0x10(SB)/4, $2
DATA treePerm16<>+0x14(SB)/4, $6
DATA treePerm16<>+0x18(SB)/4, $10
DATA treePerm16<>+0x1c(SB)/4, $14
DATA treePerm16<>+0x20(SB)/4, $1
DATA treePerm16<>+0x24(SB)/4, $5
DATA treePerm16<>+0x28(SB)/4, $9
DATA treePerm16<>+0x2c(SB)/4, $13
DATA treePerm16<>+0x30(SB)/4, $3
DATA treePerm16<>+0x34(SB)/4, $7
DATA treePerm16<>+0x38(SB)/4, $11
DATA treePerm16<>+0x3c(SB)/4, $15
GLOBL treePerm16<>(SB), RODATA|NOPTR, $64

// TREE16_Z reduces 16 blocks to their maxima: Zi (i = 0..7) holds the 16 partial
// maxima (unsigned words) of block 2i in its low 256 bits and of block 2i+1 in its
// high 256 bits. Each step halves the words per block and merges registers:
// 128-bit lanes across register pairs, then qwords, then dwords within lanes, then
// words. Z0 ends as the 16 maxima in block order, each as the float32 bits of the
// BF16 magnitude (word << 16). Needs K5 = 0xAAAA and Z13 = treePerm16; clobbers
// Z0-Z9.
#define TREE16_Z \
	VSHUFI64X2 $0x88, Z1, Z0, Z8; \
	VSHUFI64X2 $0xdd, Z1, Z0, Z9; \
	VPMAXUW Z9, Z8, Z0; \
	VSHUFI64X2 $0x88, Z3, Z2, Z8; \
	VSHUFI64X2 $0xdd, Z3, Z2, Z9; \
	VPMAXUW Z9, Z8, Z1; \
	VSHUFI64X2 $0x88, Z5, Z4, Z8; \
	VSHUFI64X2 $0xdd, Z5, Z4, Z9; \
	VPMAXUW Z9, Z8, Z2; \
	VSHUFI64X2 $0x88, Z7, Z6, Z8; \
	VSHUFI64X2 $0xdd, Z7, Z6, Z9; \
	VPMAXUW Z9, Z8, Z3; \
	VPUNPCKLQDQ Z1, Z0, Z8; \
	VPUNPCKHQDQ Z1, Z0, Z9; \
	VPMAXUW Z9, Z8, Z0; \
	VPUNPCKLQDQ Z3, Z2, Z8; \
	VPUNPCKHQDQ Z3, Z2, Z9; \
	VPMAXUW Z9, Z8, Z1; \
	VPSHUFD $0xb1, Z0, Z8; \
	VPMAXUW Z8, Z0, Z0; \
	VPSHUFD $0xb1, Z1, Z8; \
	VPMAXUW Z8, Z1, Z1; \
	VMOVDQA32 Z1, K5, Z0; \
	VPSRLD $16, Z0, Z8; \
	VPMAXUW Z8, Z0, Z0; \
	VPSLLD $16, Z0, Z0; \
	VPERMD Z0, Z13, Z0

// PAIR16_Z loads blocks 2i and 2i+1 of 16 elements (64 bytes at off(SI)) into dst.
#define PAIR16_Z(off, dst) \
	VPANDD off(SI), Z20, dst

// PAIR32_Z folds blocks 2i and 2i+1 of 32 elements (128 bytes at off(SI)) into
// dst: the first block's two halves in the low 256 bits, the second's in the high.
#define PAIR32_Z(off, dst) \
	VPANDD off(SI), Z20, Z10; \
	VPANDD (off+64)(SI), Z20, Z11; \
	VSHUFI64X2 $0x44, Z11, Z10, Z12; \
	VSHUFI64X2 $0xee, Z11, Z10, Z10; \
	VPMAXUW Z12, Z10, dst

// SCALESV_Z turns 16 amax values (float32, in Z0) into E4M3 block scale codes (the
// dwords of Z2) and divisors (Z5): s = amax/d, 0 → 1, clamp to [lo, hi] = [2^-9,
// 448] (NaN kept), code = E4M3(s), divisor = tab[code]·s2 with tab = E4M3ToF32's
// table at R8. Uses K1, K3, K4; clobbers Z0, Z3, Z4.
#define SCALESV_Z(d, s2, zero, one, lo, hi) \
	VDIVPS d, Z0, Z0; \
	VCMPPS $0, zero, Z0, K3; \
	VMOVAPS one, K3, Z0; \
	VMAXPS Z0, lo, Z0; \
	VMINPS Z0, hi, Z0; \
	E4M3_Z(Z0, Z2, Z3, Z4); \
	KXNORW K4, K4, K4; \
	VGATHERDPS (R8)(Z2*4), K4, Z5; \
	VMULPS s2, Z5, Z5

// SCALES16_Z is SCALESV_Z storing the codes at (DI) and the divisors at (R9), then
// advancing both.
#define SCALES16_Z \
	SCALESV_Z(Z19, Z18, Z17, Z16, Z15, Z14); \
	VPMOVDB Z2, (DI); \
	VMOVUPS Z5, (R9); \
	ADDQ $16, DI; \
	ADDQ $64, R9

// func nvfp4ScalesBF16AVX512(codes []byte, divs []float32, x []byte, block, nb int, d, s2 float32, tab *[256]float32)
// For each of the nb blocks of x (block a multiple of 16): amax, s = amax/d (0 → 1),
// clamp to [2^-9, 448], code = E4M3(s), divs = tab[code]·s2, as nvfp4BlockScale and
// AppendQuantizeRows compute them. len(codes) = len(divs) = nb rounded up to 16; the
// lanes past nb hold garbage. Blocks of 16 and 32 go 16 at a time through
// TREE16_Z; the rest block by block.
TEXT ·nvfp4ScalesBF16AVX512(SB), NOSPLIT, $0-104
	MOVQ codes_base+0(FP), DI
	MOVQ divs_base+24(FP), R9
	MOVQ x_base+48(FP), SI
	MOVQ block+72(FP), R11
	SHRQ $4, R11
	JZ done
	MOVQ nb+80(FP), R10
	VBROADCASTSS d+88(FP), Z19
	VBROADCASTSS s2+92(FP), Z18
	MOVQ tab+96(FP), R8
	E4M3_CONSTS_Z
	VPBROADCASTD cAbs16<>(SB), Z20
	VPXORD Z17, Z17, Z17
	VPBROADCASTD cOneF<>(SB), Z16
	VPBROADCASTD cMinScale<>(SB), Z15
	VPBROADCASTD cF448<>(SB), Z14
	VMOVDQU32 treePerm16<>(SB), Z13
	MOVL $0xaaaa, AX
	KMOVW AX, K5
	MOVQ R10, R12
	SHRQ $4, R12 // whole groups of 16 blocks
	JZ rest
	CMPQ R11, $1
	JEQ tree16
	CMPQ R11, $2
	JEQ tree32
	JMP rest

tree16:
	PAIR16_Z(0, Z0)
	PAIR16_Z(64, Z1)
	PAIR16_Z(128, Z2)
	PAIR16_Z(192, Z3)
	PAIR16_Z(256, Z4)
	PAIR16_Z(320, Z5)
	PAIR16_Z(384, Z6)
	PAIR16_Z(448, Z7)
	TREE16_Z
	SCALES16_Z
	ADDQ $512, SI
	SUBQ $16, R10
	DECQ R12
	JNZ tree16
	JMP rest

tree32:
	PAIR32_Z(0, Z0)
	PAIR32_Z(128, Z1)
	PAIR32_Z(256, Z2)
	PAIR32_Z(384, Z3)
	PAIR32_Z(512, Z4)
	PAIR32_Z(640, Z5)
	PAIR32_Z(768, Z6)
	PAIR32_Z(896, Z7)
	TREE16_Z
	SCALES16_Z
	ADDQ $1024, SI
	SUBQ $16, R10
	DECQ R12
	JNZ tree32

rest:
	// The remaining R10 blocks: each block's amax into divs, then the scales of
	// those (at most one group of 16 when the tree ran).
	TESTQ R10, R10
	JZ done
	VPCMPEQD X12, X12, X12
	MOVQ R9, BX
	MOVQ R10, R12

amax:
	VPXOR Y0, Y0, Y0
	MOVQ R11, CX

amaxin:
	VPANDD (SI), Y20, Y1
	VPMAXUW Y1, Y0, Y0
	ADDQ $32, SI
	DECQ CX
	JNZ amaxin
	VEXTRACTI128 $1, Y0, X1
	VPMAXUW X1, X0, X0
	HMAXW_X(X12)
	SHLL $16, AX
	MOVL AX, (BX)
	ADDQ $4, BX
	DECQ R12
	JNZ amax
	ADDQ $15, R10
	SHRQ $4, R10

sc:
	VMOVUPS (R9), Z0
	SCALES16_Z
	DECQ R10
	JNZ sc

done:
	VZEROUPPER
	RET

// func nvfp4PackBF16AVX512(dst, x []byte, gdivs []float32)
// x holds 16·len(gdivs) BF16 values, group g divided by gdivs[g]; dst gets 8
// bytes per group (nvfp4PackDivScalar).
TEXT ·nvfp4PackBF16AVX512(SB), NOSPLIT, $0-72
	MOVQ dst_base+0(FP), DI
	MOVQ x_base+24(FP), SI
	MOVQ gdivs_base+48(FP), R9
	MOVQ gdivs_len+56(FP), CX
	E2M1_CONSTS_Z
	TESTQ CX, CX
	JZ done

loop:
	VPMOVZXWD (SI), Z0
	VPSLLD $16, Z0, Z0
	VBROADCASTSS (R9), Z1
	VDIVPS Z1, Z0, Z0
	E2M1NV_Z(Z0, Z2, Z3, Z4)
	PAIRS_Z(Z2, Z3, (DI))
	ADDQ $32, SI
	ADDQ $4, R9
	ADDQ $8, DI
	DECQ CX
	JNZ loop

done:
	VZEROUPPER
	RET

// NVCOL_Z quantizes 16 columns of stored row SI+off (BF16) divided lane by lane by
// Z5 into the nibble codes in the dwords of out.
#define NVCOL_Z(off, out) \
	VPMOVZXWD off, Z0; \
	VPSLLD $16, Z0, Z0; \
	VDIVPS Z5, Z0, Z0; \
	E2M1NV_Z(Z0, out, Z3, Z4)

// func nvfp4ColsBF16AVX512(dstP, dstS, x []byte, A, B, c0, c1, block int, d, s2 float32, tab *[256]float32)
// NVFP4 of one batched-matmul expert in its stored layout: x is the [A, B] BF16
// matrix, and the quantized rows are its columns, in blocks of block stored rows.
// For columns [c0, c1) (a multiple of 16 apart) it writes the packed bytes dstP
// [A/2, B], byte (j, b) = nib(2j, b) | nib(2j+1, b)<<4, and the E4M3 scales dstS
// [A/block, B]: AppendQuantizeRows of the transposed expert, transposed back, 16
// transposed rows per vector (the block amax is a max down the stored rows).
TEXT ·nvfp4ColsBF16AVX512(SB), NOSPLIT, $0-128
	MOVQ dstP_base+0(FP), R9
	MOVQ dstS_base+24(FP), BX
	MOVQ x_base+48(FP), R10
	MOVQ A+72(FP), R13
	MOVQ B+80(FP), R11
	LEAQ (R11)(R11*1), R12 // stored row stride in bytes
	MOVQ block+104(FP), AX
	TESTQ AX, AX
	JZ done
	XORQ DX, DX
	MOVQ R13, AX
	DIVQ block+104(FP)
	MOVQ AX, R13 // blocks down a column
	TESTQ R13, R13
	JZ done
	MOVQ c1+96(FP), R14
	SUBQ c0+88(FP), R14
	SHRQ $4, R14
	JZ done
	MOVQ tab+120(FP), R8
	E4M3_CONSTS_Z
	E2M1_CONSTS_Z
	VPBROADCASTD cAbs16<>(SB), Z23
	VBROADCASTSS d+112(FP), Z21
	VBROADCASTSS s2+116(FP), Z22
	VPBROADCASTD cMinScale<>(SB), Z15
	VPBROADCASTD cF448<>(SB), Z13

block:
	MOVQ c0+88(FP), DX
	MOVQ c1+96(FP), AX
	SUBQ DX, AX
	SHRQ $4, AX
	MOVQ AX, R14

strip:
	LEAQ (R10)(DX*2), SI
	VPXOR Y0, Y0, Y0
	MOVQ block+104(FP), CX

amax:
	VPANDD (SI), Y23, Y1
	VPMAXUW Y1, Y0, Y0
	ADDQ R12, SI
	DECQ CX
	JNZ amax
	VPMOVZXWD Y0, Z0
	VPSLLD $16, Z0, Z0
	SCALESV_Z(Z21, Z22, Z12, Z19, Z15, Z13)
	VPMOVDB Z2, (BX)(DX*1)
	LEAQ (R10)(DX*2), SI
	LEAQ (R9)(DX*1), DI
	MOVQ block+104(FP), CX
	SHRQ $1, CX

pairs:
	NVCOL_Z((SI), Z6)
	NVCOL_Z((SI)(R12*1), Z7)
	VPSLLD $4, Z7, Z7
	VPORD Z7, Z6, Z6
	VPMOVDB Z6, (DI)
	LEAQ (SI)(R12*2), SI
	ADDQ R11, DI
	DECQ CX
	JNZ pairs
	ADDQ $16, DX
	DECQ R14
	JNZ strip

	// Next block of stored rows: block rows of x, block/2 rows of dstP, one of dstS.
	MOVQ block+104(FP), AX
	IMULQ R12, AX
	ADDQ AX, R10
	MOVQ block+104(FP), AX
	SHRQ $1, AX
	IMULQ R11, AX
	ADDQ AX, R9
	ADDQ R11, BX
	DECQ R13
	JNZ block

done:
	VZEROUPPER
	RET

// func mxfp4BF16AVX512(dst, scales, x []byte, block int, tab *[0x7f80]uint8)
// For each of the len(scales) blocks of x (block a multiple of 32): amax, the E8M0
// code tab[amax] (MXFP4BlockExponent + 127, tabulated per DivMode for every finite
// BF16 amax), f = 2^(127-code) (0 for an infinite amax, NaN for a NaN one, with
// code 0), then F32ToE2M1Down(x·f) in nibble pairs, as AppendMXFP4Blocks.
TEXT ·mxfp4BF16AVX512(SB), NOSPLIT, $0-88
	MOVQ dst_base+0(FP), DI
	MOVQ scales_base+24(FP), R9
	MOVQ scales_len+32(FP), R10
	MOVQ x_base+48(FP), SI
	MOVQ block+72(FP), R11
	SHRQ $5, R11
	MOVQ tab+80(FP), R8
	E2M1_CONSTS_Z
	VPBROADCASTD cAbs16<>(SB), Z23
	VPCMPEQD X15, X15, X15
	TESTQ R11, R11
	JZ done
	TESTQ R10, R10
	JZ done

block:
	MOVQ SI, R12
	VPXORD Z0, Z0, Z0
	MOVQ R11, CX

amax:
	VPANDD (SI), Z23, Z1
	VPMAXUW Z1, Z0, Z0
	ADDQ $64, SI
	DECQ CX
	JNZ amax
	VEXTRACTI64X4 $1, Z0, Y1
	VPMAXUW Y1, Y0, Y0
	VEXTRACTI128 $1, Y0, X1
	VPMAXUW X1, X0, X0
	HMAXW_X(X15)
	CMPL AX, $0x7f80
	JAE special
	MOVBLZX (R8)(AX*1), DX
	MOVL $254, BX
	SUBL DX, BX
	SHLL $23, BX
	JMP have

special:
	XORL DX, DX
	XORL BX, BX
	CMPL AX, $0x7f80
	JEQ have
	MOVL $0x7fc00000, BX

have:
	MOVB DX, (R9)
	VPBROADCASTD BX, Z1
	MOVQ R12, SI
	MOVQ R11, CX
	SHLQ $1, CX

elems:
	VPMOVZXWD (SI), Z0
	VPSLLD $16, Z0, Z0
	VMULPS Z1, Z0, Z0
	E2M1MX_Z(Z0, Z2, Z3, Z4)
	PAIRS_Z(Z2, Z3, (DI))
	ADDQ $32, SI
	ADDQ $8, DI
	DECQ CX
	JNZ elems
	INCQ R9
	DECQ R10
	JNZ block

done:
	VZEROUPPER
	RET

// MXFP8_Z encodes 16 values at xoff(SI) times Z1, clamped to ±448, as E4M3 at
// ooff(DI).
#define MXFP8_Z(xoff, ooff) \
	VPMOVZXWD xoff(SI), Z0; \
	VPSLLD $16, Z0, Z0; \
	VMULPS Z1, Z0, Z0; \
	VMAXPS Z0, Z18, Z0; \
	VMINPS Z0, Z19, Z0; \
	E4M3_Z(Z0, Z2, Z3, Z4); \
	VPMOVDB Z2, ooff(DI)

// func mxfp8BF16AVX512(dst, scales, x []byte, tab *[0x8000]uint8, mul *[256]float32, compute bool)
// x holds len(scales) blocks of 32 BF16 values. With compute, scales[b] is
// tab[amax of block b] (the E8M0 code of MXFP8BlockExponent, per DivMode);
// otherwise scales are given. dst[i] = E4M3(clamp(x[i]·mul[scale], ±448))
// (mxfp8Block32).
TEXT ·mxfp8BF16AVX512(SB), NOSPLIT, $0-89
	MOVQ dst_base+0(FP), DI
	MOVQ scales_base+24(FP), R9
	MOVQ scales_len+32(FP), R10
	MOVQ x_base+48(FP), SI
	MOVQ tab+72(FP), R8
	MOVQ mul+80(FP), R11
	MOVBLZX compute+88(FP), R12
	E4M3_CONSTS_Z
	VPBROADCASTD cAbs16<>(SB), Z20
	VPBROADCASTD cF448<>(SB), Z19
	VPBROADCASTD cFm448<>(SB), Z18
	VPCMPEQD X15, X15, X15
	TESTQ R10, R10
	JZ done

block:
	TESTL R12, R12
	JZ given
	VPANDD (SI), Z20, Z0
	VEXTRACTI64X4 $1, Z0, Y1
	VPMAXUW Y1, Y0, Y0
	VEXTRACTI128 $1, Y0, X1
	VPMAXUW X1, X0, X0
	HMAXW_X(X15)
	MOVBLZX (R8)(AX*1), DX
	MOVB DX, (R9)
	JMP have

given:
	MOVBLZX (R9), DX

have:
	VBROADCASTSS (R11)(DX*4), Z1
	MXFP8_Z(0, 0)
	MXFP8_Z(32, 16)
	ADDQ $64, SI
	ADDQ $32, DI
	INCQ R9
	DECQ R10
	JNZ block

done:
	VZEROUPPER
	RET

// ---- AVX2: integer formats ----

// INT_Y loads 8 BF16 values at off(base), divides them by div and rounds them as
// intRound into the int32 lanes of out (Y8 = hi, Y9 = lo). Clobbers Y0.
#define INT_Y(off, base, div, out) \
	VPMOVZXWD off(base), out; \
	VPSLLD $16, out, out; \
	VDIVPS div, out, out; \
	VCMPPS $7, out, out, Y0; \
	VMINPS Y8, out, out; \
	VMAXPS Y9, out, out; \
	VCVTPS2DQ out, out; \
	VPAND Y0, out, out

// func int8RowBF16AVX2(dst, src []byte, s float32)
// len(dst) is a multiple of 32.
TEXT ·int8RowBF16AVX2(SB), NOSPLIT, $0-52
	MOVQ dst_base+0(FP), DI
	MOVQ dst_len+8(FP), CX
	MOVQ src_base+24(FP), SI
	VBROADCASTSS s+48(FP), Y7
	VMOVDQU cF127<>(SB), Y8
	VMOVDQU cFm128<>(SB), Y9
	SHRQ $5, CX
	JZ done

loop:
	INT_Y(0, SI, Y7, Y3)
	INT_Y(16, SI, Y7, Y4)
	INT_Y(32, SI, Y7, Y5)
	INT_Y(48, SI, Y7, Y6)
	VPACKSSDW Y4, Y3, Y3
	VPACKSSDW Y6, Y5, Y5
	VPACKSSWB Y5, Y3, Y3
	VMOVDQU packPerm<>(SB), Y4
	VPERMD Y3, Y4, Y3
	VMOVDQU Y3, (DI)
	ADDQ $64, SI
	ADDQ $32, DI
	DECQ CX
	JNZ loop

done:
	VZEROUPPER
	RET

// INT4_Y is one packed int4 byte per dword of out for 8 columns of the two rows.
#define INT4_Y(off, out) \
	INT_Y(off, SI, Y7, Y1); \
	INT_Y(off, DX, Y10, Y2); \
	VPAND Y11, Y1, Y1; \
	VPSLLD $4, Y2, Y2; \
	VPAND Y12, Y2, Y2; \
	VPOR Y2, Y1, out

// func int4PairsBF16AVX2(dst, x0, x1 []byte, s0, s1 []float32, b int)
// As int4PairsBF16AVX512 with b a multiple of 32.
TEXT ·int4PairsBF16AVX2(SB), NOSPLIT, $0-128
	MOVQ dst_base+0(FP), DI
	MOVQ x0_base+24(FP), SI
	MOVQ x1_base+48(FP), DX
	MOVQ s0_base+72(FP), R8
	MOVQ s0_len+80(FP), R10
	MOVQ s1_base+96(FP), R9
	MOVQ b+120(FP), R11
	SHRQ $5, R11
	JZ done
	TESTQ R10, R10
	JZ done
	VMOVDQU cF7<>(SB), Y8
	VMOVDQU cFm8<>(SB), Y9
	VMOVDQU c0f<>(SB), Y11
	VMOVDQU cf0<>(SB), Y12

block:
	VBROADCASTSS (R8), Y7
	VBROADCASTSS (R9), Y10
	MOVQ R11, CX

inner:
	INT4_Y(0, Y3)
	INT4_Y(16, Y4)
	INT4_Y(32, Y5)
	INT4_Y(48, Y6)
	PACK4_Y(Y3, Y4, Y5, Y6)
	VMOVDQU Y3, (DI)
	ADDQ $64, SI
	ADDQ $64, DX
	ADDQ $32, DI
	DECQ CX
	JNZ inner
	ADDQ $4, R8
	ADDQ $4, R9
	DECQ R10
	JNZ block

done:
	VZEROUPPER
	RET

// ---- AVX2: E2M1 formats ----

// E2M1_CONSTS_Y loads Y8-Y15 for E2M1NV_Y (E2M1MX_Y uses Y12 and Y15 as temporaries).
#define E2M1_CONSTS_Y \
	VMOVDQU cOneF<>(SB), Y8; \
	VMOVDQU cAbs<>(SB), Y9; \
	VMOVDQU cE2M1Rebias<>(SB), Y10; \
	VMOVDQU c1fffff<>(SB), Y11; \
	VMOVDQU cOne<>(SB), Y12; \
	VMOVDQU c7<>(SB), Y13; \
	VMOVDQU cE2M1Magic<>(SB), Y14; \
	VMOVDQU c8<>(SB), Y15

// E2M1NV_Y is E2M1NV_Z on 8 lanes; clobbers a, t.
#define E2M1NV_Y(in, out, a, t) \
	VPAND Y9, in, a; \
	VPSUBD Y10, a, out; \
	VPSRLD $22, out, t; \
	VPAND Y12, t, t; \
	VPADDD Y11, out, out; \
	VPADDD t, out, out; \
	VPSRLD $22, out, out; \
	VPMINUD Y13, out, out; \
	VADDPS Y14, a, t; \
	VPSUBD Y14, t, t; \
	VPCMPGTD a, Y8, a; \
	VPBLENDVB a, t, out, out; \
	VCMPPS $1, cZero<>(SB), in, t; \
	VPAND Y15, t, t; \
	VPOR t, out, out

// E2M1MX_Y is E2M1MX_Z on 8 lanes; clobbers a, t, m.
#define E2M1MX_Y(in, out, a, t, m) \
	VPAND Y9, in, a; \
	VPSUBD Y10, a, out; \
	VPADDD Y11, out, out; \
	VPSRLD $22, out, out; \
	VPMINUD Y13, out, out; \
	VADDPS Y14, a, t; \
	VPSUBD Y14, t, t; \
	VPCMPEQD cF075<>(SB), a, m; \
	VPADDD m, t, t; \
	VPCMPGTD a, Y8, a; \
	VPBLENDVB a, t, out, out; \
	VCMPPS $2, cZero<>(SB), in, t; \
	VPAND c8<>(SB), t, t; \
	VPOR t, out, out; \
	VCMPPS $7, in, in, t; \
	VPAND t, out, out

// NIB_Y turns the 32 code bytes of a (element 2j at byte 2j) into 16 nibble-pair
// bytes in the low half of a; clobbers t.
#define NIB_Y(a, t) \
	VPSRLW $4, a, t; \
	VPOR t, a, a; \
	VPAND c00ff<>(SB), a, a; \
	VPACKUSWB a, a, a; \
	VPERMQ $0x08, a, a

#define NV_Y(off, out) \
	VPMOVZXWD off(SI), Y0; \
	VPSLLD $16, Y0, Y0; \
	VDIVPS Y7, Y0, Y0; \
	E2M1NV_Y(Y0, out, Y1, Y2)

#define MX_Y(off, out) \
	VPMOVZXWD off(SI), Y0; \
	VPSLLD $16, Y0, Y0; \
	VMULPS Y7, Y0, Y0; \
	E2M1MX_Y(Y0, out, Y1, Y2, Y12)

// HMAXW_Y leaves in AX the largest unsigned 16-bit lane of Y0; clobbers X0-X2.
#define HMAXW_Y \
	VEXTRACTI128 $1, Y0, X1; \
	VPMAXUW X1, X0, X0; \
	VPCMPEQD X2, X2, X2; \
	HMAXW_X(X2)

// treePerm8 puts the block maxima TREE8_Y leaves back in block order.
DATA treePerm8<>+0x00(SB)/4, $0
DATA treePerm8<>+0x04(SB)/4, $4
DATA treePerm8<>+0x08(SB)/4, $2
DATA treePerm8<>+0x0c(SB)/4, $6
DATA treePerm8<>+0x10(SB)/4, $1
DATA treePerm8<>+0x14(SB)/4, $5
DATA treePerm8<>+0x18(SB)/4, $3
DATA treePerm8<>+0x1c(SB)/4, $7
GLOBL treePerm8<>(SB), RODATA|NOPTR, $32

// BLK16_Y loads the 16 magnitudes of a block of 16 at off(SI) into dst.
#define BLK16_Y(off, dst) \
	VMOVDQU off(SI), dst; \
	VPAND cAbs16<>(SB), dst, dst

// BLK32_Y folds the two halves of a block of 32 at off(SI) into dst; clobbers Y7.
#define BLK32_Y(off, dst) \
	VMOVDQU off(SI), dst; \
	VPAND cAbs16<>(SB), dst, dst; \
	VMOVDQU (off+32)(SI), Y7; \
	VPAND cAbs16<>(SB), Y7, Y7; \
	VPMAXUW Y7, dst, dst

// MERGE_Y folds two blocks' 16 partial maxima (a, b) into dst: a's 8 in the low
// lane, b's in the high one; clobbers t1, t2.
#define MERGE_Y(a, b, dst, t1, t2) \
	VPERM2I128 $0x20, b, a, t1; \
	VPERM2I128 $0x31, b, a, t2; \
	VPMAXUW t2, t1, dst

// TREE8_Y is TREE16_Z for 8 blocks: Y0-Y3 hold MERGE_Y pairs (0,1) ... (6,7); Y0
// ends as the 8 maxima in block order as float32 bits. Clobbers Y0-Y5.
#define TREE8_Y \
	TREE8W_Y; \
	VPSLLD $16, Y0, Y0; \
	VMOVDQU treePerm8<>(SB), Y4; \
	VPERMD Y0, Y4, Y0

// TREE8W_Y is TREE8_Y up to the maxima in the low words of Y0's dwords (high words
// garbage), still in tree order.
#define TREE8W_Y \
	VPUNPCKLQDQ Y1, Y0, Y4; \
	VPUNPCKHQDQ Y1, Y0, Y5; \
	VPMAXUW Y5, Y4, Y0; \
	VPUNPCKLQDQ Y3, Y2, Y4; \
	VPUNPCKHQDQ Y3, Y2, Y5; \
	VPMAXUW Y5, Y4, Y1; \
	VPSHUFD $0xb1, Y0, Y4; \
	VPMAXUW Y4, Y0, Y0; \
	VPSHUFD $0xb1, Y1, Y4; \
	VPMAXUW Y4, Y1, Y1; \
	VPBLENDD $0xaa, Y1, Y0, Y0; \
	VPSRLD $16, Y0, Y4; \
	VPMAXUW Y4, Y0, Y0

// SCALES8_Y is SCALES16_Z for the 8 amax values in Y0 (d in Y7 is reloaded, as
// BLK32_Y clobbers it).
#define SCALES8_Y \
	VBROADCASTSS d+88(FP), Y7; \
	VDIVPS Y7, Y0, Y0; \
	VXORPS Y1, Y1, Y1; \
	VCMPPS $0, Y1, Y0, Y1; \
	VBLENDVPS Y1, cOneF<>(SB), Y0, Y0; \
	VMOVUPS cMinScale<>(SB), Y2; \
	VMAXPS Y0, Y2, Y0; \
	VMOVUPS cF448<>(SB), Y2; \
	VMINPS Y0, Y2, Y0; \
	E4M3_Y(Y0, Y3, Y1, Y2); \
	VEXTRACTI128 $1, Y3, X4; \
	VPACKUSDW X4, X3, X5; \
	VPACKUSWB X5, X5, X5; \
	VMOVQ X5, (DI); \
	VPCMPEQD Y5, Y5, Y5; \
	VGATHERDPS Y5, (R8)(Y3*4), Y6; \
	VBROADCASTSS s2+92(FP), Y0; \
	VMULPS Y0, Y6, Y6; \
	VMOVUPS Y6, (R9); \
	ADDQ $8, DI; \
	ADDQ $32, R9

// func nvfp4ScalesBF16AVX2(codes []byte, divs []float32, x []byte, block, nb int, d, s2 float32, tab *[256]float32)
// As nvfp4ScalesBF16AVX512, 8 blocks at a time, with len(codes) = len(divs) = nb
// rounded up to 8.
TEXT ·nvfp4ScalesBF16AVX2(SB), NOSPLIT, $0-104
	MOVQ codes_base+0(FP), DI
	MOVQ divs_base+24(FP), R9
	MOVQ x_base+48(FP), SI
	MOVQ block+72(FP), R11
	SHRQ $4, R11
	JZ done
	MOVQ nb+80(FP), R10
	MOVQ tab+96(FP), R8
	E4M3_CONSTS_Y
	MOVQ R10, R12
	SHRQ $3, R12 // whole groups of 8 blocks
	JZ rest
	CMPQ R11, $1
	JEQ tree16
	CMPQ R11, $2
	JEQ tree32
	JMP rest

tree16:
	BLK16_Y(0, Y0)
	BLK16_Y(32, Y1)
	MERGE_Y(Y0, Y1, Y0, Y4, Y5)
	BLK16_Y(64, Y1)
	BLK16_Y(96, Y2)
	MERGE_Y(Y1, Y2, Y1, Y4, Y5)
	BLK16_Y(128, Y2)
	BLK16_Y(160, Y3)
	MERGE_Y(Y2, Y3, Y2, Y4, Y5)
	BLK16_Y(192, Y3)
	BLK16_Y(224, Y4)
	MERGE_Y(Y3, Y4, Y3, Y5, Y6)
	TREE8_Y
	SCALES8_Y
	ADDQ $256, SI
	SUBQ $8, R10
	DECQ R12
	JNZ tree16
	JMP rest

tree32:
	BLK32_Y(0, Y0)
	BLK32_Y(64, Y1)
	MERGE_Y(Y0, Y1, Y0, Y4, Y5)
	BLK32_Y(128, Y1)
	BLK32_Y(192, Y2)
	MERGE_Y(Y1, Y2, Y1, Y4, Y5)
	BLK32_Y(256, Y2)
	BLK32_Y(320, Y3)
	MERGE_Y(Y2, Y3, Y2, Y4, Y5)
	BLK32_Y(384, Y3)
	BLK32_Y(448, Y4)
	MERGE_Y(Y3, Y4, Y3, Y5, Y6)
	TREE8_Y
	SCALES8_Y
	ADDQ $512, SI
	SUBQ $8, R10
	DECQ R12
	JNZ tree32

rest:
	TESTQ R10, R10
	JZ done
	MOVQ R9, BX
	MOVQ R10, R12

amax:
	VPXOR Y0, Y0, Y0
	MOVQ R11, CX

amaxin:
	VMOVDQU (SI), Y1
	VPAND cAbs16<>(SB), Y1, Y1
	VPMAXUW Y1, Y0, Y0
	ADDQ $32, SI
	DECQ CX
	JNZ amaxin
	HMAXW_Y
	SHLL $16, AX
	MOVL AX, (BX)
	ADDQ $4, BX
	DECQ R12
	JNZ amax
	ADDQ $7, R10
	SHRQ $3, R10

sc:
	VMOVUPS (R9), Y0
	SCALES8_Y
	DECQ R10
	JNZ sc

done:
	VZEROUPPER
	RET

// func nvfp4PackBF16AVX2(dst, x []byte, gdivs []float32)
// As nvfp4PackBF16AVX512 with len(gdivs) even.
TEXT ·nvfp4PackBF16AVX2(SB), NOSPLIT, $0-72
	MOVQ dst_base+0(FP), DI
	MOVQ x_base+24(FP), SI
	MOVQ gdivs_base+48(FP), R9
	MOVQ gdivs_len+56(FP), CX
	E2M1_CONSTS_Y
	SHRQ $1, CX
	JZ done

loop:
	VBROADCASTSS (R9), Y7
	NV_Y(0, Y3)
	NV_Y(16, Y4)
	VBROADCASTSS 4(R9), Y7
	NV_Y(32, Y5)
	NV_Y(48, Y6)
	PACK4_Y(Y3, Y4, Y5, Y6)
	NIB_Y(Y3, Y4)
	VMOVDQU X3, (DI)
	ADDQ $64, SI
	ADDQ $8, R9
	ADDQ $16, DI
	DECQ CX
	JNZ loop

done:
	VZEROUPPER
	RET

// func nvfp4ColsBF16AVX2(dstP, dstS, x []byte, A, B, c0, c1, block int, d, s2 float32, tab *[256]float32, divs []float32)
// As nvfp4ColsBF16AVX512, 8 columns per vector, c1 - c0 a multiple of 8. The E4M3
// and E2M1 constants do not fit the 16 registers together, so each block of stored
// rows takes two passes over its columns: the scales (SCALES8_Y's steps: amax down
// the block, E4M3 code, divisor tab[code]·s2 kept in divs, len ≥ c1 - c0), then the
// nibble pairs of every two stored rows divided by those divisors (NV_Y).
TEXT ·nvfp4ColsBF16AVX2(SB), NOSPLIT, $0-152
	MOVQ dstP_base+0(FP), R9
	MOVQ dstS_base+24(FP), BX
	MOVQ x_base+48(FP), R10
	MOVQ B+80(FP), R11
	LEAQ (R11)(R11*1), R12 // stored row stride in bytes
	MOVQ block+104(FP), AX
	TESTQ AX, AX
	JZ done
	XORQ DX, DX
	MOVQ A+72(FP), AX
	DIVQ block+104(FP)
	MOVQ AX, R13 // blocks down a column
	TESTQ R13, R13
	JZ done
	MOVQ c1+96(FP), R14
	SUBQ c0+88(FP), R14
	SHRQ $3, R14
	JZ done
	MOVQ tab+120(FP), R8
	MOVQ divs_base+128(FP), R15

colblock:
	// Pass 1: scales and divisors of the block's columns.
	E4M3_CONSTS_Y
	VBROADCASTSS d+112(FP), Y7
	MOVQ c0+88(FP), DX
	MOVQ c1+96(FP), R14
	SUBQ DX, R14
	SHRQ $3, R14
	MOVQ R15, DI

cscale:
	LEAQ (R10)(DX*2), SI
	VPXOR X0, X0, X0
	MOVQ block+104(FP), CX

camax:
	VMOVDQU (SI), X1
	VPAND cAbs16<>(SB), X1, X1
	VPMAXUW X1, X0, X0
	ADDQ R12, SI
	DECQ CX
	JNZ camax
	VPMOVZXWD X0, Y0
	VPSLLD $16, Y0, Y0
	VDIVPS Y7, Y0, Y0
	VXORPS Y1, Y1, Y1
	VCMPPS $0, Y1, Y0, Y1
	VBLENDVPS Y1, cOneF<>(SB), Y0, Y0
	VMOVUPS cMinScale<>(SB), Y2
	VMAXPS Y0, Y2, Y0
	VMOVUPS cF448<>(SB), Y2
	VMINPS Y0, Y2, Y0
	E4M3_Y(Y0, Y3, Y1, Y2)
	VEXTRACTI128 $1, Y3, X4
	VPACKUSDW X4, X3, X5
	VPACKUSWB X5, X5, X5
	VMOVQ X5, (BX)(DX*1)
	VPCMPEQD Y5, Y5, Y5
	VGATHERDPS Y5, (R8)(Y3*4), Y6
	VBROADCASTSS s2+116(FP), Y0
	VMULPS Y0, Y6, Y6
	VMOVUPS Y6, (DI)
	ADDQ $32, DI
	ADDQ $8, DX
	DECQ R14
	JNZ cscale

	// Pass 2: the packed nibble pairs, rows 2j and 2j+1 of the block into packed
	// row j.
	E2M1_CONSTS_Y
	MOVQ c0+88(FP), DX
	MOVQ c1+96(FP), R14
	SUBQ DX, R14
	SHRQ $3, R14
	MOVQ R15, AX

cstrip:
	VMOVUPS (AX), Y7
	LEAQ (R10)(DX*2), SI
	LEAQ (R9)(DX*1), DI
	MOVQ block+104(FP), CX
	SHRQ $1, CX

cpairs:
	NV_Y(0, Y3)
	ADDQ R12, SI
	NV_Y(0, Y4)
	ADDQ R12, SI
	VPSLLD $4, Y4, Y4
	VPOR Y4, Y3, Y3
	VEXTRACTI128 $1, Y3, X4
	VPACKUSDW X4, X3, X3
	VPACKUSWB X3, X3, X3
	VMOVQ X3, (DI)
	ADDQ R11, DI
	DECQ CX
	JNZ cpairs
	ADDQ $32, AX
	ADDQ $8, DX
	DECQ R14
	JNZ cstrip

	// Next block of stored rows: block rows of x, block/2 rows of dstP, one of dstS.
	MOVQ block+104(FP), AX
	IMULQ R12, AX
	ADDQ AX, R10
	MOVQ block+104(FP), AX
	SHRQ $1, AX
	IMULQ R11, AX
	ADDQ AX, R9
	ADDQ R11, BX
	DECQ R13
	JNZ colblock

done:
	VZEROUPPER
	RET

// func mxfp4BF16AVX2(dst, scales, x []byte, block int, tab *[0x7f80]uint8)
// As mxfp4BF16AVX512 (block a multiple of 32).
TEXT ·mxfp4BF16AVX2(SB), NOSPLIT, $0-88
	MOVQ dst_base+0(FP), DI
	MOVQ scales_base+24(FP), R9
	MOVQ scales_len+32(FP), R10
	MOVQ x_base+48(FP), SI
	MOVQ block+72(FP), R11
	SHRQ $5, R11
	MOVQ tab+80(FP), R8
	E2M1_CONSTS_Y
	TESTQ R11, R11
	JZ done
	TESTQ R10, R10
	JZ done

block:
	MOVQ SI, R13
	VPXOR Y0, Y0, Y0
	MOVQ R11, CX

amax:
	VMOVDQU (SI), Y1
	VPAND cAbs16<>(SB), Y1, Y1
	VPMAXUW Y1, Y0, Y0
	VMOVDQU 32(SI), Y1
	VPAND cAbs16<>(SB), Y1, Y1
	VPMAXUW Y1, Y0, Y0
	ADDQ $64, SI
	DECQ CX
	JNZ amax
	HMAXW_Y
	CMPL AX, $0x7f80
	JAE special
	MOVBLZX (R8)(AX*1), DX
	MOVL $254, BX
	SUBL DX, BX
	SHLL $23, BX
	JMP have

special:
	XORL DX, DX
	XORL BX, BX
	CMPL AX, $0x7f80
	JEQ have
	MOVL $0x7fc00000, BX

have:
	MOVB DX, (R9)
	VMOVD BX, X7
	VPBROADCASTD X7, Y7
	MOVQ R13, SI
	MOVQ R11, CX

elems:
	MX_Y(0, Y3)
	MX_Y(16, Y4)
	MX_Y(32, Y5)
	MX_Y(48, Y6)
	PACK4_Y(Y3, Y4, Y5, Y6)
	NIB_Y(Y3, Y4)
	VMOVDQU X3, (DI)
	ADDQ $64, SI
	ADDQ $16, DI
	DECQ CX
	JNZ elems
	INCQ R9
	DECQ R10
	JNZ block

done:
	VZEROUPPER
	RET

#define M8_Y(off, out) \
	VPMOVZXWD off(SI), Y0; \
	VPSLLD $16, Y0, Y0; \
	VMULPS Y7, Y0, Y0; \
	VMOVUPS cFm448<>(SB), Y1; \
	VMAXPS Y0, Y1, Y0; \
	VMOVUPS cF448<>(SB), Y1; \
	VMINPS Y0, Y1, Y0; \
	E4M3_Y(Y0, out, Y1, Y2)

// func mxfp8BF16AVX2(dst, scales, x []byte, tab *[0x8000]uint8, mul *[256]float32, compute bool)
// As mxfp8BF16AVX512.
TEXT ·mxfp8BF16AVX2(SB), NOSPLIT, $0-89
	MOVQ dst_base+0(FP), DI
	MOVQ scales_base+24(FP), R9
	MOVQ scales_len+32(FP), R10
	MOVQ x_base+48(FP), SI
	MOVQ tab+72(FP), R8
	MOVQ mul+80(FP), R11
	MOVBLZX compute+88(FP), R12
	E4M3_CONSTS_Y
	TESTQ R10, R10
	JZ done

block:
	TESTL R12, R12
	JZ given
	VMOVDQU (SI), Y0
	VPAND cAbs16<>(SB), Y0, Y0
	VMOVDQU 32(SI), Y1
	VPAND cAbs16<>(SB), Y1, Y1
	VPMAXUW Y1, Y0, Y0
	HMAXW_Y
	MOVBLZX (R8)(AX*1), DX
	MOVB DX, (R9)
	JMP have

given:
	MOVBLZX (R9), DX

have:
	VBROADCASTSS (R11)(DX*4), Y7
	M8_Y(0, Y3)
	M8_Y(16, Y4)
	M8_Y(32, Y5)
	M8_Y(48, Y6)
	PACK4_Y(Y3, Y4, Y5, Y6)
	VMOVDQU Y3, (DI)
	ADDQ $64, SI
	ADDQ $32, DI
	INCQ R9
	DECQ R10
	JNZ block

done:
	VZEROUPPER
	RET

// ---- AVX2: amax (memory-bound, so one level serves both) ----

// func maxMag16AVX2(data []byte) uint32
// The largest 16-bit word of data with its sign bit cleared (calibMax16);
// len(data) is a multiple of 32.
TEXT ·maxMag16AVX2(SB), NOSPLIT, $0-28
	MOVQ data_base+0(FP), SI
	MOVQ data_len+8(FP), CX
	VMOVDQU cAbs16<>(SB), Y15
	VPXOR Y0, Y0, Y0
	VPXOR Y1, Y1, Y1
	VPXOR Y2, Y2, Y2
	VPXOR Y3, Y3, Y3
	MOVQ CX, DX
	SHRQ $7, DX
	JZ tail

loop4:
	VPAND (SI), Y15, Y4
	VPAND 32(SI), Y15, Y5
	VPAND 64(SI), Y15, Y6
	VPAND 96(SI), Y15, Y7
	VPMAXUW Y4, Y0, Y0
	VPMAXUW Y5, Y1, Y1
	VPMAXUW Y6, Y2, Y2
	VPMAXUW Y7, Y3, Y3
	ADDQ $128, SI
	DECQ DX
	JNZ loop4

tail:
	ANDQ $127, CX
	SHRQ $5, CX
	JZ reduce

loop1:
	VPAND (SI), Y15, Y4
	VPMAXUW Y4, Y0, Y0
	ADDQ $32, SI
	DECQ CX
	JNZ loop1

reduce:
	VPMAXUW Y1, Y0, Y0
	VPMAXUW Y3, Y2, Y2
	VPMAXUW Y2, Y0, Y0
	HMAXW_Y
	MOVL AX, ret+24(FP)
	VZEROUPPER
	RET

// func maxMag32AVX2(data []byte) uint32
// The largest 32-bit word of data with its sign bit cleared (calibMax32);
// len(data) is a multiple of 32.
TEXT ·maxMag32AVX2(SB), NOSPLIT, $0-28
	MOVQ data_base+0(FP), SI
	MOVQ data_len+8(FP), CX
	VMOVDQU cAbs<>(SB), Y15
	VPXOR Y0, Y0, Y0
	VPXOR Y1, Y1, Y1
	VPXOR Y2, Y2, Y2
	VPXOR Y3, Y3, Y3
	MOVQ CX, DX
	SHRQ $7, DX
	JZ tail

loop4:
	VPAND (SI), Y15, Y4
	VPAND 32(SI), Y15, Y5
	VPAND 64(SI), Y15, Y6
	VPAND 96(SI), Y15, Y7
	VPMAXUD Y4, Y0, Y0
	VPMAXUD Y5, Y1, Y1
	VPMAXUD Y6, Y2, Y2
	VPMAXUD Y7, Y3, Y3
	ADDQ $128, SI
	DECQ DX
	JNZ loop4

tail:
	ANDQ $127, CX
	SHRQ $5, CX
	JZ reduce

loop1:
	VPAND (SI), Y15, Y4
	VPMAXUD Y4, Y0, Y0
	ADDQ $32, SI
	DECQ CX
	JNZ loop1

reduce:
	VPMAXUD Y1, Y0, Y0
	VPMAXUD Y3, Y2, Y2
	VPMAXUD Y2, Y0, Y0
	VEXTRACTI128 $1, Y0, X1
	VPMAXUD X1, X0, X0
	VPSHUFD $0x4e, X0, X1
	VPMAXUD X1, X0, X0
	VPSHUFD $0xb1, X0, X1
	VPMAXUD X1, X0, X0
	VMOVD X0, AX
	MOVL AX, ret+24(FP)
	VZEROUPPER
	RET

// SEGS8_Y merges the 8 segment maxima TREE8W_Y left in Y0 into dst[0:8] at (DI).
#define SEGS8_Y \
	VPAND c0000ffff<>(SB), Y0, Y0; \
	VMOVDQU treePerm8<>(SB), Y4; \
	VPERMD Y0, Y4, Y0; \
	VPMAXUD (DI), Y0, Y0; \
	VMOVDQU Y0, (DI); \
	ADDQ $32, DI

// func maxSegs16AVX2(dst []uint32, row []byte, seg int)
// dst[j] = max(dst[j], largest magnitude of the j-th run of seg BF16/F16 words of
// row); seg is a multiple of 16. Runs of 16 and 32 go 8 at a time through the
// reduction tree, the rest one by one.
TEXT ·maxSegs16AVX2(SB), NOSPLIT, $0-56
	MOVQ dst_base+0(FP), DI
	MOVQ dst_len+8(FP), R10
	MOVQ row_base+24(FP), SI
	MOVQ seg+48(FP), R11
	SHRQ $4, R11
	JZ done
	TESTQ R10, R10
	JZ done
	MOVQ R10, R12
	SHRQ $3, R12
	JZ one
	CMPQ R11, $1
	JEQ tree16
	CMPQ R11, $2
	JEQ tree32
	JMP one

tree16:
	BLK16_Y(0, Y0)
	BLK16_Y(32, Y1)
	MERGE_Y(Y0, Y1, Y0, Y4, Y5)
	BLK16_Y(64, Y1)
	BLK16_Y(96, Y2)
	MERGE_Y(Y1, Y2, Y1, Y4, Y5)
	BLK16_Y(128, Y2)
	BLK16_Y(160, Y3)
	MERGE_Y(Y2, Y3, Y2, Y4, Y5)
	BLK16_Y(192, Y3)
	BLK16_Y(224, Y4)
	MERGE_Y(Y3, Y4, Y3, Y5, Y6)
	TREE8W_Y
	SEGS8_Y
	ADDQ $256, SI
	SUBQ $8, R10
	DECQ R12
	JNZ tree16
	JMP one

tree32:
	BLK32_Y(0, Y0)
	BLK32_Y(64, Y1)
	MERGE_Y(Y0, Y1, Y0, Y4, Y5)
	BLK32_Y(128, Y1)
	BLK32_Y(192, Y2)
	MERGE_Y(Y1, Y2, Y1, Y4, Y5)
	BLK32_Y(256, Y2)
	BLK32_Y(320, Y3)
	MERGE_Y(Y2, Y3, Y2, Y4, Y5)
	BLK32_Y(384, Y3)
	BLK32_Y(448, Y4)
	MERGE_Y(Y3, Y4, Y3, Y5, Y6)
	TREE8W_Y
	SEGS8_Y
	ADDQ $512, SI
	SUBQ $8, R10
	DECQ R12
	JNZ tree32

one:
	TESTQ R10, R10
	JZ done
	VMOVDQU cAbs16<>(SB), Y15

seg:
	VPXOR Y0, Y0, Y0
	MOVQ R11, CX

in:
	VPAND (SI), Y15, Y1
	VPMAXUW Y1, Y0, Y0
	ADDQ $32, SI
	DECQ CX
	JNZ in
	HMAXW_Y
	MOVL (DI), BX
	CMPL AX, BX
	CMOVLCS BX, AX
	MOVL AX, (DI)
	ADDQ $4, DI
	DECQ R10
	JNZ seg

done:
	VZEROUPPER
	RET

// func maxElems16AVX2(dst []uint32, row []byte)
// dst[j] = max(dst[j], row's word j with its sign bit cleared); len(dst) is a
// multiple of 8.
TEXT ·maxElems16AVX2(SB), NOSPLIT, $0-48
	MOVQ dst_base+0(FP), DI
	MOVQ dst_len+8(FP), CX
	MOVQ row_base+24(FP), SI
	VMOVDQU c7fff<>(SB), Y15
	SHRQ $3, CX
	JZ done

loop:
	VPMOVZXWD (SI), Y0
	VPAND Y15, Y0, Y0
	VPMAXUD (DI), Y0, Y0
	VMOVDQU Y0, (DI)
	ADDQ $16, SI
	ADDQ $32, DI
	DECQ CX
	JNZ loop

done:
	VZEROUPPER
	RET
