package quant

import (
	"fmt"
	"math"
	"slices"
)

// Integer weight formats (INT8QTensor; quant_utils.pack_int4_in_uint8): int8_sq / int8_wo store one signed byte per
// element with a float32 scale per output row; int4_awq / w4a8_awq store two's-complement
// nibbles with a float32 scale per (row, block of B input columns), two output rows per
// byte:
//
//	packed[r][c] = q[2r][c] & 0xF | (q[2r+1][c] & 0xF) << 4      shape [O/2, I]
//
// In both, q = clamp(roundHalfEven(float32(w / s)), lo, hi), where w is the weight
// element widened exactly to float32 and the quotient is one IEEE float32 division
// (PyTorch promotes bf16/f16 ÷ a dimensioned f32 tensor to f32).

func intFloatDType(dt DType) bool { return dt == BF16 || dt == F16 || dt == F32 }

// intRound rounds a float32 quotient half-to-even and clamps it to [lo, hi] (integer
// bounds) as torch's .round().clamp(lo, hi).to(int8) does. Clamping first gives the same
// result because the bounds are integers, and it keeps |y| < 2^22, where adding and
// subtracting 1.5·2^23 in float32 rounds to the nearest integer, ties to even. A NaN
// quotient (0/0) has no defined int8 value in PyTorch (a C++ cast of NaN); we write 0.
func intRound(y, lo, hi float32) int8 {
	if !(y >= lo) {
		if y != y {
			return 0
		}
		return int8(lo)
	}
	if y > hi {
		return int8(hi)
	}
	const magic = 0x1.8p23
	r := float32(y+magic) - magic
	return int8(int32(r))
}

// appendInt8Rows quantizes whole rows of a BF16/F16/F32 weight to int8 and appends
// them to dst: w holds len(scales) rows of cols elements (little-endian, dtype dt),
// row i uses scales[i]. Rows are independent, so callers parallelise by handing
// disjoint row ranges (and the matching scales) to separate calls.
//
// Reference loop:
//
//	for i, s := range scales { for c := 0; c < cols; c++ {
//		dst = append(dst, byte(clamp(roundHalfEven(float32(w[i][c]/s)), -128, 127))) } }
func appendInt8Rows(dst []byte, w []byte, dt DType, cols int, scales []float32) ([]byte, error) {
	if !intFloatDType(dt) {
		return dst, fmt.Errorf("%w: int8 quantization of %v", ErrUnsupportedDType, dt)
	}
	es := dt.Size()
	rows := len(scales)
	if cols < 0 || len(w) != rows*cols*es {
		return dst, fmt.Errorf("%w: %d bytes for %d rows of %d %v", ErrShape, len(w), rows, cols, dt)
	}
	start := len(dst)
	dst = growBytes(dst, rows*cols)
	out := dst[start:]
	if dt == BF16 {
		// The common case, fused: widen each bfloat16 and quantize it in one pass.
		for i, s := range scales {
			o := out[i*cols : (i+1)*cols]
			src := w[2*i*cols : 2*(i+1)*cols]
			n := int8RowBF16(o, src, s) // the vector kernel's prefix, if any
			int8RowBF16Go(o[n:], src[2*n:], s)
		}
		return dst, nil
	}
	row := make([]float32, cols)
	wt := Tensor{DType: dt, Data: w}
	for i, s := range scales {
		fqDecode(row, wt, i*cols)
		o := out[i*cols : (i+1)*cols]
		for c, x := range row {
			o[c] = byte(intRound(x/s, -128, 127))
		}
	}
	return dst, nil
}

// int8RowBF16Go is one BF16 row of appendInt8Rows: o[c] = intRound(x[c]/s, -128, 127).
func int8RowBF16Go(o, src []byte, s float32) {
	src = src[:2*len(o)]
	for c := range o {
		x := math.Float32frombits(uint32(src[2*c])<<16 | uint32(src[2*c+1])<<24)
		o[c] = byte(intRound(x/s, -128, 127))
	}
}

