package quant

import (
	"fmt"
	"math"
	"slices"
)

// MX formats (MXFP4QTensor, MXFP8QTensor in modelopt.torch.quantization.qtensor): one E8M0 power-of-two scale per block of 32.

// mxExp2 is torch.exp2 of an integer-valued float32 exponent: exact, including the
// float32 subnormals down to 2^-149 and +Inf from 2^128 up.
func mxExp2(e float32) float32 {
	switch {
	case e != e:
		return e
	case e > 1000:
		return float32(math.Inf(1))
	case e < -1000:
		return 0
	}
	return float32(math.Ldexp(1, int(e)))
}

// MXFP4BlockExponent is MXFP4QTensor's block exponent: ceil(max(log2(amax ÷scalar 6),
// −127)) with the log rounded to float32 first. amax 0 gives −127; NaN stays NaN.
func MXFP4BlockExponent(amax float32, mode DivMode) float32 {
	d := DivScalar(amax, E2M1Max, mode)
	if d != d {
		return d
	}
	if d == 0 {
		return -127
	}
	// ceil(max(l, −127)) = max(ceil(l), −127) because −127 is an integer.
	return max(ceilLog2F32(d), -127)
}

// AppendMXFP4Blocks quantizes blocks [b0, b1) of the flattened tensor w (block
// elements each, MXFP4QTensor.quantize): it appends (b1−b0)·block/2 packed bytes
// to dst and one E8M0 scale per block to scales. Every block is independent, so
// callers may split the block range freely. block must be even.
//
// Reference loop: e = MXFP4BlockExponent(max|x|); y = x / 2^e; nib = F32ToE2M1Down(y);
// byte j = nib[2j] | nib[2j+1]<<4; scale = E8M0FromExponent(e).
func AppendMXFP4Blocks(dst, scales []byte, w Tensor, block, b0, b1 int, mode DivMode) ([]byte, []byte, error) {
	if err := fqCheckWeight(w, "weight"); err != nil {
		return dst, scales, err
	}
	numel := int(w.Numel())
	if block < 2 || block%2 != 0 || numel%block != 0 {
		return dst, scales, fmt.Errorf("%w: MXFP4 blocks of %d over %d elements", ErrShape, block, numel)
	}
	if b0 < 0 || b1 > numel/block || b0 > b1 {
		return dst, scales, fmt.Errorf("%w: blocks [%d,%d) of %d", ErrShape, b0, b1, numel/block)
	}
	half := block / 2
	dst = growBytes(dst, (b1-b0)*half)
	out := dst[len(dst)-(b1-b0)*half:]
	if w.DType == BF16 && kernels != kernelPortable {
		scales = growBytes(scales, b1-b0)
		if mxfp4BlocksBF16(out, scales[len(scales)-(b1-b0):], w.Data[2*b0*block:2*b1*block], block, mode) {
			return dst, scales, nil
		}
		scales = scales[:len(scales)-(b1-b0)]
	}
	x := make([]float32, block)
	for b := b0; b < b1; b++ {
		fqDecode(x, w, b*block)
		e := MXFP4BlockExponent(fqAbsMax(0, x), mode)
		// x / 2^e equals x · 2^-e exactly: 2^-e is a float32 for e in [−127, 149]
		// and both round the same real number (overflow and subnormals included).
		// A NaN e keeps the division by NaN (every quotient is NaN).
		f := mxExp2(-e)
		if e != e {
			f = e
		}
		o := out[(b-b0)*half : (b-b0+1)*half]
		for j := range o {
			lo := e2m1MXTable[e2m1Index(math.Float32bits(x[2*j]*f))]
			hi := e2m1MXTable[e2m1Index(math.Float32bits(x[2*j+1]*f))]
			o[j] = lo | hi<<4
		}
		scales = append(scales, E8M0FromExponent(e))
	}
	return dst, scales, nil
}

