package quant

import (
	"math/rand/v2"
	"strings"
	"testing"
)

// BenchmarkKernelLevels runs what the conversion stages call, on one core, at every
// kernel level this machine has (portable is the Go code the assembly replaces):
// RowExport.Fill over a 4096×4096 BF16 weight (8×512×4096 for batched-matmul
// experts) in pieces of 4 MiB of input, as the export stage splits layers
// (layerbuf.ChunkBytes), and the weight-amax reductions of calibration. MB/s are
// of BF16 input.
func BenchmarkKernelLevels(b *testing.B) {
	r := rand.New(rand.NewPCG(11, 12))
	const piece = 4 << 20
	for _, format := range []string{"fp8", "fp8_pc_pt", "fp8_pb_wo", "int8_wo", "int4_awq", "nvfp4",
		"w4a8_nvfp4_fp8", "mxfp8", "mxfp4", "bmm/nvfp4"} {
		// The recipes' block sizes (the test presets use small ones).
		block := map[string]int{"fp8_pb_wo": 128, "int4_awq": 128}[format]
		shape := []int{4096, 4096}
		name := format
		if f, ok := strings.CutPrefix(format, "bmm/"); ok {
			name, shape = f, []int{8, 512, 4096}
		}
		m := rowsModuleBlocks(b, r, name, block, BF16, shape...)
		_, re, ok := PrepareRowExport(m, BF16, DivIEEE)
		if !ok {
			b.Fatalf("%s: no row export", format)
		}
		dst := make([][]byte, len(re.Outs))
		for k, o := range re.Outs {
			n, _ := o.DType.ByteLen(Numel(o.Shape))
			dst[k] = make([]byte, n)
		}
		per := max(1, int(piece/re.UnitBytes))
		for _, l := range kernelLevels() {
			b.Run("export/"+strings.ReplaceAll(format, "/", "_")+"/"+l.String(), func(b *testing.B) {
				setKernels(b, l)
				b.SetBytes(int64(len(m.Weight.Data)))
				for b.Loop() {
					for u0 := 0; u0 < re.Units; u0 += per {
						if err := re.Fill(dst, u0, min(u0+per, re.Units)); err != nil {
							b.Fatal(err)
						}
					}
				}
			})
		}
	}
	w := fqTestWeight(4096, 4096, 1)
	for _, qc := range []struct {
		name string
		q    *Quantizer
	}{
		{"per_tensor", calibQuantizers[0].q},
		{"per_channel", calibQuantizers[1].q},
		{"int4_blocks128", calibQuantizers[6].q},
		{"nvfp4_blocks16", &Quantizer{NumBits: BitsE2M1, BlockSizes: &BlockSizes{Dims: map[int]int{-1: 16}, Type: "static"}}},
	} {
		c, err := NewRowCalibration(qc.q, w)
		if err != nil {
			b.Fatal(err)
		}
		cells := make([]uint32, c.Cells())
		per := max(1, int(piece/c.RowBytes()))
		for _, l := range kernelLevels() {
			b.Run("amax/"+qc.name+"/"+l.String(), func(b *testing.B) {
				setKernels(b, l)
				b.SetBytes(int64(len(w.Data)))
				for b.Loop() {
					clear(cells)
					for r0 := 0; r0 < c.Rows(); r0 += per {
						lo, _, _ := c.Span(r0, min(r0+per, c.Rows()))
						c.Reduce(cells[lo:], r0, min(r0+per, c.Rows()))
					}
				}
			})
		}
	}
	for _, l := range kernelLevels() {
		b.Run("amax/whole_weight/"+l.String(), func(b *testing.B) {
			setKernels(b, l)
			b.SetBytes(int64(len(w.Data)))
			for b.Loop() {
				MaxMagnitude16(w.Data)
			}
		})
	}
}