// appendInt4RowPairs quantizes pairs of rows of a BF16/F16/F32 weight to int4 and
// appends the packed bytes (one output row of cols bytes per input row pair) to dst.
// w holds rows = len(scales)/scaleCols rows (rows must be even) of cols elements; row
// r, column c uses scales[r*scaleCols + c/(cols/scaleCols)]; cols must be a multiple
// of scaleCols. Callers parallelise over disjoint, even-aligned row ranges.
//
// Reference loop:
//
//	for r := 0; r < rows; r += 2 { for c := 0; c < cols; c++ {
//		lo := clamp(roundHalfEven(float32(w[r][c]/s[r][c/B])), -8, 7)
//		hi := clamp(roundHalfEven(float32(w[r+1][c]/s[r+1][c/B])), -8, 7)
//		dst = append(dst, byte(lo)&0xF | byte(hi)<<4) } }
func appendInt4RowPairs(dst []byte, w []byte, dt DType, cols int, scales []float32, scaleCols int) ([]byte, error) {
	if !intFloatDType(dt) {
		return dst, fmt.Errorf("%w: int4 quantization of %v", ErrUnsupportedDType, dt)
	}
	if scaleCols <= 0 || cols%scaleCols != 0 || len(scales)%scaleCols != 0 {
		return dst, fmt.Errorf("%w: %d columns in %d scale blocks", ErrShape, cols, scaleCols)
	}
	rows := len(scales) / scaleCols
	es := dt.Size()
	if rows%2 != 0 {
		return dst, fmt.Errorf("%w: cannot pack %d rows in pairs", ErrAssertion, rows)
	}
	if len(w) != rows*cols*es {
		return dst, fmt.Errorf("%w: %d bytes for %d rows of %d %v", ErrShape, len(w), rows, cols, dt)
	}
	b := cols / scaleCols
	start := len(dst)
	dst = growBytes(dst, rows/2*cols)
	out := dst[start:]
	if dt == BF16 {
		// The common case, fused: widen both rows' bfloat16s and pack in one pass.
		for p := 0; p < rows/2; p++ {
			src0 := w[2*(2*p)*cols : 2*(2*p+1)*cols]
			src1 := w[2*(2*p+1)*cols : 2*(2*p+2)*cols]
			s0 := scales[(2*p)*scaleCols : (2*p+1)*scaleCols]
			s1 := scales[(2*p+1)*scaleCols : (2*p+2)*scaleCols]
			o := out[p*cols : (p+1)*cols]
			if int4PairsBF16(o, src0, src1, s0, s1, b) {
				continue
			}
			for j := range scaleCols {
				a, c := s0[j], s1[j]
				ob := o[j*b : (j+1)*b]
				x0 := src0[2*j*b : 2*(j+1)*b]
				x1 := src1[2*j*b : 2*(j+1)*b]
				x0, x1 = x0[:2*len(ob)], x1[:2*len(ob)]
				for k := range ob {
					v0 := math.Float32frombits(uint32(x0[2*k])<<16 | uint32(x0[2*k+1])<<24)
					v1 := math.Float32frombits(uint32(x1[2*k])<<16 | uint32(x1[2*k+1])<<24)
					ob[k] = byte(intRound(v0/a, -8, 7))&0xF | byte(intRound(v1/c, -8, 7))<<4
				}
			}
		}
		return dst, nil
	}
	r0 := make([]float32, cols)
	r1 := make([]float32, cols)
	wt := Tensor{DType: dt, Data: w}
	for p := 0; p < rows/2; p++ {
		fqDecode(r0, wt, (2*p)*cols)
		fqDecode(r1, wt, (2*p+1)*cols)
		s0 := scales[(2*p)*scaleCols : (2*p+1)*scaleCols]
		s1 := scales[(2*p+1)*scaleCols : (2*p+2)*scaleCols]
		o := out[p*cols : (p+1)*cols]
		for j := range scaleCols {
			a, c := s0[j], s1[j]
			lo, hi := j*b, (j+1)*b
			x0, x1, ob := r0[lo:hi], r1[lo:hi], o[lo:hi]
			for k := range ob {
				q0 := intRound(x0[k]/a, -8, 7)
				q1 := intRound(x1[k]/c, -8, 7)
				ob[k] = byte(q0)&0xF | byte(q1)<<4
			}
		}
	}
	return dst, nil
}

// intScaleF32 decodes a float scale tensor (any float dtype) to float32.
func intScaleF32(t Tensor, role string) ([]float32, error) {
	v, err := Float32s(t)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", role, err)
	}
	return v, nil
}

