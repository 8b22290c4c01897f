package quant

// DivMode selects how a tensor is divided by a Python scalar constant: PyTorch on CPU
// divides (IEEE), on CUDA it multiplies by the float32 reciprocal (ATen's
// div_true_kernel_cuda turns division by a CPU scalar into a multiplication).
// The two differ in the last bit for a large share of inputs, so checkpoints exported
// on GPUs need DivCUDA to be reproduced.
type DivMode uint8

const (
	DivIEEE DivMode = iota // true float32 division: PyTorch on CPU (the golden sets)
	DivCUDA                // a * float32(1/d): PyTorch on CUDA
)

// DivScalar computes float32 a ÷ d as PyTorch does for a float32 tensor divided by a
// Python scalar on the device that mode names.
func DivScalar(a, d float32, mode DivMode) float32 {
	if mode == DivCUDA {
		r := float32(1) / d
		return a * r
	}
	return a / d
}

// String names the mode as the CLI flag spells it.
func (m DivMode) String() string {
	if m == DivCUDA {
		return "cuda"
	}
	return "ieee"
}
