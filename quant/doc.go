// Package quant is the numeric core of quantstream: ModelOpt's weight formats
// reproduced bit for bit on plain slices. It has no files, no Arrow and no
// goroutines; everything is pure functions of tensors.
//
// # Model
//
// A Tensor is a dtype, a shape and little-endian row-major bytes. A format
// (registered under ModelOpt's name: "fp8", "nvfp4", "mxfp4", ...) turns a weight
// in its export dtype plus the scales ModelOpt computed into packed bytes, exactly
// as quant_utils.to_quantized_weight does (ToQuantizedWeight), and back
// (FromQuantizedWeight). Every PyTorch operation is one rounded float32 step
// written as its own expression, type promotion is reproduced (a 0-dim scale does
// not promote a BF16 weight, so the quotient is rounded to BF16 first), and each
// division of a tensor by a Python constant takes a DivMode: DivIEEE for goldens
// made on CPU, DivCUDA for checkpoints exported on a GPU.
//
// Kernels take dst first, append and return it, and work on row ranges (NVFP4,
// RowExport, the FP8/INT8/MXFP8 row loops inside it) or block ranges
// (AppendMXFP4Blocks): output bytes of a range depend only on that range, so callers
// may split a tensor across goroutines in any way and get identical bytes.
// Reductions that cross rows (the per-tensor amax of TensorAmax, the 2-D block amax
// of FP8 block scales) are one sequential pass over the whole tensor, so their order
// is fixed. Each fast kernel has a naive reference loop in its doc comment and in the
// benchmarks beside it.
//
// ModelOpt's intermediate steps (the qtensor methods, the scale getters of
// quant_utils) are methods of Reference, which the golden parity runner checks one by
// one; a conversion needs only the functions above.
//
// # Vector kernels
//
// On amd64 the loops over BF16 weights (the FP8, INT8, INT4, NVFP4, MXFP4 and
// MXFP8 kernels and the weight amax) also run as assembly, AVX2 or AVX-512,
// picked once from the CPU; GODEBUG=cpu.avx512f=off or cpu.avx2=off lowers the
// choice. The purego build tag and other architectures run only the portable Go
// loops, which stay the definition: every level gives the same bytes.
//
// # Element layouts
//
// These bit layouts are part of the checkpoint format.
//
// float8_e4m3fn (F8_E4M3: FP8 weights, NVFP4 block scales), bias 7, no infinities:
//
//	 7   6 5 4 3   2 1 0
//	[s | e e e e | m m m]     value = (-1)^s · 2^(e-7) · 1.mmm      e in 1..15
//	                          value = (-1)^s · 2^-6 · 0.mmm         e = 0
//	0x7E = 448 (max), 0x7F / 0xFF = NaN, 0x80 = -0, 0x01 = 2^-9
//
// The float32 → E4M3 cast does not saturate: it rounds to nearest even and gives
// NaN (0x7F with the sign) above 464.
//
// E2M1 (FP4 elements of NVFP4 and MXFP4), packed two per byte along the last
// dimension, element 2j in the low nibble:
//
//	byte j:  7 6 5 4   3 2 1 0
//	        [element 2j+1 | element 2j]
//	nibble:  3   2 1
//	        [s | code]        code 0..7 = 0, 0.5, 1, 1.5, 2, 3, 4, 6
//
// NVFP4 rounds ties to the even code and sets s for x < 0 (so -0 is 0x0);
// MXFP4 rounds ties down and sets s for x <= 0 (every zero is 0x8).
//
// E8M0 (MXFP4/MXFP8 block scales, stored as U8): a biased exponent only,
//
//	 7 6 5 4 3 2 1 0
//	[e e e e e e e e]         value = 2^(e-127), 0xFF = NaN
//
// INT8/INT4 layouts are documented with their kernels (int.go).
//
// # Ownership
//
// Functions never retain the Data of their arguments; returned tensors own fresh
// slices. Registered formats may be used concurrently.
package quant