// quantizeInt8 is to_quantized_weight for int8_sq / int8_wo:
// (w / s[:, None]).round().clamp(-128, 127).to(int8), with PyTorch broadcasting.
// The usual call is w [O,I] with s [O] (get_weight_scaling_factor's per-channel scale).
func quantizeInt8(w, s Tensor) (Tensor, error) {
	if !intFloatDType(w.DType) {
		return Tensor{}, fmt.Errorf("%w: int8 weight of dtype %v", ErrUnsupportedDType, w.DType)
	}
	if err := w.Check(); err != nil {
		return Tensor{}, fmt.Errorf("weight: %w", err)
	}
	if len(s.Shape) == 0 {
		// s[:, None] on a 0-dim tensor is an IndexError in PyTorch.
		return Tensor{}, fmt.Errorf("%w: int8 scale is 0-dim", ErrShape)
	}
	sv, err := intScaleF32(s, "weights_scaling_factor")
	if err != nil {
		return Tensor{}, err
	}
	if len(w.Shape) == 2 && len(s.Shape) == 1 && s.Shape[0] == w.Shape[0] {
		data, err := appendInt8Rows(make([]byte, 0, w.Numel()), w.Data, w.DType, int(w.Shape[1]), sv)
		if err != nil {
			return Tensor{}, err
		}
		return Tensor{DType: I8, Shape: cloneShape(w.Shape), Data: data}, nil
	}
	sShape := append([]int64{s.Shape[0], 1}, s.Shape[1:]...)
	wv, err := Float32s(w)
	if err != nil {
		return Tensor{}, err
	}
	shape, q, err := intBroadcastDiv(w.Shape, wv, sShape, sv)
	if err != nil {
		return Tensor{}, err
	}
	out := make([]byte, len(q))
	for i, y := range q {
		out[i] = byte(intRound(y, -128, 127))
	}
	return Tensor{DType: I8, Shape: shape, Data: out}, nil
}

// packInt4InUint8 is quant_utils.pack_int4_in_uint8(w, s): w [O,I] or [E,O,I] in
// BF16/F16/F32, s [..., O, I/B] float32 (B = I / s.shape[-1]); the result is U8
// [O/2, I] or [E, O/2, I].
func packInt4InUint8(w, s Tensor) (Tensor, error) {
	if !intFloatDType(w.DType) {
		return Tensor{}, fmt.Errorf("%w: int4 weight of dtype %v", ErrUnsupportedDType, w.DType)
	}
	if err := w.Check(); err != nil {
		return Tensor{}, fmt.Errorf("weight: %w", err)
	}
	if len(w.Shape) < 2 {
		return Tensor{}, fmt.Errorf("%w: int4 weight of shape %v", ErrShape, w.Shape)
	}
	if len(s.Shape) < 2 {
		// s[..., :, idx] needs two dimensions.
		return Tensor{}, fmt.Errorf("%w: int4 scale of shape %v", ErrShape, s.Shape)
	}
	o, in := w.Shape[len(w.Shape)-2], w.Shape[len(w.Shape)-1]
	if o%2 != 0 {
		return Tensor{}, fmt.Errorf("%w: cannot pack weight: out dimension %d is odd", ErrAssertion, o)
	}
	sc := s.Shape[len(s.Shape)-1]
	if sc == 0 || in%sc != 0 {
		// The column index c / (I / sc) runs past sc: an IndexError in PyTorch.
		return Tensor{}, fmt.Errorf("%w: %d input columns do not split into %d scale blocks", ErrShape, in, sc)
	}
	sv, err := intScaleF32(s, "weights_scaling_factor")
	if err != nil {
		return Tensor{}, err
	}
	if (len(w.Shape) == 2 || len(w.Shape) == 3) && slices.Equal(s.Shape[:len(s.Shape)-1], w.Shape[:len(w.Shape)-1]) {
		data, err := appendInt4RowPairs(make([]byte, 0, w.Numel()/2), w.Data, w.DType, int(in), sv, int(sc))
		if err != nil {
			return Tensor{}, err
		}
		shape := cloneShape(w.Shape)
		shape[len(shape)-2] /= 2
		return Tensor{DType: U8, Shape: shape, Data: data}, nil
	}
	// General broadcasting: expand s along the last dim to [..., I], divide, pack.
	b := in / sc
	expShape := cloneShape(s.Shape)
	expShape[len(expShape)-1] = in
	exp := make([]float32, 0, Numel(expShape))
	for i := 0; i < len(sv); i += int(sc) {
		for c := int64(0); c < in; c++ {
			exp = append(exp, sv[i+int(c/b)])
		}
	}
	wv, err := Float32s(w)
	if err != nil {
		return Tensor{}, err
	}
	shape, qf, err := intBroadcastDiv(w.Shape, wv, expShape, exp)
	if err != nil {
		return Tensor{}, err
	}
	if len(shape) != 2 && len(shape) != 3 {
		return Tensor{}, fmt.Errorf("%w: int4 quotient of shape %v", ErrNotImplemented, shape)
	}
	ro, rc := int(shape[len(shape)-2]), int(shape[len(shape)-1])
	if ro%2 != 0 {
		return Tensor{}, fmt.Errorf("%w: cannot pack %d rows in pairs", ErrAssertion, ro)
	}
	out := make([]byte, len(qf)/2)
	for e := 0; e < len(qf)/(ro*rc); e++ {
		base := e * ro * rc
		for p := 0; p < ro/2; p++ {
			for c := 0; c < rc; c++ {
				q0 := intRound(qf[base+(2*p)*rc+c], -8, 7)
				q1 := intRound(qf[base+(2*p+1)*rc+c], -8, 7)
				out[base/2+p*rc+c] = byte(q0)&0xF | byte(q1)<<4
			}
		}
	}
	shape[len(shape)-2] /= 2
	return Tensor{DType: U8, Shape: shape, Data: out}, nil
}

