package quant

import (
	"errors"
	"fmt"
	"math"
	"strings"
)

// Errors of the quantizer/module layer. Each names a condition a caller can act on;
// the functions wrap them with the module or tensor they concern.
var (
	// ErrNotImplemented marks a ModelOpt code path that raises NotImplementedError
	// (an unsupported quantizer) or one this package does not reproduce.
	ErrNotImplemented = errors.New("quant: not implemented")
	// ErrAssertion marks a case where ModelOpt fails an assert (e.g. a scale <= 0,
	// an odd number of rows to pack, a block size that does not divide the input dim).
	ErrAssertion = errors.New("quant: assertion failed")
	// ErrNoMaxBound is returned by MaxBound users for a quantizer that has none (MXFP4).
	ErrNoMaxBound = errors.New("quant: quantizer has no maxbound")
	// ErrShape is returned for a tensor whose shape does not fit the operation.
	ErrShape = errors.New("quant: shape mismatch")
)

// Module is the export-relevant state of one quantized linear (or one expert
// projection): its weight, its quantizers' attributes and their buffers. It mirrors
// a ModelOpt QuantLinear after calibration. All tensors are borrowed: functions of
// this package read them and never write to them; results are new tensors.
type Module struct {
	Name string
	// Class is the module's Python class name ("QuantLinear", "_QuantGptOssExperts",
	// ...); only ExportQuantizedWeight's BMM-expert test reads it (BMMExpert overrides).
	Class string

	Weight Tensor // as stored: [O,I], or [E,...] for stacked experts

	// WeightQuantizer is nil when the module has none. For W4A8 it is a
	// SequentialQuantizer whose Sequential holds the two chained quantizers.
	WeightQuantizer *Quantizer
	WeightAmax      *Tensor   // weight_quantizer._amax; nil: None
	WeightAmaxSeq   []*Tensor // weight_quantizer.<i>._amax for a SequentialQuantizer
	GlobalAmax      *Tensor   // weight_quantizer._global_amax (static NVFP4)
	// WeightScaleBuf is weight_quantizer._scale when present (MXFP8 precomputed
	// scales, fp8_pb_real); nil otherwise.
	WeightScaleBuf *Tensor

	InputQuantizer *Quantizer // nil: the module has no input_quantizer attribute
	InputAmax      *Tensor    // input_quantizer._amax
	PreQuantScale  *Tensor    // input_quantizer._pre_quant_scale

	OutputQuantizer *Quantizer
	OutputAmax      *Tensor

	// FusedWithPrequant is ModelOpt's fused_with_prequant flag (set when a
	// pre_quant_scale was folded into a norm or into another linear).
	FusedWithPrequant bool
	// SVDQuant: the weight quantizer is an SVDQuant quantizer (it has the
	// svdquant_lora_a attribute, whether or not LoRA tensors are set).
	SVDQuant bool
	// BMMExpert: the weight is a 3-D BMM expert weight [E, in, out] (Llama4TextExperts,
	// GptOssExperts), which NVFP4 formats transpose around quantization.
	BMMExpert bool
}

// Exported is what _export_quantized_weight leaves on a module: the quantized weight and
// the scales it registers (nil when ModelOpt registers none).
type Exported struct {
	Format       string
	Weight       Tensor
	WeightScale  *Tensor
	WeightScale2 *Tensor
	InputScale   *Tensor
}

// ErrNoAmax is returned by CalibrateAmax for a quantizer that keeps no amax (dynamic
// or MX-format quantizers).
var ErrNoAmax = errors.New("quant: quantizer has no amax")

// isSequential reports whether q is a SequentialQuantizer (W4A8's chain).
func isSequential(q *Quantizer) bool {
	return q != nil && (len(q.Sequential) > 0 || q.Class == "SequentialQuantizer")
}

// qEnabled is is_enabled; a SequentialQuantizer delegates it to its first element.
func qEnabled(q *Quantizer) bool {
	if q == nil {
		return false
	}
	if isSequential(q) {
		return len(q.Sequential) > 0 && q.Sequential[0] != nil && q.Sequential[0].Enabled
	}
	return q.Enabled
}

// representative is representative_weight_quantizer for a singular quantizer.
func representative(q *Quantizer) *Quantizer {
	if isSequential(q) {
		if len(q.Sequential) == 0 {
			return nil
		}
		return q.Sequential[0]
	}
	return q
}

// bsTruthy is Python's truthiness of the block_sizes dict.
func bsTruthy(b *BlockSizes) bool {
	return b != nil && (len(b.Dims) > 0 || b.Type != "" || b.ScaleBits != nil || b.FourOverSix)
}

