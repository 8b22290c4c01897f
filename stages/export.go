package stages

import (
	"fmt"
	"math"

	"github.com/quantstream/quantstream/quant"
)

// maxBound is TensorQuantizer.maxbound (§2.1).
func maxBound(q *quant.Quantizer) float32 {
	switch q.NumBits {
	case quant.BitsE4M3:
		return e4m3Max
	case quant.BitsE2M1:
		return e2m1Max
	}
	n, _ := q.NumBits.Int()
	u := 0
	if q.Unsigned {
		u = 1
	}
	return float32(math.Ldexp(1, n-1+u) - 1)
}

// outputs of one exported module, as headers: the quantized weight and its scales.
func exportHeaders(m *Module, w TensorHeader) (map[string]TensorHeader, error) {
	out := map[string]TensorHeader{}
	if len(w.Shape) != 2 {
		return nil, fmt.Errorf("%w: %s: %d-D weight %v (only 2-D linears are supported)", ErrUnsupported, m.Weight, len(w.Shape), w.Shape)
	}
	O, I := w.Shape[0], w.Shape[1]
	scalar := TensorHeader{DType: quant.F32, Shape: []int64{}}
	needBlock := func(b int64) error {
		if b <= 0 || I%b != 0 {
			return fmt.Errorf("%w: %s: input size %d not divisible by block %d", ErrShape, m.Weight, I, b)
		}
		return nil
	}
	B := int64(m.Block)
	switch m.Format {
	case "fp8":
		out["weight"] = TensorHeader{quant.F8E4M3, []int64{O, I}}
		out["weight_scale"] = scalar
	case "fp8_pc_pt":
		out["weight"] = TensorHeader{quant.F8E4M3, []int64{O, I}}
		out["weight_scale"] = TensorHeader{quant.F32, squeezed([]int64{O})}
	case "fp8_pb_wo":
		b0, b1 := int64(m.WQ.BlockSizes.Dims[-2]), B
		if b0 <= 0 || b1 <= 0 {
			return nil, fmt.Errorf("%w: %s: FP8 block sizes %v", ErrUnsupported, m.Weight, m.WQ.BlockSizes.Dims)
		}
		out["weight"] = TensorHeader{quant.F8E4M3, []int64{O, I}}
		out["weight_scale"] = TensorHeader{quant.F32, []int64{ceilDiv(O, b0), 1, ceilDiv(I, b1), 1}}
	case "int8_sq", "int8_wo":
		out["weight"] = TensorHeader{quant.I8, []int64{O, I}}
		out["weight_scale"] = TensorHeader{quant.F32, squeezed([]int64{O})}
	case "int4_awq", "w4a8_awq":
		if err := needBlock(B); err != nil {
			return nil, err
		}
		if O%2 != 0 {
			return nil, fmt.Errorf("%w: %s: INT4 packing needs an even output size, got %d", ErrShape, m.Weight, O)
		}
		out["weight"] = TensorHeader{quant.U8, []int64{O / 2, I}}
		out["weight_scale"] = TensorHeader{quant.F32, []int64{O, I / B}}
		if m.Format == "w4a8_awq" && m.WQ.Sequential[1].Enabled {
			out["weight_scale_2"] = scalar
		}
	case "nvfp4", "nvfp4_awq", "w4a16_nvfp4", "w4a8_nvfp4_fp8":
		if err := needBlock(B); err != nil {
			return nil, err
		}
		if B%2 != 0 {
			return nil, fmt.Errorf("%w: %s: odd NVFP4 block %d", ErrShape, m.Weight, B)
		}
		if m.WQ.Class == "NVFP4StaticQuantizer" {
			return nil, fmt.Errorf("%w: %s: static (four-over-six/MSE) NVFP4 export", ErrUnsupported, m.Weight)
		}
		out["weight"] = TensorHeader{quant.U8, []int64{O, I / 2}}
		out["weight_scale"] = TensorHeader{quant.F8E4M3, []int64{O, I / B}}
		out["weight_scale_2"] = scalar
	case "mxfp8":
		if err := needBlock(B); err != nil {
			return nil, err
		}
		out["weight"] = TensorHeader{quant.F8E4M3, []int64{O, I}}
		out["weight_scale"] = TensorHeader{quant.U8, []int64{O, I / B}}
	case "mxfp4", "w4a8_mxfp4_fp8":
		if err := needBlock(B); err != nil {
			return nil, err
		}
		out["weight"] = TensorHeader{quant.U8, []int64{O, I / 2}}
		out["weight_scale"] = TensorHeader{quant.U8, []int64{O, I / B}}
	default:
		return nil, fmt.Errorf("%w: %s: format %q", ErrUnsupported, m.Weight, m.Format)
	}
	switch m.Format {
	case "mxfp8", "mxfp4", "w4a8_mxfp4_fp8":
	default:
		if m.WAmax == "" {
			return nil, fmt.Errorf("%w: %s: %s weight quantizer has no _amax", ErrMissingAmax, m.Name, m.Format)
		}
		if m.Format == "w4a8_awq" && m.WQ.Sequential[1].Enabled && m.WAmax1 == "" {
			return nil, fmt.Errorf("%w: %s: W4A8 FP8 stage has no _amax", ErrMissingAmax, m.Name)
		}
	}
	if hasInputScale(m) {
		out["input_scale"] = scalar
	}
	return out, nil
}

