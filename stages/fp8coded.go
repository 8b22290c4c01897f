package stages

import (
	"fmt"
	"slices"
	"strings"

	quantstream "github.com/quantstream/quantstream"
	"github.com/quantstream/quantstream/quant"
)

// Block-FP8 weights that reach the export coded (quant.FP8Block.FromCoded: their
// codes and scales in the BF16 slot) instead of decoded: where the module's export
// is NVFP4 with block scales computed from the weight, the fused kernel
// (quant.PrepareFP8BlockRowExport) writes the bytes the BF16 weight would give,
// without the BF16 weight. A coded weight is held in the layer's working set as
// its F8_E4M3 codes under its BF16 header: reading it as a float tensor
// (tensorSet.get) is refused, and an export that cannot take the fused kernel
// decodes it first, so nothing computes on codes as if they were BF16.

// FP8Fusable returns, sorted, the weights among fp8 (block-FP8 weights of the
// source by name, layouts without scales) whose export Process can compute from
// their codes: 2-D linears of one module exported as dynamic-block NVFP4
// (nvfp4, w4a16_nvfp4, w4a8_nvfp4_fp8) from BF16, with no static global amax, no
// pre_quant_scale (so no resmoothing or fold rewrites the weight before it is
// quantized), NVFP4 blocks inside FP8 blocks, in an export that is not AWQ or
// SVDQuant. Every other weight keeps the decoded route.
func (p *Plan) FP8Fusable(fp8 map[string]quant.FP8Block) []string {
	if strings.Contains(p.ModelFormat, "awq") || strings.Contains(p.ModelFormat, "svdquant") {
		return nil
	}
	if p.dtype != quant.Invalid && p.dtype != quant.BF16 {
		return nil
	}
	uses := map[string]int{}
	ok := map[string]bool{}
	for _, lp := range p.Layers {
		for _, m := range lp.Modules {
			uses[m.Weight]++
			b, coded := fp8[m.Weight]
			if !coded {
				continue
			}
			ok[m.Weight] = fusableModule(m, b)
		}
	}
	var out []string
	for w, good := range ok {
		if good && uses[w] == 1 {
			out = append(out, w)
		}
	}
	slices.Sort(out)
	return out
}

// fusableModule: m's export is quant.PrepareFP8BlockRowExport's case on b.
func fusableModule(m *Module, b quant.FP8Block) bool {
	switch m.Format {
	case "nvfp4", "w4a16_nvfp4", "w4a8_nvfp4_fp8":
	default:
		return false
	}
	wq := m.WQ
	return m.Attr == "weight" && !m.BMM && !m.FromFused && !m.Fused && m.GAmax == "" && m.PQS == "" &&
		wq != nil && wq.Enabled && len(wq.Sequential) == 0 && !strings.Contains(wq.Class, "SVDQuant") && !staticNVFP4Classes[wq.Class] &&
		m.Block >= 2 && m.Block%2 == 0 && b.Cols%m.Block == 0 && b.BlockCols%m.Block == 0 && b.Fits()
}

// TakeFP8Coded tells the stage which input weights arrive coded, with their
// layouts (without scales): the names Plan.FP8Fusable chose, whose source hands
// them on coded (quantsrc.Scheme.CodeFP8). Call it before the first Process.
func (s *Stage) TakeFP8Coded(fp8 map[string]quant.FP8Block) { s.fp8 = fp8 }

// setCoded puts the coded weights of the layer into ts as their codes.
func (s *Stage) setCoded(ts *tensorSet, in []quantstream.Tensor) error {
	for _, t := range in {
		b, ok := s.fp8[t.Name]
		if !ok {
			continue
		}
		if t.DType != quant.BF16 || len(t.Shape) != 2 || t.Shape[0] != int64(b.Rows) || t.Shape[1] != int64(b.Cols) {
			return fmt.Errorf("%w: coded FP8 weight %s arrives as %s %v, not BF16 [%d, %d]", ErrPlanMismatch, t.Name, t.DType, t.Shape, b.Rows, b.Cols)
		}
		b, codes, err := b.FromCoded(t.Data)
		if err != nil {
			return fmt.Errorf("tensor %s: %w", t.Name, err)
		}
		if ts.fp8 == nil {
			ts.fp8 = map[string]quant.FP8Block{}
		}
		ts.fp8[t.Name] = b
		ts.data[t.Name] = quant.Tensor{DType: quant.F8E4M3, Shape: t.Shape, Data: codes}
	}
	return nil
}

// exportFP8Coded exports m whose weight is coded: through the fused kernel as
// exportLater places a row export, reporting true; where that is not exactly the
// case it decodes the weight into ts (a BF16 tensor of its own) and reports false,
// so that the general path exports it.
func exportFP8Coded(ts *tensorSet, m *Module, hdrs map[string]quantstream.TensorInfo, dtype quant.DType, mode quant.DivMode) (bool, error) {
	b := ts.fp8[m.Weight]
	codes := ts.data[m.Weight].Data
	if rowPath && m.WQ != nil && m.GAmax == "" {
		ex, re, ok := quant.PrepareFP8BlockRowExport(m.quantModule(ts), b, codes, dtype, mode)
		if ok && placeRowExport(ts, m, hdrs, ex, re) {
			delete(ts.fp8, m.Weight)
			return true, nil
		}
	}
	w := quant.Tensor{DType: quant.BF16, Shape: []int64{int64(b.Rows), int64(b.Cols)}, Data: make([]byte, 2*len(codes))}
	if err := b.DequantRows(w.Data, codes, 0, b.Rows); err != nil {
		return false, fmt.Errorf("tensor %s: %w", m.Weight, err)
	}
	delete(ts.fp8, m.Weight)
	ts.set(m.Weight, w)
	return false, nil
}

// checkCodedDone refuses a layer in which a coded weight was neither exported by
// the fused kernel nor decoded: its codes would otherwise reach the output.
func checkCodedDone(ts *tensorSet) error {
	for _, n := range sortedKeys(ts.fp8) {
		return fmt.Errorf("%w: coded FP8 weight %s was not exported (%d such weights)", ErrPlanMismatch, n, len(ts.fp8))
	}
	return nil
}