// unpackInt4 reverses the packing of packInt4InUint8 without scaling: U8 [..., O/2, I]
// → I8 [..., O, I] with each nibble sign-extended.
func unpackInt4(p Tensor) (Tensor, error) {
	if p.DType != U8 || len(p.Shape) < 2 {
		return Tensor{}, fmt.Errorf("%w: packed int4 must be U8 with 2+ dims, have %v %v", ErrShape, p.DType, p.Shape)
	}
	if err := p.Check(); err != nil {
		return Tensor{}, err
	}
	half, cols := int(p.Shape[len(p.Shape)-2]), int(p.Shape[len(p.Shape)-1])
	out := make([]byte, 2*len(p.Data))
	for m := 0; m*half*cols < len(p.Data); m++ {
		src := p.Data[m*half*cols : (m+1)*half*cols]
		dst := out[2*m*half*cols : 2*(m+1)*half*cols]
		for r := 0; r < half; r++ {
			for c := 0; c < cols; c++ {
				b := src[r*cols+c]
				dst[(2*r)*cols+c] = byte(int8(b<<4) >> 4)
				dst[(2*r+1)*cols+c] = byte(int8(b) >> 4)
			}
		}
	}
	shape := cloneShape(p.Shape)
	shape[len(shape)-2] *= 2
	return Tensor{DType: I8, Shape: shape, Data: out}, nil
}

// scalingFactorFromWeight is quant_utils.get_scaling_factor_from_weight(w, groupSize): w
// must be 2-D [n,k]; groupSize 0 gives amax(|row|)/127 of shape [n], otherwise
// amax(|group|)/7 of shape [n, k/groupSize]. The division is ÷scalar (mode); zero
// scales become 1.0. The result is float32.
func scalingFactorFromWeight(w Tensor, groupSize int, mode DivMode) (Tensor, error) {
	if len(w.Shape) != 2 {
		return Tensor{}, fmt.Errorf("%w: weight must be 2-D, have %v", ErrShape, w.Shape)
	}
	if !intFloatDType(w.DType) {
		return Tensor{}, fmt.Errorf("%w: weight of dtype %v", ErrUnsupportedDType, w.DType)
	}
	if err := w.Check(); err != nil {
		return Tensor{}, fmt.Errorf("weight: %w", err)
	}
	n, k := int(w.Shape[0]), int(w.Shape[1])
	g, maxbound := k, float32(127)
	shape := []int64{int64(n)}
	if groupSize != 0 {
		if groupSize < 0 || k%groupSize != 0 {
			return Tensor{}, fmt.Errorf("%w: weight shape %v is not divisible for block size %d", ErrNotImplemented, w.Shape, groupSize)
		}
		g, maxbound = groupSize, 7
		shape = []int64{int64(n), int64(k / groupSize)}
	}
	if g == 0 {
		// max over an empty dim is an error in PyTorch.
		return Tensor{}, fmt.Errorf("%w: amax over an empty dimension of %v", ErrShape, w.Shape)
	}
	out := make([]float32, 0, Numel(shape))
	row := make([]float32, k)
	for r := 0; r < n; r++ {
		fqDecode(row, w, r*k)
		for j := 0; j < k; j += g {
			a := absMaxFirstNaN(row[j : j+g])
			s := DivScalar(a, maxbound, mode)
			if s == 0 {
				s = 1
			}
			out = append(out, s)
		}
	}
	return FromFloat32(F32, shape, out)
}

