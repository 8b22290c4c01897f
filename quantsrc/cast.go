package quantsrc

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"

	"github.com/quantstream/quantstream"
	"github.com/quantstream/quantstream/arrowio"
	"github.com/quantstream/quantstream/quant"
)

// ErrCast marks an MXFP4 → NVFP4 cast that cannot be made.
var ErrCast = errors.New("quantsrc: cannot cast MXFP4 to NVFP4")

// The MXFP4 → NVFP4 cast (hf_ptq --cast_mxfp4_to_nvfp4, examples/hf_ptq/
// cast_mxfp4_to_nvfp4.apply_to_model with numeric_utils.mxfp4_to_nvfp4_global_amax
// and mxfp4_to_nvfp4_per_block_amax). For one MXFP4 projection, with k = scale − 127
// per MXFP4 block of 32 and k_max the largest k over the blocks whose scale byte is
// not 0 (0 when there is none), m = k_max − 8:
//
//	global_amax     = 6 · 448 · 2^m                      (scale_2 = 2^m, exact)
//	block amax      = 6 · 2^k                            every NVFP4 block of the MXFP4
//	                                                     block (two), when the tensor is
//	                                                     lossless: every block has scale
//	                                                     byte 0 or k ≥ k_max − 17
//	otherwise, per block: 6 · 2^k if −9 ≤ k − (k_max′ − 8) ≤ 8 (k_max′: −127 when
//	every byte is 0), else max_nibble · 2^k (the block's largest E2M1 magnitude)
//
// so that in every in-range block the NVFP4 block scale times scale_2 is 2^k and the
// NVFP4 elements decode to the MXFP4 values exactly. The amax is laid out as the
// calibrated one, [E·R·2G, 1] (E-major), and both buffers are float32.
const (
	castE4M3KMax     = 8
	castE4M3KMin     = -9
	castLosslessSpan = castE4M3KMax - castE4M3KMin // 17
)

// CastQuantizer is the weight quantizer the cast sets for an MXFP4 projection
// <base>_blocks: <base>_weight_quantizer (the batched-matmul experts' quantizer).
func CastQuantizer(base string) string { return base + "_weight_quantizer" }

// CastProjections lists the MXFP4 projections the cast covers (<c>.<p>, sorted).
func (s *Scheme) CastProjections() []string {
	var out []string
	for _, w := range s.mx {
		out = append(out, w.name)
	}
	return out
}

// CastMXFP4 returns the view ck with, for each of the scheme's MXFP4 projections
// (a subset may be given in only; nil means all), the two buffers the cast sets on
// its weight quantizer — <q>._amax and <q>._global_amax, q = CastQuantizer(base) —
// derived from the stored *_scales (and *_blocks when a tensor is not lossless).
// ck must be the scheme's view (View), whose stored tensors are the source's.
func (s *Scheme) CastMXFP4(ck *arrowio.Checkpoint, only map[string]bool) (*arrowio.Checkpoint, error) {
	if s.Method != MXFP4 {
		return nil, fmt.Errorf("%w: the source is %s, not MXFP4", ErrCast, s.Method)
	}
	var derived []arrowio.Derived
	for _, w := range s.mx {
		if only != nil && !only[w.name] {
			continue
		}
		q := CastQuantizer(w.name)
		blocks := int64(w.experts) * int64(w.rows) * int64(2*w.groups)
		derived = append(derived,
			arrowio.Derived{
				TensorInfo: quantstream.TensorInfo{Name: q + "._global_amax", DType: quant.F32, Shape: []int64{}},
				From:       []string{w.scales},
				Fill: func(ctx context.Context, dst []byte, from []arrowio.TensorRef) error {
					st, err := castStats(ctx, from[0])
					if err != nil {
						return err
					}
					binary.LittleEndian.PutUint32(dst, math.Float32bits(st.global()))
					return nil
				},
			},
			arrowio.Derived{
				TensorInfo: quantstream.TensorInfo{Name: q + "._amax", DType: quant.F32, Shape: []int64{blocks, 1}},
				From:       []string{w.scales, w.blocks},
				Fill: func(ctx context.Context, dst []byte, from []arrowio.TensorRef) error {
					return fillCastAmax(ctx, dst, w, from[0], from[1])
				},
			})
	}
	if len(derived) == 0 {
		return ck, nil
	}
	return ck.Derive(derived, nil)
}

// castScan is what the cast needs to know of a whole scales tensor.
type castScan struct {
	kmax     int  // over scale bytes > 0; 0 when there is none
	any      bool // some scale byte > 0
	lossless bool // every block has byte 0 or k ≥ kmax − 17
}

func (c castScan) global() float32 {
	return float32(quant.E2M1Max * quant.E4M3Max * math.Ldexp(1, c.kmax-castE4M3KMax))
}