// bsLast is block_sizes[-1]; ok is false when the key is missing (a KeyError).
func bsLast(b *BlockSizes) (int, bool) {
	if b == nil {
		return 0, false
	}
	v, ok := b.Dims[-1]
	return v, ok
}

func scaleBitsIs(b *BlockSizes, n NumBits) bool {
	return b != nil && b.ScaleBits != nil && *b.ScaleBits == n
}

// IsMXFormat is TensorQuantizer.is_mx_format: dynamic blocks with E8M0 scales. Such a
// quantizer reports no amax, so it never yields an input_scale.
func IsMXFormat(q *Quantizer) bool {
	return q.BlockSizes.Dynamic() && scaleBitsIs(q.BlockSizes, BitsE8M0)
}

// intOf reports whether n is the integer width w (Python's num_bits == w).
func intOf(n NumBits, w int) bool { b, ok := n.Int(); return ok && b == w }

// amaxProperty is TensorQuantizer.amax: None without a buffer or for MX formats, and an
// assertion failure for a dynamic quantizer that holds one.
func amaxProperty(q *Quantizer, amax *Tensor) (*Tensor, error) {
	if amax == nil || IsMXFormat(q) {
		return nil, nil
	}
	if q.Dynamic {
		return nil, fmt.Errorf("%w: dynamic quantization does not have fixed amax", ErrAssertion)
	}
	return amax, nil
}

// MaxBound is TensorQuantizer.maxbound: 448 for E4M3, 6 for E2M1 with E4M3
// scales, 2^(n-1+unsigned)-1 for n-bit integers. ok is false where ModelOpt has none
// (MXFP4 and other float formats, where Python would raise).
func MaxBound(q *Quantizer) (float64, bool) {
	if q == nil {
		return 0, false
	}
	if n, isInt := q.NumBits.Int(); isInt {
		e := n - 1
		if q.Unsigned {
			e++
		}
		if e < 0 || e > 62 {
			return 0, false
		}
		return float64(int64(1)<<e - 1), true
	}
	switch {
	case q.NumBits == BitsE4M3:
		return 448, true
	case q.NumBits == BitsE2M1 && scaleBitsIs(q.BlockSizes, BitsE4M3):
		return 6, true
	}
	return 0, false
}

// finfo is torch.finfo(dt).tiny and .max for the float dtypes amax buffers use.
func finfo(dt DType) (tiny, maxv float32, ok bool) {
	switch dt {
	case BF16:
		return 0x1p-126, math.Float32frombits(0x7F7F0000), true
	case F16:
		return 0x1p-14, 65504, true
	case F32:
		return 0x1p-126, math.MaxFloat32, true
	}
	return 0, 0, false
}

// resolveShape fills one -1 of shape so that it holds numel elements.
func resolveShape(shape []int64, numel int64) ([]int64, error) {
	out := cloneShape(shape)
	known, hole := int64(1), -1
	for i, d := range out {
		if d == -1 {
			if hole >= 0 {
				return nil, fmt.Errorf("%w: two -1 in shape %v", ErrShape, shape)
			}
			hole = i
			continue
		}
		known *= d
	}
	if hole >= 0 {
		if known == 0 || numel%known != 0 {
			return nil, fmt.Errorf("%w: cannot reshape %d elements to %v", ErrShape, numel, shape)
		}
		out[hole] = numel / known
	} else if known != numel {
		return nil, fmt.Errorf("%w: cannot reshape %d elements to %v", ErrShape, numel, shape)
	}
	return out, nil
}

