package stages

import (
	"bytes"
	"maps"
	"math/rand/v2"
	"slices"
	"strconv"
	"testing"

	quantstream "github.com/quantstream/quantstream"
	"github.com/quantstream/quantstream/internal/parallel"
	"github.com/quantstream/quantstream/quant"
)

// TestRowPathMatchesGeneralPath: the row path (quant.PrepareRowExport, filled by
// Stage.Process on all cores) and the general path (quant.ExportQuantizedWeight on
// the whole weight) give the same tensors, byte for byte, in every format, for
// dense linears, transformers-5 fused experts (cut into per-expert slices) and
// batched-matmul experts, with the row path cut into pieces of one unit.
func TestRowPathMatchesGeneralPath(t *testing.T) {
	// Pieces of one row (or row pair) each, so that every piece boundary is tried.
	defer func(n int) { parallel.ChunkBytes = n }(parallel.ChunkBytes)
	parallel.ChunkBytes = 1
	e80 := quant.BitsE8M0
	off := func() *quant.Quantizer { return &quant.Quantizer{NumBits: quant.BitsInt8} }
	fp8 := func() *quant.Quantizer { return fp8Q(true) }
	blocks := func(q *quant.Quantizer, dims map[int]int, typ string, sb *quant.NumBits) func() *quant.Quantizer {
		return func() *quant.Quantizer {
			c := *q
			c.BlockSizes = &quant.BlockSizes{Dims: dims, Type: typ, ScaleBits: sb}
			return &c
		}
	}
	pc := func() *quant.Quantizer { q := fp8Q(true); q.Axis = []int{0}; return q }
	type layer struct {
		name   string
		config string
		build  func(t *testing.T) (map[string]quant.Tensor, table)
	}
	var layers []layer
	dense := append(recipes(),
		recipe{"fp8", fp8, fp8, false, "fp8"},
		recipe{"fp8_pc_pt", pc, off, false, "fp8_pc_pt"},
		recipe{"fp8_pb_wo", blocks(fp8Q(true), map[int]int{-1: 16, -2: 16}, "", nil), off, false, "fp8_pb_wo"},
		recipe{"nvfp4", func() *quant.Quantizer { return nvfp4Q(true) }, func() *quant.Quantizer { return nvfp4Q(true) }, false, "nvfp4"},
		recipe{"mxfp8", blocks(fp8Q(true), map[int]int{-1: 32}, "dynamic", &e80), off, false, "mxfp8"},
		recipe{"mxfp4", func() *quant.Quantizer { return mxfp4Q(true) }, off, false, "mxfp4"},
	)
	// Every format of quant's registry that a fake-quant module exports to has a
	// recipe here, so a newly registered format is exported by both paths or fails.
	covered := map[string]bool{"fp8_pb_real": true, "nvfp4_svdquant": true} // not from a fake-quant module
	for _, rc := range dense {
		covered[rc.format] = true
	}
	for _, f := range quant.Formats() {
		if !covered[f] {
			t.Errorf("registered format %q has no recipe", f)
		}
	}
	for _, rc := range dense {
		layers = append(layers, layer{rc.name, tinyLlamaConfig, func(t *testing.T) (map[string]quant.Tensor, table) { return formatLayer(t, rc) }})
	}
	for _, bc := range []struct {
		name string
		q    func(bool) *quant.Quantizer
		amax bool
	}{{"bmm_fp8", fp8Q, true}, {"bmm_fp8_uncalibrated", fp8Q, false}, {"bmm_mxfp4", mxfp4Q, false}, {"bmm_nvfp4", nvfp4Q, true}} {
		layers = append(layers, layer{bc.name, gptOSSConfig, func(*testing.T) (map[string]quant.Tensor, table) { return bmmLayer(bc.q, bc.amax) }})
	}
	for _, fc := range []struct {
		name string
		q    func(bool) *quant.Quantizer
	}{{"fused_fp8", fp8Q}, {"fused_nvfp4", nvfp4Q}, {"fused_mxfp4", mxfp4Q}} {
		layers = append(layers, layer{fc.name, qwenMoEConfig, func(*testing.T) (map[string]quant.Tensor, table) { return fusedLayer(fc.q) }})
	}
	for _, lc := range layers {
		t.Run(lc.name, func(t *testing.T) {
			sd, qs := lc.build(t)
			plan, err := NewPlan(infosOf(sd), []byte(lc.config), qs, Options{})
			if err != nil {
				t.Fatal(err)
			}
			if len(rowOutputs(t, plan, sd)) == 0 {
				t.Fatal("no weight took the row path")
			}
			fast := processLayer(t, plan, sd, 0)
			rowPath = false
			defer func() { rowPath = true }()
			slow := processLayer(t, plan, sd, 0)
			names := slices.Sorted(maps.Keys(slow))
			if len(fast) != len(slow) {
				t.Fatalf("%d tensors on the row path, %d on the general path", len(fast), len(slow))
			}
			for _, n := range names {
				f, s := fast[n], slow[n]
				if f.DType != s.DType || !slices.Equal(f.Shape, s.Shape) || !bytes.Equal(f.Data, s.Data) {
					t.Errorf("%s: row path %v %v differs from the general path %v %v", n, f.DType, f.Shape, s.DType, s.Shape)
				}
			}
		})
	}
}