// castChunk bounds the bytes of scales (and blocks) read at a time.
const castChunk = 1 << 20

// castStats scans the scales tensor twice, a chunk at a time: k_max, then whether
// every block is lossless.
func castStats(ctx context.Context, scales arrowio.TensorRef) (castScan, error) {
	var st castScan
	first := true
	err := eachChunk(ctx, scales, func(b []byte, _ int64) {
		for _, s := range b {
			if s > 0 {
				if k := int(s) - quant.E8M0Bias; first || k > st.kmax {
					st.kmax, first = k, false
				}
			}
		}
	})
	if err != nil {
		return st, err
	}
	st.any = !first
	st.lossless = true
	err = eachChunk(ctx, scales, func(b []byte, _ int64) {
		for _, s := range b {
			if s > 0 && int(s)-quant.E8M0Bias < st.kmax-castLosslessSpan {
				st.lossless = false
			}
		}
	})
	return st, err
}

// eachChunk calls f with the tensor's bytes in order, castChunk at a time, and the
// offset of each piece.
func eachChunk(ctx context.Context, t arrowio.TensorRef, f func(b []byte, off int64)) error {
	sec := t.Section()
	buf := make([]byte, min(castChunk, t.Size()))
	for off := int64(0); off < t.Size(); off += int64(len(buf)) {
		if err := ctx.Err(); err != nil {
			return err
		}
		b := buf[:min(int64(len(buf)), t.Size()-off)]
		if n, err := sec.ReadAt(b, off); n != len(b) {
			return fmt.Errorf("reading %s: %w", t.Name, err)
		}
		f(b, off)
	}
	return nil
}

// fillCastAmax writes the per-NVFP4-block amax of one projection.
func fillCastAmax(ctx context.Context, dst []byte, w mxWeight, scales, blocks arrowio.TensorRef) error {
	st, err := castStats(ctx, scales)
	if err != nil {
		return err
	}
	// The fallback's own k_max: -127 (the E8M0 bias) when no byte is > 0.
	kref := st.kmax
	if !st.any {
		kref = -quant.E8M0Bias
	}
	put := func(i int64, v float32) {
		binary.LittleEndian.PutUint32(dst[8*i:], math.Float32bits(v))
		binary.LittleEndian.PutUint32(dst[8*i+4:], math.Float32bits(v))
	}
	if st.lossless {
		return eachChunk(ctx, scales, func(b []byte, off int64) {
			for j, s := range b {
				put(off+int64(j), float32(quant.E2M1Max)*castExp2(int(s)-quant.E8M0Bias))
			}
		})
	}
	// Out-of-range blocks take max_nibble · 2^k, which needs their nibbles: read the
	// blocks alongside, a chunk of scales at a time.
	bsec := blocks.Section()
	var nib []byte
	return eachChunkErr(ctx, scales, func(b []byte, off int64) error {
		need := int64(len(b)) * quant.MXFP4BlockBytes
		if int64(cap(nib)) < need {
			nib = make([]byte, need)
		}
		nib = nib[:need]
		if n, err := bsec.ReadAt(nib, off*quant.MXFP4BlockBytes); int64(n) != need {
			return fmt.Errorf("reading %s: %w", blocks.Name, err)
		}
		for j, s := range b {
			k := int(s) - quant.E8M0Bias
			p := castExp2(k)
			d := k - (kref - castE4M3KMax)
			if d >= castE4M3KMin && d <= castE4M3KMax {
				put(off+int64(j), float32(quant.E2M1Max)*p)
				continue
			}
			var mx byte
			for _, by := range nib[j*quant.MXFP4BlockBytes : (j+1)*quant.MXFP4BlockBytes] {
				mx = max(mx, by&7, (by>>4)&7)
			}
			put(off+int64(j), e2m1Magnitude[mx]*p)
		}
		return nil
	})
}

// eachChunkErr is eachChunk with an f that can fail.
func eachChunkErr(ctx context.Context, t arrowio.TensorRef, f func(b []byte, off int64) error) error {
	var ferr error
	err := eachChunk(ctx, t, func(b []byte, off int64) {
		if ferr == nil {
			ferr = f(b, off)
		}
	})
	if err != nil {
		return err
	}
	return ferr
}

// castExp2 is torch.exp2(k.float()) for an integer k: exact in float32, including
// the subnormals down to 2^-149 (the E8M0 range needs 2^-127 … 2^127).
func castExp2(k int) float32 { return float32(math.Ldexp(1, k)) }

// e2m1Magnitude is the E2M1 value of a 3-bit magnitude code.
var e2m1Magnitude = [8]float32{0, 0.5, 1, 1.5, 2, 3, 4, 6}