// ExportAmax is TensorQuantizer.export_amax. It returns a new tensor and never
// mutates amax (ModelOpt fixes zeros in the stored buffer in place; nothing this package
// computes reads the buffer again afterwards). A nil amax gives nil; a dynamic-block
// quantizer returns a copy of amax, unchanged (nil for MX formats, whose amax is None).
//
// Otherwise: reshape to AmaxShape when set; 0 and NaN → maxbound, +inf → finfo.max;
// clamp to [finfo.tiny, finfo.max] of amax's own dtype (ModelOpt uses
// torch.finfo(amax.dtype), so a BF16 amax is clamped to BF16's range); then, without
// block sizes, a per-tensor amax gains a leading dim (0-dim → (1,)) and a single-axis
// amax is squeezed ((O,1) → (O,)). The result keeps amax's dtype.
func ExportAmax(q *Quantizer, amax *Tensor) (*Tensor, error) {
	if q == nil {
		return nil, nil
	}
	if q.BlockSizes.Dynamic() {
		a, err := amaxProperty(q, amax)
		if a == nil || err != nil {
			return nil, err
		}
		return cloneTensor(a), nil
	}
	a, err := amaxProperty(q, amax)
	if a == nil || err != nil {
		return nil, err
	}
	tiny, maxv, ok := finfo(a.DType)
	if !ok {
		return nil, fmt.Errorf("%w: amax of dtype %v", ErrUnsupportedDType, a.DType)
	}
	mb, ok := MaxBound(q)
	if !ok {
		return nil, fmt.Errorf("%w (num_bits %v)", ErrNoMaxBound, q.NumBits)
	}
	v, err := Float32s(*a)
	if err != nil {
		return nil, fmt.Errorf("amax: %w", err)
	}
	shape := cloneShape(a.Shape)
	if q.AmaxShape != nil {
		if shape, err = resolveShape(q.AmaxShape, int64(len(v))); err != nil {
			return nil, fmt.Errorf("amax: %w", err)
		}
	}
	fill := RoundTo(a.DType, float32(mb))
	for i, x := range v {
		switch {
		case x == 0 || x != x:
			x = fill
		case x > maxv:
			x = maxv
		case x < -maxv:
			x = -maxv
		}
		if x < tiny {
			x = tiny
		}
		v[i] = x
	}
	if q.BlockSizes == nil {
		switch {
		case q.Axis == nil:
			shape = append([]int64{1}, shape...)
		case len(q.Axis) == 1:
			sq := shape[:0:0]
			for _, d := range shape {
				if d != 1 {
					sq = append(sq, d)
				}
			}
			shape = sq
		}
	}
	t, err := FromFloat32(a.DType, shape, v)
	if err != nil {
		return nil, err
	}
	return &t, nil
}

// fp8MaxForNormalization is numeric_utils.fp8_max_for_normalization: 256 in NVFP4's
// four-over-six mode, else 448.
func fp8MaxForNormalization(q *Quantizer) float32 {
	if q.BlockSizes != nil && q.BlockSizes.FourOverSix {
		return 256
	}
	return 448
}

// divScalarTensor is t.float() ÷scalar d with t's shape.
func divScalarTensor(t Tensor, d float32, mode DivMode) (*Tensor, error) {
	v, err := Float32s(t)
	if err != nil {
		return nil, err
	}
	for i, x := range v {
		v[i] = DivScalar(x, d, mode)
	}
	out, err := FromFloat32(F32, t.Shape, v)
	return &out, err
}

// NVFP4Scale2FromQuantizer is NVFP4QTensor.get_weights_scaling_factor_2_from_quantizer: the
// static global amax when given, else the raw amax (no export_amax fix), as float32
// ÷scalar 6·448 (6·256 in four-over-six mode). The shape is the buffer's.
func NVFP4Scale2FromQuantizer(q *Quantizer, amax, globalAmax *Tensor, mode DivMode) (*Tensor, error) {
	src := globalAmax
	if src == nil {
		src = amax
	}
	if src == nil {
		return nil, fmt.Errorf("%w: weight quantizer does not have attribute amax", ErrAssertion)
	}
	return divScalarTensor(*src, 6*fp8MaxForNormalization(q), mode)
}

// assertPositive fails like ModelOpt's `assert torch.all(scale > 0)`.
func assertPositive(t *Tensor, what string) error {
	v, err := Float32s(*t)
	if err != nil {
		return err
	}
	for _, x := range v {
		if !(x > 0) {
			return fmt.Errorf("%w: %s %v not positive", ErrAssertion, what, x)
		}
	}
	return nil
}

// ScalingFactor is get_scaling_factor(q) with q's amax buffer: nil when q is disabled or
// has no amax; for E2M1 the NVFP4 global scale of the raw amax; otherwise
// ExportAmax(amax).float() ÷scalar maxbound. Every element must be > 0 (ModelOpt asserts).
// It knows no weight, so a static-block quantizer needs AmaxShape set to get the
// (O, I/B) shape; WeightScalingFactor infers it from the weight. For a static NVFP4
// quantizer (with a global amax) use WeightScalingFactor2.
func ScalingFactor(q *Quantizer, amax *Tensor, mode DivMode) (*Tensor, error) {
	return scalingFactor(q, amax, nil, mode)
}

