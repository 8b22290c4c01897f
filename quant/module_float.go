package quant

import "fmt"

// Adapters from the module layer to the NVFP4 / MX scale math of nvfp4.go and mx.go.

// nvfp4ScaleFromQuantizer is NVFP4QTensor.get_weights_scaling_factor_from_quantizer(wq,
// w, scale2)[0]: the E4M3 per-block scales [..., I/B], from the static per-block amax
// when the quantizer has a global amax, else from w's blocks.
func nvfp4ScaleFromQuantizer(m *Module, scale2 Tensor, w Tensor, mode DivMode) (*Tensor, error) {
	return nil, fmt.Errorf("%w: NVFP4 per-block scales", ErrNotImplemented)
}

// mxfp4WeightScale is MXFP4QTensor.quantize(w, block)[1] reshaped to (*w.shape[:-1], -1).
func mxfp4WeightScale(w Tensor, block int, mode DivMode) (*Tensor, error) {
	return nil, fmt.Errorf("%w: MXFP4 scales", ErrNotImplemented)
}

// mxfp8WeightScale is MXFP8QTensor.get_weights_scaling_factor_from_quantizer(w, wq):
// the quantizer's _scale buffer when present, else the E8M0 scales of w.
func mxfp8WeightScale(w Tensor, scaleBuf *Tensor, mode DivMode) (*Tensor, error) {
	return nil, fmt.Errorf("%w: MXFP8 scales", ErrNotImplemented)
}
