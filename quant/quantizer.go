package quant

// NumBits is a quantizer's element format: an integer width (E == 0, M == bits)
// or a float format (E exponent bits, M mantissa bits): {4,3} = E4M3, {2,1} = E2M1,
// {8,0} = E8M0. This mirrors ModelOpt's `num_bits`, which is an int or a 2-tuple.
type NumBits struct {
	E, M int
}

// Int returns the integer width and true when n is an integer format.
func (n NumBits) Int() (int, bool) { return n.M, n.E == 0 }

var (
	BitsE4M3 = NumBits{4, 3}
	BitsE2M1 = NumBits{2, 1}
	BitsE8M0 = NumBits{8, 0}
	BitsInt8 = NumBits{0, 8}
	BitsInt4 = NumBits{0, 4}
)

// BlockSizes mirrors ModelOpt's `_block_sizes` dict. Dims maps an axis (-1, -2, ...)
// to its block size; a nil *BlockSizes means no block quantization.
type BlockSizes struct {
	Dims        map[int]int // axis -> block size (0 means None in ModelOpt)
	Type        string      // "static", "dynamic" or "" (missing: static)
	ScaleBits   *NumBits    // nil when absent
	FourOverSix bool
}

// Last is block_sizes[-1] (0 when absent).
func (b *BlockSizes) Last() int {
	if b == nil {
		return 0
	}
	return b.Dims[-1]
}

// Dynamic reports type == "dynamic".
func (b *BlockSizes) Dynamic() bool { return b != nil && b.Type == "dynamic" }

// Quantizer is the attribute set of one ModelOpt TensorQuantizer: what is not in the
// safetensors buffers. The fields follow quantizers.json of the golden set and the
// quantizer_state of modelopt_state.pth.
type Quantizer struct {
	Class       string // "TensorQuantizer", "NVFP4StaticQuantizer", "SequentialQuantizer", ...
	Enabled     bool
	NumBits     NumBits
	Axis        []int // nil: None; one element for an int axis; AxisTuple marks a tuple
	AxisTuple   bool  // the axis was a tuple, e.g. (0,), which ModelOpt does not treat as int 0
	BlockSizes  *BlockSizes
	Unsigned    bool
	NarrowRange bool
	FakeQuant   bool
	Dynamic     bool         // top-level type == "dynamic"
	AmaxShape   []int64      // _amax_shape_for_export, nil when unset (-1 allowed)
	MaxBound    *float64     // as reported, nil when not defined
	Sequential  []*Quantizer // for a SequentialQuantizer (W4A8): the chained quantizers
	// UseConstantAmax is use_constant_amax (the KV-cache cast modes): the fake-quant
	// amax is the E4M3 maximum, no _amax buffer exists and calibration skips it.
	// ConstantAmax is constant_amax: an _amax fixed when the quantizer is configured
	// (a float32 scalar), exported like a calibrated one; nil when unset.
	UseConstantAmax bool
	ConstantAmax    *float64

	// What the calibration state says about the quantizer's buffers, for checking
	// the checkpoint against it; only a planner reads them. HasBufferShape: the
	// state records an "_amax" buffer, of shape BufferShape (quantizers.json's
	// amax_shape, non-null; modelopt_state's _pytorch_state_metadata). A state that
	// does not say (a recipe applied data-free) leaves them zero.
	BufferShape      []int64
	HasBufferShape   bool
	HasPreQuantScale bool // the state records a "_pre_quant_scale" buffer
}