// mxfp4Quantize is MXFP4QTensor.quantize(w, block): packed U8 with the last
// dimension halved and E8M0 scales of shape (numel/block, 1).
func mxfp4Quantize(w Tensor, block int, mode DivMode) (packed, scales Tensor, err error) {
	if err := fqCheckWeight(w, "weight"); err != nil {
		return Tensor{}, Tensor{}, err
	}
	if len(w.Shape) == 0 || w.Shape[len(w.Shape)-1]%2 != 0 {
		return Tensor{}, Tensor{}, fmt.Errorf("%w: MXFP4 packs pairs along the last dimension of %v", ErrShape, w.Shape)
	}
	if block < 1 {
		return Tensor{}, Tensor{}, fmt.Errorf("%w: MXFP4 block size %d", ErrShape, block)
	}
	nblk := int(w.Numel()) / block
	data, sc, err := AppendMXFP4Blocks(make([]byte, 0, int(w.Numel())/2), make([]byte, 0, nblk), w, block, 0, nblk, mode)
	if err != nil {
		return Tensor{}, Tensor{}, err
	}
	shape := append([]int64(nil), w.Shape...)
	shape[len(shape)-1] /= 2
	return Tensor{DType: U8, Shape: shape, Data: data}, Tensor{DType: U8, Shape: []int64{int64(nblk), 1}, Data: sc}, nil
}

// mxfp4Dequantize is MXFP4QTensor.dequantize(dtype, scale, block_sizes={-1: block}):
// ±magnitude (a zero with the sign bit is −0) times 2^(scale−127) in float32, cast
// to dtype. packed has the original shape with the last dimension halved.
func mxfp4Dequantize(packed, scales Tensor, block int, dtype DType) (Tensor, error) {
	if err := packed.Check(); err != nil {
		return Tensor{}, fmt.Errorf("quantized: %w", err)
	}
	if err := scales.Check(); err != nil {
		return Tensor{}, fmt.Errorf("scale: %w", err)
	}
	if packed.DType != U8 || scales.DType != U8 || len(packed.Shape) == 0 || !fqIsFloat(dtype) {
		return Tensor{}, fmt.Errorf("%w: MXFP4 dequantize %v with %v scales to %v", ErrUnsupportedDType, packed.DType, scales.DType, dtype)
	}
	n := 2 * len(packed.Data)
	if block < 1 || n%block != 0 || len(scales.Data) != n/block {
		return Tensor{}, fmt.Errorf("%w: %d MXFP4 elements, %d scales, block %d", ErrShape, n, len(scales.Data), block)
	}
	out := make([]float32, n)
	for i := range out {
		b := packed.Data[i/2]
		if i%2 == 1 {
			b >>= 4
		}
		out[i] = e2m1SignedMX(b&0xF) * mxExp2(float32(scales.Data[i/block])-E8M0Bias)
	}
	shape := append([]int64(nil), packed.Shape...)
	shape[len(shape)-1] *= 2
	return FromFloat32(dtype, shape, out)
}

// MXFP8BlockExponent is MXFP8QTensor._compute_e8m0_exponent for one block:
// descale = amax ÷scalar 448; ceil(log2(descale)) (log rounded to float32) when
// descale > 0, else −127 (NaN included); clamped to [−127, 127].
func MXFP8BlockExponent(amax float32, mode DivMode) float32 {
	d := DivScalar(amax, E4M3Max, mode)
	e := float32(-127)
	if d > 0 {
		e = ceilLog2F32(d)
	}
	return fqClamp(e, -127, 127)
}

// mxfp8Block is MXFP8's fixed block size.
const mxfp8Block = 32

// appendMXFP8Scales appends the E8M0 scales of rows [r0, r1) of w
// (MXFP8QTensor.get_weights_scaling_factor): one per 32 elements of the last
// dimension, which must be a multiple of 32.
func appendMXFP8Scales(dst []byte, w Tensor, r0, r1 int, mode DivMode) ([]byte, error) {
	rows, cols, err := mxfp8Layout(w)
	if err != nil {
		return dst, err
	}
	if r0 < 0 || r1 > rows || r0 > r1 {
		return dst, fmt.Errorf("%w: rows [%d,%d) of %d", ErrShape, r0, r1, rows)
	}
	row := make([]float32, cols)
	for r := r0; r < r1; r++ {
		fqDecode(row, w, r*cols)
		for c := 0; c < cols; c += mxfp8Block {
			dst = append(dst, E8M0FromExponent(MXFP8BlockExponent(fqAbsMax(0, row[c:c+mxfp8Block]), mode)))
		}
	}
	return dst, nil
}

// mxfp8PaddedLayout is the layout MXFP8QTensor.quantize/dequantize accept: any
// last dimension, zero-padded to whole blocks of 32 (nb blocks per row).
func mxfp8PaddedLayout(w Tensor) (rows, cols, nb int, err error) {
	if err := fqCheckWeight(w, "weight"); err != nil {
		return 0, 0, 0, err
	}
	if len(w.Shape) == 0 {
		return 0, 0, 0, fmt.Errorf("%w: MXFP8 of a 0-dim tensor", ErrShape)
	}
	rows, cols = fqRowsCols(w.Shape)
	return rows, cols, (cols + mxfp8Block - 1) / mxfp8Block, nil
}