func scalingFactor(q *Quantizer, amax, globalAmax *Tensor, mode DivMode) (*Tensor, error) {
	if q == nil || !q.Enabled {
		return nil, nil
	}
	ea, err := ExportAmax(q, amax)
	if ea == nil || err != nil {
		return nil, err
	}
	var s *Tensor
	if q.NumBits == BitsE2M1 {
		s, err = NVFP4Scale2FromQuantizer(q, amax, globalAmax, mode)
	} else {
		mb, ok := MaxBound(q)
		if !ok {
			return nil, fmt.Errorf("%w (num_bits %v)", ErrNoMaxBound, q.NumBits)
		}
		s, err = divScalarTensor(*ea, float32(mb), mode)
	}
	if err != nil {
		return nil, err
	}
	if err := assertPositive(s, "scaling factor"); err != nil {
		return nil, err
	}
	return s, nil
}

// QuantizationFormat is quant_utils.get_quantization_format for one module's weight:
// "" is ModelOpt's QUANTIZATION_NONE. Configurations ModelOpt asserts against or does
// not support are errors (ErrAssertion, ErrNotImplemented).
func QuantizationFormat(m *Module) (string, error) {
	wq, iq := m.WeightQuantizer, m.InputQuantizer
	if wq == nil || !qEnabled(wq) {
		return "", nil
	}
	if isSequential(wq) {
		s := wq.Sequential
		if len(s) != 2 || s[0] == nil || s[1] == nil || !intOf(s[0].NumBits, 4) || s[1].NumBits != BitsE4M3 {
			return "", fmt.Errorf("%w: %s: unsupported SequentialQuantizer configuration", ErrAssertion, m.Name)
		}
		if b, ok := bsLast(s[0].BlockSizes); !bsTruthy(s[0].BlockSizes) || !ok || b <= 0 {
			return "", fmt.Errorf("%w: %s: invalid block_sizes for SequentialQuantizer", ErrAssertion, m.Name)
		}
		return "w4a8_awq", nil
	}
	switch {
	case intOf(wq.NumBits, 4):
		if b, ok := bsLast(wq.BlockSizes); !ok || b <= 0 {
			return "", fmt.Errorf("%w: %s: invalid block_sizes for INT4 quantizer", ErrAssertion, m.Name)
		}
		return "int4_awq", nil
	case intOf(wq.NumBits, 8):
		if iq != nil && iq.Enabled {
			return "int8_sq", nil
		}
		return "int8_wo", nil
	case wq.NumBits == BitsE4M3:
		if bsTruthy(wq.BlockSizes) {
			if b, ok := bsLast(wq.BlockSizes); !ok || b <= 0 {
				return "", fmt.Errorf("%w: %s: invalid block_sizes for FP8 quantizer", ErrAssertion, m.Name)
			}
			if wq.BlockSizes.Dynamic() && scaleBitsIs(wq.BlockSizes, BitsE8M0) {
				return "mxfp8", nil
			}
			if wq.FakeQuant {
				return "fp8_pb_wo", nil
			}
			return "fp8_pb_real", nil
		}
		// axis == 0 is an int comparison in ModelOpt: the tuple (0,) does not match.
		if len(wq.Axis) == 1 && wq.Axis[0] == 0 && !wq.AxisTuple {
			return "fp8_pc_pt", nil
		}
		return "fp8", nil
	case wq.NumBits == BitsE2M1:
		bs := wq.BlockSizes
		if bs == nil {
			return "", fmt.Errorf("%w: %s: E2M1 weight quantizer without block_sizes", ErrNotImplemented, m.Name)
		}
		e43, e80 := scaleBitsIs(bs, BitsE4M3), scaleBitsIs(bs, BitsE8M0)
		switch {
		case iq != nil && m.SVDQuant:
			return "nvfp4_svdquant", nil
		case iq != nil && m.PreQuantScale != nil:
			return "nvfp4_awq", nil
		case m.FusedWithPrequant:
			return "nvfp4_awq", nil
		case (iq == nil || !iq.Enabled) && e43:
			return "w4a16_nvfp4", nil
		case iq == nil:
			return "", fmt.Errorf("%w: %s: input_quantizer is None", ErrAssertion, m.Name)
		}
		fp8In := bs.Dynamic() && iq.Enabled && iq.NumBits == BitsE4M3 && iq.BlockSizes == nil
		switch {
		case fp8In && e80:
			return "w4a8_mxfp4_fp8", nil
		case fp8In && e43:
			return "w4a8_nvfp4_fp8", nil
		case e43:
			return "nvfp4", nil
		case e80:
			return "mxfp4", nil
		}
	}
	return "", fmt.Errorf("%w: %s: unsupported quantizer with num_bits %v", ErrNotImplemented, m.Name, wq.NumBits)
}