// absMaxFirstNaN is fqAbsMax(0, x), except that when x holds a NaN the result is
// the first NaN with its sign cleared (through float64), as this INT scale path has
// always computed it, rather than fqAbsMax's NaN of largest payload. The two differ
// only in NaN payload bits, and those reach the INT scales.
func absMaxFirstNaN(x []float32) float32 {
	m := fqAbsMax(0, x)
	if m != m {
		for _, v := range x {
			if v != v {
				return float32(math.Abs(float64(v)))
			}
		}
	}
	return m
}

// resmoothAndGetScale is quant_utils.resmooth_and_get_scale: it splits merged [n,k] into
// ranks row chunks, rescales chunk i by pqs[i]/newPQS in the weight dtype (two rounded
// steps, left to right), and returns the concatenated weights, the concatenated
// scalingFactorFromWeight(chunk, groupSize) and the new scale (the mean of pqs in their
// dtype when newPQS is nil). quantization "nvfp4_awq" / "nvfp4_svdquant" fails as
// ModelOpt does (it calls .view on a tuple).
func resmoothAndGetScale(merged Tensor, pqs []Tensor, ranks, groupSize int, newPQS *Tensor, quantization string, mode DivMode) (weights, scales, avg Tensor, err error) {
	if len(merged.Shape) != 2 || !intFloatDType(merged.DType) {
		return weights, scales, avg, fmt.Errorf("%w: merged weights %v %v", ErrShape, merged.DType, merged.Shape)
	}
	if err := merged.Check(); err != nil {
		return weights, scales, avg, fmt.Errorf("merged_weights: %w", err)
	}
	if newPQS != nil {
		avg = *newPQS
	} else {
		if avg, err = intMeanStack(pqs, mode); err != nil {
			return weights, scales, avg, err
		}
	}
	k := merged.Shape[1]
	if len(pqs) == 0 || avg.Numel() != k {
		return weights, scales, avg, fmt.Errorf("%w: shape of pre_quant_scales and weights do not match", ErrAssertion)
	}
	if ranks <= 0 {
		return weights, scales, avg, fmt.Errorf("%w: %d ranks", ErrShape, ranks)
	}
	// torch.chunk: chunks of ceil(n/ranks) rows, the last one shorter; possibly fewer chunks.
	n := merged.Shape[0]
	csize := (n + int64(ranks) - 1) / int64(ranks)
	var chunks [][2]int64
	for r0 := int64(0); r0 < n; r0 += csize {
		chunks = append(chunks, [2]int64{r0, min(r0+csize, n)})
	}
	if len(pqs) > len(chunks) {
		return weights, scales, avg, fmt.Errorf("%w: %d pre_quant_scales for %d weight chunks", ErrShape, len(pqs), len(chunks))
	}
	newv, err := intScaleF32(avg, "new_pre_quant_scale")
	if err != nil {
		return weights, scales, avg, err
	}
	dt := merged.DType
	// .type(w.dtype) rounds the scales to the weight dtype first.
	for i := range newv {
		newv[i] = RoundTo(dt, newv[i])
	}
	es := int64(dt.Size())
	var wout []float32
	var sparts []Tensor
	for i, p := range pqs {
		if p.Numel() != k {
			return weights, scales, avg, fmt.Errorf("%w: pre_quant_scales.%d has shape %v for %d columns", ErrShape, i, p.Shape, k)
		}
		pv, err := intScaleF32(p, fmt.Sprintf("pre_quant_scales.%d", i))
		if err != nil {
			return weights, scales, avg, err
		}
		for j := range pv {
			pv[j] = RoundTo(dt, pv[j])
		}
		c := chunks[i]
		rows := c[1] - c[0]
		chunk := Tensor{DType: dt, Shape: []int64{rows, k}, Data: merged.Data[c[0]*k*es : c[1]*k*es]}
		cv, err := Float32s(chunk)
		if err != nil {
			return weights, scales, avg, err
		}
		for e := range cv {
			j := e % int(k)
			v := RoundTo(dt, cv[e]*pv[j])
			cv[e] = RoundTo(dt, v/newv[j])
		}
		if quantization == "nvfp4_awq" || quantization == "nvfp4_svdquant" {
			return weights, scales, avg, fmt.Errorf("%w: resmooth_and_get_scale for %s calls .view on a tuple in ModelOpt", ErrNotImplemented, quantization)
		}
		ct, err := FromFloat32(dt, chunk.Shape, cv)
		if err != nil {
			return weights, scales, avg, err
		}
		s, err := scalingFactorFromWeight(ct, groupSize, mode)
		if err != nil {
			return weights, scales, avg, err
		}
		wout = append(wout, cv...)
		sparts = append(sparts, s)
	}
	outRows := int64(len(wout)) / k
	if weights, err = FromFloat32(dt, []int64{outRows, k}, wout); err != nil {
		return weights, scales, avg, err
	}
	scales = intConcat0(sparts)
	return weights, scales, avg, nil
}