// mxfp8EncodeRow encodes one zero-padded row (nb·32 values) into cols codes.
func mxfp8EncodeRow(o []byte, row []float32, scales []byte) {
	var tail [mxfp8Block]byte
	for b, u := range scales {
		x := row[b*mxfp8Block : (b+1)*mxfp8Block]
		if (b+1)*mxfp8Block <= len(o) {
			mxfp8Block32(o[b*mxfp8Block:(b+1)*mxfp8Block], x, u)
			continue
		}
		mxfp8Block32(tail[:], x, u) // the padded block is cropped, as ModelOpt does
		copy(o[b*mxfp8Block:], tail[:])
	}
}

func mxfp8Layout(w Tensor) (rows, cols int, err error) {
	if err := fqCheckWeight(w, "weight"); err != nil {
		return 0, 0, err
	}
	if len(w.Shape) == 0 {
		return 0, 0, fmt.Errorf("%w: MXFP8 of a 0-dim tensor", ErrShape)
	}
	rows, cols = fqRowsCols(w.Shape)
	if cols%mxfp8Block != 0 {
		return 0, 0, fmt.Errorf("%w: MXFP8 last dimension %d is not a multiple of %d", ErrShape, cols, mxfp8Block)
	}
	return rows, cols, nil
}

// appendMXFP8Rows appends the E4M3 codes of rows [r0, r1) of w given the E8M0 scales
// of all rows (MXFP8QTensor.quantize_with_scale): fp8(clamp(f32(x·2^(127−u)), ±448)).
// A last dimension that is not a multiple of 32 is zero-padded and the codes
// cropped, as MXFP8QTensor.quantize does; scales then has ceil(cols/32) per row.
//
// Reference loop: dst[i] = F32ToE4M3(clamp(w[i] * 2^(127-scales[i/32]), -448, 448)).
func appendMXFP8Rows(dst []byte, w Tensor, scales []byte, r0, r1 int) ([]byte, error) {
	rows, cols, nb, err := mxfp8PaddedLayout(w)
	if err != nil {
		return dst, err
	}
	if len(scales) != rows*nb {
		return dst, fmt.Errorf("%w: %d MXFP8 scales for %d rows of %d blocks", ErrShape, len(scales), rows, nb)
	}
	if r0 < 0 || r1 > rows || r0 > r1 {
		return dst, fmt.Errorf("%w: rows [%d,%d) of %d", ErrShape, r0, r1, rows)
	}
	dst = growBytes(dst, (r1-r0)*cols)
	out := dst[len(dst)-(r1-r0)*cols:]
	if w.DType == BF16 && cols == nb*mxfp8Block && kernels != kernelPortable &&
		mxfp8BF16(out, scales[r0*nb:r1*nb], w.Data[2*r0*cols:2*r1*cols], DivIEEE, false) {
		return dst, nil
	}
	row := make([]float32, nb*mxfp8Block)
	for r := r0; r < r1; r++ {
		fqDecode(row[:cols], w, r*cols)
		mxfp8EncodeRow(out[(r-r0)*cols:(r-r0+1)*cols], row, scales[r*nb:(r+1)*nb])
	}
	return dst, nil
}

// mxfp8Block32 encodes one block given its E8M0 scale u.
func mxfp8Block32(o []byte, x []float32, u uint8) {
	f := mxExp2(E8M0Bias - float32(u))
	o = o[:len(x)]
	for i, v := range x {
		o[i] = f32ToE4M3Fast(fqClamp(v*f, -E4M3Max, E4M3Max))
	}
}