// WeightBlockSize is get_weight_block_size: block_sizes[-1] of the representative weight
// quantizer (element 0 of a chain), 0 when it is absent, disabled or has no blocks.
// Where ModelOpt would fail (block_sizes without a -1 key) or return None (-1: None),
// this returns 0; QuantizationFormat reports the former as an error.
func WeightBlockSize(m *Module) int {
	q := representative(m.WeightQuantizer)
	if q == nil || !q.Enabled || !bsTruthy(q.BlockSizes) {
		return 0
	}
	b, _ := bsLast(q.BlockSizes)
	return b
}

// withAmaxShape returns q with _amax_shape_for_export filled in the way ModelOpt's
// block-quant setup sets it for a weight w: (*w.shape[:-1], -1) when the only blocked
// axis is the last one. A quantizer that already has AmaxShape is returned as is.
func withAmaxShape(q *Quantizer, w Tensor) *Quantizer {
	if q == nil || q.AmaxShape != nil || q.BlockSizes == nil || len(w.Shape) == 0 {
		return q
	}
	blocked, last := 0, false
	for ax, b := range q.BlockSizes.Dims {
		if b <= 0 {
			continue
		}
		blocked++
		last = ax == -1 || ax == len(w.Shape)-1
	}
	if blocked != 1 || !last {
		return q
	}
	c := *q
	c.AmaxShape = append(cloneShape(w.Shape[:len(w.Shape)-1]), -1)
	return &c
}

func nvfp4Family(f string) bool {
	switch f {
	case "nvfp4", "nvfp4_awq", "nvfp4_svdquant", "w4a16_nvfp4", "w4a8_nvfp4_fp8":
		return true
	}
	return false
}

// weightScale2NVFP4 is the NVFP4-family global weight scale of get_weight_scaling_factor
// and _2: amax/448 for w4a8_nvfp4_fp8, else NVFP4GlobalScale.
func weightScale2NVFP4(m *Module, format string, mode DivMode) (*Tensor, error) {
	if format == "w4a8_nvfp4_fp8" {
		if m.WeightAmax == nil {
			return nil, fmt.Errorf("%w: %s: weight_quantizer has no _amax", ErrAssertion, m.Name)
		}
		return divScalarTensor(*m.WeightAmax, 448, mode)
	}
	return NVFP4Scale2FromQuantizer(m.WeightQuantizer, m.WeightAmax, m.GlobalAmax, mode)
}

// WeightScalingFactor is get_weight_scaling_factor(module): nil without a weight
// quantizer; a chain's first element's scale (W4A8); the NVFP4 per-block E4M3 scales
// of the stored weight; the MXFP4 / MXFP8 E8M0 scales; otherwise ScalingFactor.
func WeightScalingFactor(m *Module, mode DivMode) (*Tensor, error) {
	wq := m.WeightQuantizer
	if wq == nil {
		return nil, nil
	}
	if isSequential(wq) {
		if len(wq.Sequential) == 0 {
			return nil, fmt.Errorf("%w: %s: empty SequentialQuantizer", ErrAssertion, m.Name)
		}
		return scalingFactor(withAmaxShape(wq.Sequential[0], m.Weight), seqAmax(m, 0), nil, mode)
	}
	format, err := QuantizationFormat(m)
	if err != nil {
		return nil, err
	}
	switch {
	case nvfp4Family(format):
		s2, err := weightScale2NVFP4(m, format, mode)
		if err != nil {
			return nil, err
		}
		return nvfp4ScaleFromQuantizer(m, *s2, m.Weight, mode)
	case format == "mxfp4" || format == "w4a8_mxfp4_fp8":
		b, _ := bsLast(wq.BlockSizes)
		return mxfp4WeightScale(m.Weight, b, mode)
	case format == "mxfp8":
		return mxfp8WeightScale(m.Weight, m.WeightScaleBuf, mode)
	}
	return scalingFactor(withAmaxShape(wq, m.Weight), m.WeightAmax, m.GlobalAmax, mode)
}

func seqAmax(m *Module, i int) *Tensor {
	if i < len(m.WeightAmaxSeq) {
		return m.WeightAmaxSeq[i]
	}
	return nil
}