// rowOutputs runs the export steps of layer 0 as Stage.Process does and returns
// the names of the outputs left to row jobs.
func rowOutputs(t *testing.T, p *Plan, sd map[string]quant.Tensor) []string {
	t.Helper()
	lp := p.Layer(0)
	ts := &tensorSet{hdr: map[string]quantstream.TensorInfo{}, data: map[string]quant.Tensor{}}
	for _, h := range lp.Inputs {
		ts.set(h.Name, sd[h.Name])
	}
	if _, _, err := p.run(t.Context(), ts, &LayerPlan{Index: lp.Index, Prefix: lp.Prefix}); err != nil {
		t.Fatal(err)
	}
	return slices.Sorted(maps.Keys(ts.later))
}

// fusedLayer is one transformers-5 MoE block, gate_up_proj [E, 2F, H] and
// down_proj [E, H, F] with per-expert weight quantizers q and amaxes (expert 1's
// gate_up amax missing, so that the export fills it from the weight).
func fusedLayer(q func(bool) *quant.Quantizer) (map[string]quant.Tensor, table) {
	const E, F, H = 3, 32, 64
	r := rand.New(rand.NewPCG(5, 6))
	p := "model.layers.0.mlp."
	sd := map[string]quant.Tensor{
		p + "experts.gate_up_proj": bf16Tensor([]int64{E, 2 * F, H}, randVals(r, E*2*F*H, 0.1)),
		p + "experts.down_proj":    bf16Tensor([]int64{E, H, F}, randVals(r, E*H*F, 0.1)),
		p + "gate.weight":          bf16Tensor([]int64{E, H}, randVals(r, E*H, 0.1)),
	}
	qs := table{}
	for _, a := range []string{"gate_up_proj", "down_proj"} {
		for e := range E {
			name := p + "experts." + a + "_weight_quantizers." + strconv.Itoa(e)
			qs[name] = q(true)
			if quant.IsMXFormat(qs[name]) {
				continue // MX formats keep no amax
			}
			if a != "gate_up_proj" || e != 1 {
				sd[name+"._amax"] = bf16Tensor([]int64{}, []float32{0.25 + float32(e)/8})
			}
		}
		qs[p+"experts."+a+"_input_quantizer"] = q(true)
	}
	if in := qs[p+"experts.gate_up_proj_input_quantizer"]; !quant.IsMXFormat(in) {
		sd[p+"experts.gate_up_proj_input_quantizer._amax"] = bf16Tensor([]int64{}, []float32{3})
		sd[p+"experts.down_proj_input_quantizer._amax"] = bf16Tensor([]int64{}, []float32{2})
	}
	return sd, qs
}
