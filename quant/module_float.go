package quant

import (
	"fmt"
	"slices"
)

// Adapters from the module layer to the NVFP4 / MX scale math of nvfp4.go and mx.go.

// nvfp4ScaleFromQuantizer is NVFP4QTensor.get_weights_scaling_factor_from_quantizer(wq,
// w, scale2)[0]: the E4M3 per-block scales [..., I/B]. A quantizer with a global amax
// (static NVFP4) derives them from its per-block amax; otherwise they come from w's
// blocks and scale2 (get_weights_scaling_factor, which asserts B | I).
func nvfp4ScaleFromQuantizer(m *Module, scale2 Tensor, w Tensor, mode DivMode) (*Tensor, error) {
	wq := m.WeightQuantizer
	block, ok := bsLast(wq.BlockSizes)
	if !ok {
		return nil, fmt.Errorf("%w: %s: block_sizes has no -1", ErrNotImplemented, m.Name)
	}
	if len(w.Shape) == 0 || block <= 0 {
		return nil, fmt.Errorf("%w: %s: block size %d for weight %v", ErrAssertion, m.Name, block, w.Shape)
	}
	in := w.Shape[len(w.Shape)-1]
	shape := cloneShape(w.Shape)
	shape[len(shape)-1] = in / int64(block)
	rows := int(w.Numel() / max(in, 1))
	if m.GlobalAmax != nil {
		// Static path: per-block amax / 6, normalised by global_amax / 6.
		if m.WeightAmax == nil {
			return nil, fmt.Errorf("%w: %s: static NVFP4 quantizer without _amax", ErrAssertion, m.Name)
		}
		ga, err := Scalar(*m.GlobalAmax)
		if err != nil {
			return nil, fmt.Errorf("%s: global amax: %w", m.Name, err)
		}
		amax, err := Float32s(*m.WeightAmax)
		if err != nil {
			return nil, fmt.Errorf("%s: amax: %w", m.Name, err)
		}
		if int64(len(amax)) != Numel(shape) {
			// per_block_scale.view(expected_shape) fails.
			return nil, fmt.Errorf("%w: %s: %d block amaxes for weight %v with block %d", ErrShape, m.Name, len(amax), w.Shape, block)
		}
		codes := nvfp4StaticBlockScales(make([]byte, 0, len(amax)), amax, ga, fp8MaxForNormalization(wq), mode)
		return &Tensor{DType: F8E4M3, Shape: shape, Data: codes}, nil
	}
	if in%int64(block) != 0 {
		return nil, fmt.Errorf("%w: %s: weight shape %v is not divisible for block size %d", ErrAssertion, m.Name, w.Shape, block)
	}
	s2, err := Float32s(scale2)
	if err != nil {
		return nil, fmt.Errorf("%s: weight_scale_2: %w", m.Name, err)
	}
	n := NVFP4{Block: block, Scale2: s2}
	codes, err := n.AppendBlockScales(make([]byte, 0, Numel(shape)), w, 0, rows)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", m.Name, err)
	}
	return &Tensor{DType: F8E4M3, Shape: shape, Data: codes}, nil
}

// mxfp4WeightScale is MXFP4QTensor.quantize(w, block)[1] reshaped to (*w.shape[:-1], -1).
func mxfp4WeightScale(w Tensor, block int, mode DivMode) (*Tensor, error) {
	_, s, err := mxfp4Quantize(w, block, mode)
	if err != nil {
		return nil, err
	}
	if len(w.Shape) == 0 {
		return nil, fmt.Errorf("%w: MXFP4 scale of a 0-dim weight", ErrShape)
	}
	shape, err := resolveShape(append(cloneShape(w.Shape[:len(w.Shape)-1]), -1), s.Numel())
	if err != nil {
		return nil, err
	}
	s.Shape = shape
	return &s, nil
}

// mxfp8WeightScale is MXFP8QTensor.get_weights_scaling_factor_from_quantizer(w, wq):
// the quantizer's _scale buffer when present (it must be U8 of shape
// (*w.shape[:-1], I/32)), else the E8M0 scales of w.
func mxfp8WeightScale(w Tensor, scaleBuf *Tensor, mode DivMode) (*Tensor, error) {
	if len(w.Shape) < 2 {
		return nil, fmt.Errorf("%w: MXFP8 weight must be at least 2-D, got %v", ErrAssertion, w.Shape)
	}
	want := cloneShape(w.Shape)
	want[len(want)-1] /= mxfp8Block
	if scaleBuf != nil {
		if scaleBuf.DType != U8 || !slices.Equal(scaleBuf.Shape, want) {
			return nil, fmt.Errorf("%w: MXFP8 _scale is %v %v, want U8 %v", ErrAssertion, scaleBuf.DType, scaleBuf.Shape, want)
		}
		return cloneTensor(scaleBuf), nil
	}
	_, s, err := mxfp8Quantize(w, nil, mode)
	if err != nil {
		return nil, err
	}
	return &s, nil
}
