package quant

import (
	"encoding/binary"
	"fmt"
	"math"
)

// A block-FP8 weight handed on undecoded: where a conversion exports such a weight
// to NVFP4 with dynamic block scales, the reader need not decode it to BF16 first
// (FP8Block.DequantRows) for the export to decode the BF16 again: the weight travels
// in its BF16-sized slot of the layer "coded", as its Rows·Cols E4M3 codes followed
// by its block scales as little-endian float32 (CodedBytes in all); the rest of the
// slot is not read. Only a consumer told which tensors are coded may read them
// (FromCoded), and the results are the bytes of the decoded route: the amax
// (AmaxBF16) and the export (PrepareFP8BlockRowExport).

// CodedBytes is the length of the coded layout: the codes, then 4 bytes per block
// scale. It fits the BF16 slot (2·Rows·Cols bytes) when Fits.
func (b FP8Block) CodedBytes() int {
	s := b.ScaleShape()
	return b.Rows*b.Cols + 4*s[0]*s[1]
}

// Fits reports whether the coded layout fits the weight's BF16 slot.
func (b FP8Block) Fits() bool { return b.CodedBytes() <= 2*b.Rows*b.Cols }

// PutCodedScales writes the block scales of the coded layout into dst (the slot
// after the codes: 4·blocks bytes).
func (b FP8Block) PutCodedScales(dst []byte) error {
	if len(dst) != 4*len(b.Scale) {
		return fmt.Errorf("%w: %d bytes for %d block scales", ErrShape, len(dst), len(b.Scale))
	}
	for k, v := range b.Scale {
		binary.LittleEndian.PutUint32(dst[4*k:], math.Float32bits(v))
	}
	return nil
}

// FromCoded reads a coded weight of b's layout (Rows, Cols and block sizes; b.Scale
// is ignored) from slot, the weight's BF16-sized slot: it returns b with its
// scales, checked (Check), and the codes.
func (b FP8Block) FromCoded(slot []byte) (FP8Block, []byte, error) {
	b.Scale = nil
	if b.Rows < 0 || b.Cols < 0 || b.BlockRows <= 0 || b.BlockCols <= 0 || len(slot) != 2*b.Rows*b.Cols || !b.Fits() {
		return b, nil, fmt.Errorf("%w: coded FP8 block weight [%d, %d] in %d×%d blocks in %d bytes", ErrShape, b.Rows, b.Cols, b.BlockRows, b.BlockCols, len(slot))
	}
	n := b.Rows * b.Cols
	s := b.ScaleShape()
	b.Scale = make([]float32, s[0]*s[1])
	for k := range b.Scale {
		b.Scale[k] = math.Float32frombits(binary.LittleEndian.Uint32(slot[n+4*k:]))
	}
	if err := b.Check(); err != nil {
		return b, nil, err
	}
	return b, slot[:n:n], nil
}

// CheckCodes refuses an E4M3 NaN code among q, the codes of rows from r0, as
// DequantRows refuses it (ErrNonFinite, naming the element in the same words).
func (b FP8Block) CheckCodes(q []byte, r0 int) error {
	if fp8NaNIndex(q) < 0 {
		return nil
	}
	return fp8NaNError(q, r0, b.Cols)
}

// AmaxBF16 is the largest magnitude among the BF16 values DequantRows gives for
// rows [r0, r1) (q holds exactly their codes), as a BF16 bit pattern without sign:
// what max calibration's amax of the decoded weight is, since within a block
// bf16(f32(q)·s) is monotone in |q| for a scale s ≥ 0 (Check). A product that
// rounds to infinity gives 0x7F80; a NaN code is refused as DequantRows refuses
// it. Call Check first.
func (b FP8Block) AmaxBF16(q []byte, r0, r1 int) (uint16, error) {
	return b.absMaxBF16(q, r0, r1)
}

// PrepareFP8BlockRowExport is PrepareRowExport for m with a block-FP8 weight (b
// with its scales, codes its Rows·Cols codes) standing for the BF16 weight
// DequantRows gives, exported with dtype BF16: the same ex, and a RowExport whose
// Fill writes the same bytes from the codes (FP8Block.appendNVFP4Rows, equal to
// decoding then NVFP4.AppendQuantizeRows). m.Weight is not read. ok is false where
// that is not exactly the case: a format other than the NVFP4 ones with block
// scales computed from the weight, a layout whose NVFP4 blocks cross FP8 blocks,
// an export dtype other than BF16, or whatever PrepareRowExport itself refuses; the
// caller then decodes the weight and takes the general path.
func PrepareFP8BlockRowExport(m *Module, b FP8Block, codes []byte, dtype DType, mode DivMode) (ex *Exported, re *RowExport, ok bool) {
	if dtype != BF16 || len(codes) != b.Rows*b.Cols || b.Check() != nil || b.Rows == 0 || b.Cols == 0 {
		return nil, nil, false
	}
	shape := []int64{int64(b.Rows), int64(b.Cols)}
	sm := *m
	sm.Weight = Tensor{DType: BF16, Shape: shape} // the weight it stands for; no data is read
	ex, format, block, transposed, ok := prepareRowScales(&sm, BF16, shape, dtype, mode)
	if !ok || transposed {
		return nil, nil, false
	}
	switch format {
	case "nvfp4", "nvfp4_awq", "w4a16_nvfp4", "w4a8_nvfp4_fp8":
	default:
		return nil, nil, false
	}
	if ex.WeightScale2 == nil || ex.WeightScale2.Numel() != 1 || block < 2 || block%2 != 0 || b.Cols%block != 0 || b.BlockCols%block != 0 {
		return nil, nil, false
	}
	s2, err := Float32s(*ex.WeightScale2)
	if err != nil {
		return nil, nil, false
	}
	half, nb := b.Cols/2, b.Cols/block
	re = &RowExport{
		Units: b.Rows, UnitBytes: int64(2 * b.Cols), Align: b.BlockRows, // pieces sized as the BF16 route's, in whole bands
		Outs:    []Tensor{{DType: U8, Shape: []int64{int64(b.Rows), int64(half)}}, {DType: F8E4M3, Shape: []int64{int64(b.Rows), int64(nb)}}},
		outUnit: []int{half, nb},
	}
	re.fill = func(dst [][]byte, u0, u1 int) error {
		p, sc, err := b.appendNVFP4Rows(re.part(dst, 0, u0, u1), re.part(dst, 1, u0, u1), codes[u0*b.Cols:u1*b.Cols], u0, u1, block, s2[0])
		if err != nil {
			return err
		}
		if err := re.inPlace(p, dst, 0, u0, u1); err != nil {
			return err
		}
		return re.inPlace(sc, dst, 1, u0, u1)
	}
	return ex, re, true
}