// WeightScalingFactor2 is get_weight_scaling_factor_2(module): the NVFP4-family global
// scale, or for a chain whose last element is enabled that element's ScalingFactor
// ((1,) = amax/448); nil otherwise.
func WeightScalingFactor2(m *Module, mode DivMode) (*Tensor, error) {
	wq := m.WeightQuantizer
	if wq == nil {
		return nil, nil
	}
	format, err := QuantizationFormat(m)
	if err != nil {
		return nil, err
	}
	if nvfp4Family(format) {
		return weightScale2NVFP4(m, format, mode)
	}
	if !isSequential(wq) || len(wq.Sequential) == 0 || !wq.Sequential[len(wq.Sequential)-1].Enabled {
		return nil, nil
	}
	if len(wq.Sequential) != 2 {
		return nil, fmt.Errorf("%w: %s: only 2 sequential quantizers are supported", ErrAssertion, m.Name)
	}
	return scalingFactor(wq.Sequential[1], seqAmax(m, 1), nil, mode)
}

// ActivationScalingFactor is get_activation_scaling_factor(module): nil without an input
// quantizer; for nvfp4 / nvfp4_awq / nvfp4_svdquant modules amax ÷scalar (maxbound·448)
// (2688 for an NVFP4 input), asserted > 0; otherwise ScalingFactor of the input quantizer.
func ActivationScalingFactor(m *Module, mode DivMode) (*Tensor, error) {
	iq := m.InputQuantizer
	if iq == nil {
		return nil, nil
	}
	format, err := QuantizationFormat(m)
	if err != nil {
		return nil, err
	}
	switch format {
	case "nvfp4", "nvfp4_awq", "nvfp4_svdquant":
		if !iq.Enabled {
			return nil, nil
		}
		ea, err := ExportAmax(iq, m.InputAmax)
		if ea == nil || err != nil {
			return nil, err
		}
		mb, ok := MaxBound(iq)
		if !ok {
			return nil, fmt.Errorf("%w: %s input quantizer (num_bits %v)", ErrNoMaxBound, m.Name, iq.NumBits)
		}
		s, err := divScalarTensor(*ea, float32(mb)*448, mode)
		if err != nil {
			return nil, err
		}
		if err := assertPositive(s, "activation scaling factor"); err != nil {
			return nil, err
		}
		return s, nil
	}
	return scalingFactor(iq, m.InputAmax, nil, mode)
}

// PrequantScalingFactor is get_prequant_scaling_factor(module): the pre_quant_scale with
// every size-1 dim squeezed (same dtype), nil when there is none; asserted > 0.
func PrequantScalingFactor(m *Module) (*Tensor, error) {
	if m.InputQuantizer == nil || m.PreQuantScale == nil {
		return nil, nil
	}
	p := *m.PreQuantScale
	var shape []int64
	for _, d := range p.Shape {
		if d != 1 {
			shape = append(shape, d)
		}
	}
	out := Tensor{DType: p.DType, Shape: shape, Data: append([]byte(nil), p.Data...)}
	if out.Shape == nil {
		out.Shape = []int64{}
	}
	if err := assertPositive(&out, "prequant scaling factor"); err != nil {
		return nil, err
	}
	return &out, nil
}

// cloneTensor is a deep copy of t.
func cloneTensor(t *Tensor) *Tensor {
	return &Tensor{DType: t.DType, Shape: cloneShape(t.Shape), Data: append([]byte(nil), t.Data...)}
}

// squeezed is tensor.squeeze(): every size-1 dim removed (a copy of the header only).
func squeezed(t *Tensor) *Tensor {
	shape := []int64{}
	for _, d := range t.Shape {
		if d != 1 {
			shape = append(shape, d)
		}
	}
	return &Tensor{DType: t.DType, Shape: shape, Data: t.Data}
}

// isBMMExpert is _export_quantized_weight's test: a 3-D weight of a Llama4TextExperts /
// GptOssExperts module (or one flagged BMMExpert).
func isBMMExpert(m *Module) bool {
	if len(m.Weight.Shape) != 3 {
		return false
	}
	return m.BMMExpert || strings.Contains(m.Class, "Llama4TextExperts") || strings.Contains(m.Class, "GptOssExperts")
}

