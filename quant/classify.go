package quant

import "fmt"

// The classification of a module: get_quantization_format and get_weight_block_size.

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

func nvfp4Family(f string) bool {
	switch f {
	case "nvfp4", "nvfp4_awq", "nvfp4_svdquant", "w4a16_nvfp4", "w4a8_nvfp4_fp8":
		return true
	}
	return false
}