// appendMXFP8QuantizeRows computes the E8M0 scales of rows [r0, r1) and encodes
// them in one pass (MXFP8QTensor.quantize without a scale): codes go to dst, scales
// to scales. Equal to appendMXFP8Scales followed by appendMXFP8Rows; a last
// dimension that is not a multiple of 32 is zero-padded for the scales and the
// codes cropped.
func appendMXFP8QuantizeRows(dst, scales []byte, w Tensor, r0, r1 int, mode DivMode) ([]byte, []byte, error) {
	rows, cols, nb, err := mxfp8PaddedLayout(w)
	if err != nil {
		return dst, scales, err
	}
	if r0 < 0 || r1 > rows || r0 > r1 {
		return dst, scales, fmt.Errorf("%w: rows [%d,%d) of %d", ErrShape, r0, r1, rows)
	}
	dst = growBytes(dst, (r1-r0)*cols)
	out := dst[len(dst)-(r1-r0)*cols:]
	if w.DType == BF16 && cols == nb*mxfp8Block && kernels != kernelPortable {
		k := (r1 - r0) * nb
		scales = growBytes(scales, k)
		if mxfp8BF16(out, scales[len(scales)-k:], w.Data[2*r0*cols:2*r1*cols], mode, true) {
			return dst, scales, nil
		}
		scales = scales[:len(scales)-k]
	}
	row := make([]float32, nb*mxfp8Block)
	for r := r0; r < r1; r++ {
		fqDecode(row[:cols], w, r*cols)
		first := len(scales)
		for b := range nb {
			scales = append(scales, E8M0FromExponent(MXFP8BlockExponent(fqAbsMax(0, row[b*mxfp8Block:(b+1)*mxfp8Block]), mode)))
		}
		mxfp8EncodeRow(out[(r-r0)*cols:(r-r0+1)*cols], row, scales[first:])
	}
	return dst, scales, nil
}

// mxfp8Quantize is MXFP8QTensor.quantize(w, scales): a nil scales is computed from
// w. The last dimension is zero-padded to whole blocks of 32 and the codes cropped,
// so scales have ceil(I/32) blocks per row.
func mxfp8Quantize(w Tensor, scales *Tensor, mode DivMode) (q, s Tensor, err error) {
	rows, cols, nb, err := mxfp8PaddedLayout(w)
	if err != nil {
		return Tensor{}, Tensor{}, err
	}
	sshape := append([]int64(nil), w.Shape...)
	sshape[len(sshape)-1] = int64(nb)
	var data []byte
	if scales == nil {
		var sc []byte
		data, sc, err = appendMXFP8QuantizeRows(make([]byte, 0, rows*cols), make([]byte, 0, rows*nb), w, 0, rows, mode)
		if err != nil {
			return Tensor{}, Tensor{}, err
		}
		s = Tensor{DType: U8, Shape: sshape, Data: sc}
	} else {
		s = *scales
		if err := s.Check(); err != nil {
			return Tensor{}, Tensor{}, fmt.Errorf("weights_scaling_factor: %w", err)
		}
		if s.DType != U8 {
			return Tensor{}, Tensor{}, fmt.Errorf("%w: MXFP8 scale is %v, want U8 (E8M0)", ErrUnsupportedDType, s.DType)
		}
		if !slices.Equal(s.Shape, sshape) && !(len(s.Shape) == 1 && len(w.Shape) == 1) {
			return Tensor{}, Tensor{}, fmt.Errorf("%w: MXFP8 scale %v for weight %v", ErrShape, s.Shape, w.Shape)
		}
		if data, err = appendMXFP8Rows(make([]byte, 0, rows*cols), w, s.Data, 0, rows); err != nil {
			return Tensor{}, Tensor{}, err
		}
	}
	return Tensor{DType: F8E4M3, Shape: append([]int64(nil), w.Shape...), Data: data}, s, nil
}

// mxfp8Dequantize is MXFP8QTensor.dequantize(dtype, scale): code · 2^(u−127) in
// float32, cast to dtype; scales have ceil(I/32) blocks per row.
func mxfp8Dequantize(q, scales Tensor, dtype DType) (Tensor, error) {
	if err := q.Check(); err != nil {
		return Tensor{}, fmt.Errorf("quantized: %w", err)
	}
	if err := scales.Check(); err != nil {
		return Tensor{}, fmt.Errorf("scale: %w", err)
	}
	if q.DType != F8E4M3 || scales.DType != U8 || !fqIsFloat(dtype) || len(q.Shape) == 0 {
		return Tensor{}, fmt.Errorf("%w: MXFP8 dequantize %v with %v scales to %v", ErrUnsupportedDType, q.DType, scales.DType, dtype)
	}
	rows, cols := fqRowsCols(q.Shape)
	nb := (cols + mxfp8Block - 1) / mxfp8Block
	if len(scales.Data) != rows*nb {
		return Tensor{}, fmt.Errorf("%w: MXFP8 scale %v for %v", ErrShape, scales.Shape, q.Shape)
	}
	out := make([]float32, rows*cols)
	for i := range out {
		r, c := i/cols, i%cols
		out[i] = E4M3ToF32(q.Data[i]) * mxExp2(float32(scales.Data[r*nb+c/mxfp8Block])-E8M0Bias)
	}
	return FromFloat32(dtype, q.Shape, out)
}