// ExportQuantizedWeight is unified_export_hf._export_quantized_weight: it
// returns nil when the module's format is None. dtype is the export dtype the weight is
// cast to right before quantization; mode selects CPU or CUDA ÷scalar semantics.
func ExportQuantizedWeight(m *Module, dtype DType, mode DivMode) (*Exported, error) {
	format, err := QuantizationFormat(m)
	if err != nil || format == "" {
		return nil, err
	}
	block := WeightBlockSize(m)
	wq, iq := m.WeightQuantizer, m.InputQuantizer
	ex := &Exported{Format: format}
	if format == "fp8" {
		if m.WeightAmax == nil {
			return nil, fmt.Errorf("%w: %s: weight_quantizer has no _amax", ErrAssertion, m.Name)
		}
		amax := *m.WeightAmax
		mb, _ := MaxBound(wq)
		if len(amax.Shape) == 1 {
			// amax.item() / maxbound in Python doubles, then torch.tensor(): a 0-dim
			// float32 rounded once from the double quotient (amax must have one element).
			v, err := Scalar(amax)
			if err != nil {
				return nil, fmt.Errorf("%s: weight amax: %w", m.Name, err)
			}
			t, _ := FromFloat32(F32, []int64{}, []float32{float32(float64(v) / mb)})
			ex.WeightScale = &t
		} else if ex.WeightScale, err = divScalarTensor(amax, float32(mb), mode); err != nil {
			return nil, err
		}
		if iq != nil && m.InputAmax != nil {
			// The exporter casts the input amax buffer to float32 first, so export_amax
			// clamps with float32's range.
			a32, err := intCast(*m.InputAmax, F32)
			if err != nil {
				return nil, fmt.Errorf("%s: input amax: %w", m.Name, err)
			}
			mm := *m
			mm.InputAmax = &a32
			s, err := ActivationScalingFactor(&mm, mode)
			if err != nil {
				return nil, err
			}
			if s == nil {
				return nil, fmt.Errorf("%w: %s: input_scale is None (disabled input quantizer with an amax)", ErrAssertion, m.Name)
			}
			ex.InputScale = squeezed(s)
		}
	} else {
		switch format {
		case "fp8_pb_real":
			if m.WeightScaleBuf == nil {
				return nil, fmt.Errorf("%w: %s: fp8_pb_real weight quantizer has no _scale", ErrAssertion, m.Name)
			}
			s, err := intCast(*m.WeightScaleBuf, F32)
			if err != nil {
				return nil, err
			}
			ex.WeightScale = &s
		case "mxfp8":
			if ex.WeightScale, err = mxfp8WeightScale(m.Weight, m.WeightScaleBuf, mode); err != nil {
				return nil, err
			}
		default:
			if ex.WeightScale, err = WeightScalingFactor(m, mode); err != nil {
				return nil, err
			}
		}
		if iq != nil && iq.Enabled {
			a, err := amaxProperty(iq, m.InputAmax)
			if err != nil {
				return nil, err
			}
			if a != nil {
				s, err := ActivationScalingFactor(m, mode)
				if err != nil {
					return nil, err
				}
				if s == nil {
					return nil, fmt.Errorf("%w: %s: input_scale is None", ErrAssertion, m.Name)
				}
				ex.InputScale = squeezed(s)
			}
		}
	}
	switch format {
	case "nvfp4_awq", "nvfp4_svdquant", "nvfp4", "w4a16_nvfp4", "w4a8_awq", "w4a8_nvfp4_fp8":
		s2, err := WeightScalingFactor2(m, mode)
		if err != nil {
			return nil, err
		}
		if s2 == nil {
			return nil, fmt.Errorf("%w: %s: weight_scale_2 is None", ErrAssertion, m.Name)
		}
		ex.WeightScale2 = squeezed(s2)
	}

	// NVFP4 weights, and fp8_pc_pt weights of BMM experts, are quantized with the
	// expert dimensions transposed and transposed back (with the NVFP4 block scales);
	// MaybeTransposeExpertWeightDimensions leaves non-BMM weights as they are.
	bmm := isBMMExpert(m)
	nvfp4 := format == "nvfp4" || format == "nvfp4_awq" || format == "nvfp4_svdquant" || format == "w4a16_nvfp4"
	transpose := nvfp4 || (format == "fp8_pc_pt" && bmm)
	w := m.Weight
	if transpose {
		if w, _, err = MaybeTransposeExpertWeightDimensions(w, nil, bmm); err != nil {
			return nil, err
		}
	}
	if nvfp4 {
		if ex.WeightScale, err = nvfp4ScaleFromQuantizer(m, *ex.WeightScale2, w, mode); err != nil {
			return nil, err
		}
	}
	wd, err := exportCast(w, dtype)
	if err != nil {
		return nil, fmt.Errorf("%s: weight: %w", m.Name, err)
	}
	if ex.Weight, err = ToQuantizedWeight(wd, ex.WeightScale, ex.WeightScale2, format, block, mode); err != nil {
		return nil, fmt.Errorf("%s: %w", m.Name, err)
	}
	switch {
	case nvfp4:
		ex.Weight, ex.WeightScale, err = MaybeTransposeExpertWeightDimensions(ex.Weight, ex.WeightScale, bmm)
	case transpose:
		ex.Weight, _, err = MaybeTransposeExpertWeightDimensions(ex.Weight, nil, bmm)
	}
	if err != nil {
		return nil, err
	}
	return ex, nil
}