// intMeanStack is torch.stack(ts).mean(dim=0): BF16/F16 are summed in float32, divided
// in float32 and rounded once to their dtype; F32 sums and divides in float32. The sum
// runs over the stacked tensors in order. The division by the count is ÷scalar: PyTorch
// on CPU divides, its CUDA mean multiplies by float32(1/n).
func intMeanStack(ts []Tensor, mode DivMode) (Tensor, error) {
	if len(ts) == 0 {
		return Tensor{}, fmt.Errorf("%w: no pre_quant_scales", ErrAssertion)
	}
	var acc []float32
	for i, t := range ts {
		if t.DType != ts[0].DType || !slices.Equal(t.Shape, ts[0].Shape) {
			return Tensor{}, fmt.Errorf("%w: pre_quant_scales.%d is %v %v, want %v %v", ErrShape, i, t.DType, t.Shape, ts[0].DType, ts[0].Shape)
		}
		v, err := intScaleF32(t, fmt.Sprintf("pre_quant_scales.%d", i))
		if err != nil {
			return Tensor{}, err
		}
		if acc == nil {
			acc = v
			continue
		}
		for j := range acc {
			acc[j] = acc[j] + v[j]
		}
	}
	n := float32(len(ts))
	for j := range acc {
		acc[j] = DivScalar(acc[j], n, mode)
	}
	return FromFloat32(ts[0].DType, ts[0].Shape, acc)
}

// intConcat0 concatenates tensors of one dtype along dim 0.
func intConcat0(ts []Tensor) Tensor {
	shape := cloneShape(ts[0].Shape)
	var data []byte
	shape[0] = 0
	for _, t := range ts {
		shape[0] += t.Shape[0]
		data = append(data, t.Data...)
	}
	return Tensor{DType: ts[0].DType, Shape: shape, Data: data}
}

// maybeTransposeExpertWeightDimensions is maybe_transpose_expert_weight_dimensions:
// with isBMM and a 3-D w, it swaps the last two dims of w and of s (when s is not
// nil; s must then be 3-D); otherwise it returns its inputs themselves (sharing their
// Data, as ModelOpt returns the same tensors). Transposed results are new contiguous
// tensors; the transpose is its own inverse.
func maybeTransposeExpertWeightDimensions(w Tensor, s *Tensor, isBMM bool) (Tensor, *Tensor, error) {
	if !isBMM || len(w.Shape) != 3 {
		return w, s, nil
	}
	tw, err := TransposeLast2(w)
	if err != nil {
		return Tensor{}, nil, fmt.Errorf("weight: %w", err)
	}
	if s == nil {
		return tw, nil, nil
	}
	ts, err := TransposeLast2(*s)
	if err != nil {
		return Tensor{}, nil, fmt.Errorf("weight_scale: %w", err)
	}
	return tw, &ts, nil
}