// hasInputScale: the FP8 branch exports input_scale whenever the input quantizer has
// an amax (even disabled); the others need it enabled. MX and per-token input
// quantizers have no amax buffer, hence no input_scale.
func hasInputScale(m *Module) bool {
	if m.IQ == nil || m.IAmax == "" {
		return false
	}
	if m.Format == "fp8" {
		return true
	}
	return m.IQ.Enabled
}

func squeezed(s []int64) []int64 {
	var out []int64
	for _, d := range s {
		if d != 1 {
			out = append(out, d)
		}
	}
	if out == nil {
		out = []int64{}
	}
	return out
}

func ceilDiv(a, b int64) int64 { return (a + b - 1) / b }

// exportModule is _export_quantized_weight (§7.3): it replaces m.Weight by the
// quantized weight and adds weight_scale, weight_scale_2 and input_scale.
func exportModule(ts *tensorSet, m *Module, dtype quant.DType, mode quant.DivMode) error {
	hdrs, err := exportHeaders(m, ts.hdr[m.Weight])
	if err != nil {
		return err
	}
	if ts.planning() {
		for k, h := range hdrs {
			ts.setHeader(m.Name+"."+k, h.DType, h.Shape)
		}
		return nil
	}
	wh := ts.hdr[m.Weight]
	stored, err := ts.floats(m.Weight)
	if err != nil {
		return err
	}
	// weight.to(dtype): the quantizers see the weight in the export dtype.
	w := stored
	if dtype != wh.DType {
		w = make([]float32, len(stored))
		for i, v := range stored {
			w[i] = roundTo(v, dtype)
		}
	}
	O, I := int(wh.Shape[0]), int(wh.Shape[1])
	put := func(k string, data []byte) {
		h := hdrs[k]
		ts.set(m.Name+"."+k, quant.Tensor{DType: h.DType, Shape: h.Shape, Data: data})
	}
	wamax := func(buf string) ([]float32, error) {
		if buf == "" {
			return nil, fmt.Errorf("%w: %s: %s weight quantizer has no _amax", ErrMissingAmax, m.Name, m.Format)
		}
		return ts.floats(buf)
	}
	switch m.Format {
	case "fp8":
		a, err := wamax(m.WAmax)
		if err != nil {
			return err
		}
		if len(a) != 1 {
			return fmt.Errorf("%w: %s: per-tensor FP8 amax has %d elements", ErrShape, m.Name, len(a))
		}
		s := quant.DivScalar(a[0], e4m3Max, mode)
		q := make([]byte, len(w))
		for i, v := range w {
			// The 0-d scale does not promote the weight: the quotient rounds to the
			// weight dtype before the FP8 cast (CUDA also rounds the divisor).
			d := s
			if mode == quant.DivCUDA {
				d = roundTo(s, dtype)
			}
			q[i] = fp8(roundTo(v/d, dtype))
		}
		put("weight", q)
		put("weight_scale", encode([]float32{s}, quant.F32))
	case "fp8_pc_pt", "int8_sq", "int8_wo":
		a, err := wamax(m.WAmax)
		if err != nil {
			return err
		}
		if len(a) != O {
			return fmt.Errorf("%w: %s: per-channel amax has %d elements for %d rows", ErrShape, m.Name, len(a), O)
		}
		mb := maxBound(m.WQ)
		s := exportAmax(a, mb)
		for i := range s {
			s[i] = quant.DivScalar(s[i], mb, mode)
		}
		q := make([]byte, len(w))
		for i, v := range w {
			y := v / s[i/I]
			if m.Format == "fp8_pc_pt" {
				q[i] = fp8(y)
			} else {
				r := math.RoundToEven(float64(y))
				q[i] = byte(int8(max(-128, min(127, r))))
			}
		}
		put("weight", q)
		put("weight_scale", encode(s, quant.F32))
	case "fp8_pb_wo":
		a, err := wamax(m.WAmax)
		if err != nil {
			return err
		}
		sh := hdrs["weight_scale"].Shape
		rb, cb := int(sh[0]), int(sh[2])
		if len(a) != rb*cb {
			return fmt.Errorf("%w: %s: block amax has %d elements, want %d", ErrShape, m.Name, len(a), rb*cb)
		}
		s := exportAmax(a, e4m3Max)
		for i := range s {
			s[i] = quant.DivScalar(s[i], e4m3Max, mode)
		}
		b0, b1 := m.WQ.BlockSizes.Dims[-2], m.Block
		q := make([]byte, len(w))
		for i, v := range w {
			r, c := i/I, i%I
			q[i] = fp8(v / s[(r/b0)*cb+c/b1])
		}
		put("weight", q)
		put("weight_scale", encode(s, quant.F32))
	case "int4_awq", "w4a8_awq":
		a, err := wamax(m.WAmax)
		if err != nil {
			return err
		}
		nb := I / m.Block
		if len(a) != O*nb {
			return fmt.Errorf("%w: %s: block amax has %d elements, want %d", ErrShape, m.Name, len(a), O*nb)
		}
		q0 := representative(m.WQ)
		mb := maxBound(q0)
		s := exportAmax(a, mb)
		for i := range s {
			s[i] = quant.DivScalar(s[i], mb, mode)
		}
		put("weight", packInt4(w, O, I, s, nb))
		put("weight_scale", encode(s, quant.F32))
		if _, ok := hdrs["weight_scale_2"]; ok {
			a1, err := wamax(m.WAmax1)
			if err != nil {
				return err
			}
			if len(a1) != 1 {
				return fmt.Errorf("%w: %s: W4A8 FP8 stage amax has %d elements", ErrShape, m.Name, len(a1))
			}
			s2 := quant.DivScalar(exportAmax(a1, e4m3Max)[0], e4m3Max, mode)
			put("weight_scale_2", encode([]float32{s2}, quant.F32))
		}
	case "nvfp4", "nvfp4_awq", "w4a16_nvfp4", "w4a8_nvfp4_fp8":
		a, err := wamax(m.WAmax)
		if err != nil {
			return err
		}
		if len(a) != 1 {
			return fmt.Errorf("%w: %s: NVFP4 global amax has %d elements", ErrShape, m.Name, len(a))
		}
		d := float32(6 * e4m3Max)
		if m.WQ.BlockSizes != nil && m.WQ.BlockSizes.FourOverSix {
			d = 6 * 256
		}
		if m.Format == "w4a8_nvfp4_fp8" {
			d = e4m3Max
		}
		s2 := quant.DivScalar(a[0], d, mode)
		scales := nvfp4BlockScales(stored, O, I, m.Block, s2)
		put("weight", nvfp4Pack(w, O, I, m.Block, scales, s2))
		put("weight_scale", scales)
		put("weight_scale_2", encode([]float32{s2}, quant.F32))
	case "mxfp8":
		q, sc := mxfp8(w, O, I, m.Block, mode)
		put("weight", q)
		put("weight_scale", sc)
	default:
		return fmt.Errorf("%w: %s: export of format %q not implemented", ErrUnsupported, m.Name, m.Format)
	}
	if _, ok := hdrs["input_scale"]; ok {
		s, err := inputScale(ts, m, mode)
		if err != nil {
			return err
		}
		put("input_scale", encode([]float32{s}, quant.F32))
	}
	return nil
}

// inputScale is get_activation_scaling_factor, squeezed: NVFP4 activations divide the
// raw amax by maxbound*448 and must be positive; the others go through export_amax.
func inputScale(ts *tensorSet, m *Module, mode quant.DivMode) (float32, error) {
	a, err := ts.floats(m.IAmax)
	if err != nil {
		return 0, err
	}
	if len(a) != 1 {
		return 0, fmt.Errorf("%w: %s: input amax has %d elements", ErrShape, m.Name, len(a))
	}
	mb := maxBound(m.IQ)
	switch m.Format {
	case "nvfp4", "nvfp4_awq", "nvfp4_svdquant":
		s := quant.DivScalar(a[0], mb*e4m3Max, mode)
		if !(s > 0) {
			return 0, fmt.Errorf("%w: %s: NVFP4 input amax %v is not positive", ErrMissingAmax, m.Name, a[0])
		}
		return s, nil
	}
	s := quant.DivScalar(exportAmax(a, mb)[0], mb, mode)
	if !(s > 0) {
		return 0, fmt.Errorf("%w: %s: input scale %v is not positive", ErrMissingAmax, m.Name, s)
	}
	return s, nil
}