// exportCast is weight.to(dtype) for quantization: w itself when it already has dtype
// (the kernels only read it).
func exportCast(w Tensor, dtype DType) (Tensor, error) {
	if w.DType == dtype {
		return w, nil
	}
	return intCast(w, dtype)
}

// KVCacheDType is _compute_kv_cache_dtype over the enabled k_bmm/v_bmm/output quantizers
// of the modules (hasBias[i]: quantizers[i] has a _bias_value). Disabled or nil
// quantizers are skipped. "" is None; otherwise "FP8", "INT8", "NVFP4_AFFINE" or "NVFP4".
func KVCacheDType(quantizers []*Quantizer, hasBias []bool) string {
	affine := true
	var fp8, int8, fp4 bool
	for i, q := range quantizers {
		if q == nil || !qEnabled(q) {
			continue
		}
		nb := q.NumBits
		if isSequential(q) {
			nb = q.Sequential[0].NumBits
		}
		fp8 = fp8 || nb == BitsE4M3
		int8 = int8 || intOf(nb, 8)
		fp4 = fp4 || nb == BitsE2M1
		affine = affine && i < len(hasBias) && hasBias[i]
	}
	switch {
	case fp8:
		return "FP8"
	case int8:
		return "INT8"
	case fp4 && affine:
		return "NVFP4_AFFINE"
	case fp4:
		return "NVFP4"
	}
	return ""
}

// KVCacheScalingFactor is get_kv_cache_scaling_factor (the TRT-LLM rule): the
// ScalingFactor of the k and v bmm quantizers, each replaced by max(scale, 1.0) (shape
// broadcast with (1,)) when kvDType is "FP8". Both are nil unless both quantizers exist.
// The Hugging Face export uses KVCacheScaleHF instead.
func KVCacheScalingFactor(k, v *Quantizer, kAmax, vAmax *Tensor, kvDType string, mode DivMode) (kScale, vScale *Tensor, err error) {
	if k == nil || v == nil {
		return nil, nil, nil
	}
	out := [2]*Tensor{}
	for i, qa := range [2]struct {
		q *Quantizer
		a *Tensor
	}{{k, kAmax}, {v, vAmax}} {
		s, err := scalingFactor(qa.q, qa.a, nil, mode)
		if err != nil {
			return nil, nil, err
		}
		if s != nil && kvDType == "FP8" {
			vals, _ := Float32s(*s)
			for j, x := range vals {
				// torch.max(a, b) propagates NaN.
				if x == x && x < 1 {
					vals[j] = 1
				}
			}
			shape := s.Shape
			if len(shape) == 0 {
				shape = []int64{1}
			}
			t, err := FromFloat32(F32, shape, vals)
			if err != nil {
				return nil, nil, err
			}
			s = &t
		}
		out[i] = s
	}
	return out[0], out[1], nil
}

// KVCacheScaleHF is the Hugging Face export rule for k_scale / v_scale (the
// k_bmm_quantizer._amax / v_bmm_quantizer._amax renames of quant_utils.postprocess_state_dict):
// amax.float() ÷scalar 448 with amax's own shape, for FP8, NVFP4 and NVFP4_AFFINE; any
// other kvFormat is an error (ModelOpt asserts). No zero fix and no clamp.
func KVCacheScaleHF(amax Tensor, kvFormat string, mode DivMode) (Tensor, error) {
	switch kvFormat {
	case "FP8", "NVFP4", "NVFP4_AFFINE":
	default:
		return Tensor{}, fmt.Errorf("%w: invalid KV cache quantization format %q", ErrAssertion, kvFormat)
	}
	if kvFormat == "FP8" && amax.Numel() != 1 {
		// The > 0.5 warning calls .item(), which needs one element.
		return Tensor{}, fmt.Errorf("%w: FP8 KV amax of shape %v is not a scalar", ErrShape, amax.Shape)
	}
	s, err := divScalarTensor(amax, 448, mode)
	if err != nil {
		return Tensor{}, err
	}
	return *s, nil
}