// TransposeLast2 returns a contiguous copy of t with its last two dimensions swapped
// (t.transpose(-2, -1).contiguous()). t needs 2+ dims and a whole-byte dtype.
func TransposeLast2(t Tensor) (Tensor, error) {
	if len(t.Shape) < 2 {
		return Tensor{}, fmt.Errorf("%w: cannot transpose shape %v", ErrShape, t.Shape)
	}
	es := t.DType.Size()
	if es == 0 {
		return Tensor{}, fmt.Errorf("%w: cannot transpose sub-byte %v", ErrUnsupportedDType, t.DType)
	}
	if err := t.Check(); err != nil {
		return Tensor{}, err
	}
	r, c := int(t.Shape[len(t.Shape)-2]), int(t.Shape[len(t.Shape)-1])
	out := make([]byte, len(t.Data))
	mat := r * c * es
	for m := 0; m*mat < len(t.Data); m++ {
		src, dst := t.Data[m*mat:(m+1)*mat], out[m*mat:(m+1)*mat]
		for i := 0; i < r; i++ {
			for j := 0; j < c; j++ {
				copy(dst[(j*r+i)*es:(j*r+i+1)*es], src[(i*c+j)*es:(i*c+j+1)*es])
			}
		}
	}
	shape := cloneShape(t.Shape)
	shape[len(shape)-2], shape[len(shape)-1] = shape[len(shape)-1], shape[len(shape)-2]
	return Tensor{DType: t.DType, Shape: shape, Data: out}, nil
}

func cloneShape(s []int64) []int64 { return append(make([]int64, 0, len(s)), s...) }

// intBroadcastShape is PyTorch's broadcast of two shapes (right-aligned).
func intBroadcastShape(a, b []int64) ([]int64, bool) {
	n := max(len(a), len(b))
	out := make([]int64, n)
	for i := 1; i <= n; i++ {
		x, y := int64(1), int64(1)
		if i <= len(a) {
			x = a[len(a)-i]
		}
		if i <= len(b) {
			y = b[len(b)-i]
		}
		switch {
		case x == y || y == 1:
			out[n-i] = x
		case x == 1:
			out[n-i] = y
		default:
			return nil, false
		}
	}
	return out, true
}

// intBroadcastStrides are the element strides of a contiguous tensor of shape s viewed
// in the broadcast shape out (0 along broadcast dims).
func intBroadcastStrides(s, out []int64) []int64 {
	st := make([]int64, len(out))
	acc := int64(1)
	for i := 1; i <= len(s); i++ {
		d := s[len(s)-i]
		if d != 1 {
			st[len(out)-i] = acc
		}
		acc *= d
	}
	return st
}

// intBroadcastApply calls f(i, ia, ib) for every element i of the broadcast shape with
// the flat indices into a and b.
func intBroadcastApply(aShape, bShape []int64, f func(i, ia, ib int)) ([]int64, error) {
	out, ok := intBroadcastShape(aShape, bShape)
	if !ok {
		return nil, fmt.Errorf("%w: shapes %v and %v do not broadcast", ErrShape, aShape, bShape)
	}
	sa, sb := intBroadcastStrides(aShape, out), intBroadcastStrides(bShape, out)
	n := int(Numel(out))
	idx := make([]int64, len(out))
	ia, ib := int64(0), int64(0)
	for i := 0; i < n; i++ {
		f(i, int(ia), int(ib))
		for d := len(out) - 1; d >= 0; d-- {
			idx[d]++
			ia += sa[d]
			ib += sb[d]
			if idx[d] < out[d] {
				break
			}
			ia -= sa[d] * out[d]
			ib -= sb[d] * out[d]
			idx[d] = 0
		}
	}
	return out, nil
}

// intBroadcastDiv is a / b elementwise in float32 with broadcasting.
func intBroadcastDiv(aShape []int64, a []float32, bShape []int64, b []float32) ([]int64, []float32, error) {
	out, ok := intBroadcastShape(aShape, bShape)
	if !ok {
		return nil, nil, fmt.Errorf("%w: shapes %v and %v do not broadcast", ErrShape, aShape, bShape)
	}
	q := make([]float32, Numel(out))
	_, err := intBroadcastApply(aShape, bShape, func(i, ia, ib int) { q[i] = a[ia] / b[ib] })
	return out, q, err
}
