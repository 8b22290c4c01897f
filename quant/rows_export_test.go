package quant

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"strings"
	"testing"
)

// rowsPreset builds the weight and input quantizers of one export format (the
// ModelOpt presets, with small blocks so that tiny weights have several).
func rowsPreset(format string) (wq, iq *Quantizer) {
	e43, e80 := BitsE4M3, BitsE8M0
	fp8 := func() *Quantizer { return &Quantizer{Enabled: true, NumBits: BitsE4M3, FakeQuant: true} }
	off := &Quantizer{NumBits: BitsInt8, FakeQuant: true}
	blocks := func(b int, typ string, sb *NumBits) *BlockSizes {
		return &BlockSizes{Dims: map[int]int{-1: b}, Type: typ, ScaleBits: sb}
	}
	nv := func(b int) *Quantizer {
		return &Quantizer{Enabled: true, NumBits: BitsE2M1, FakeQuant: true, BlockSizes: blocks(b, "dynamic", &e43)}
	}
	mx4 := &Quantizer{Enabled: true, NumBits: BitsE2M1, FakeQuant: true, BlockSizes: blocks(32, "dynamic", &e80)}
	int4 := func() *Quantizer {
		return &Quantizer{Enabled: true, NumBits: BitsInt4, FakeQuant: true, BlockSizes: blocks(16, "static", nil)}
	}
	switch format {
	case "fp8":
		return fp8(), fp8()
	case "fp8_pc_pt":
		w := fp8()
		w.Axis = []int{0}
		return w, off
	case "fp8_pb_wo":
		w := fp8()
		w.BlockSizes = &BlockSizes{Dims: map[int]int{-1: 16, -2: 16}}
		return w, off
	case "int8_sq":
		return &Quantizer{Enabled: true, NumBits: BitsInt8, Axis: []int{0}, FakeQuant: true}, &Quantizer{Enabled: true, NumBits: BitsInt8, FakeQuant: true}
	case "int8_wo":
		return &Quantizer{Enabled: true, NumBits: BitsInt8, Axis: []int{0}, FakeQuant: true}, off
	case "int4_awq":
		return int4(), off
	case "w4a8_awq":
		return &Quantizer{Class: "SequentialQuantizer", Enabled: true, Sequential: []*Quantizer{int4(), fp8()}}, fp8()
	case "nvfp4", "nvfp4_awq":
		return nv(16), nv(16)
	case "w4a16_nvfp4":
		return nv(16), off
	case "w4a8_nvfp4_fp8":
		return nv(32), fp8()
	case "mxfp8":
		return &Quantizer{Enabled: true, NumBits: BitsE4M3, FakeQuant: true, BlockSizes: blocks(32, "dynamic", &e80)}, off
	case "mxfp4":
		return mx4, off
	case "w4a8_mxfp4_fp8":
		return mx4, fp8()
	}
	panic("unknown format " + format)
}

// rowFormats is every registered format (Formats) that a calibrated fake-quant module
// exports to, so that a format added to the registry is covered by the row-export
// tests or fails them (rowsPreset panics) until it is, or is listed here with the
// reason it is not.
func rowFormats(t testing.TB) []string {
	t.Helper()
	notFromModule := map[string]string{
		// The weight is already quantized: a quantizer _scale is exported as it is.
		"fp8_pb_real": "",
		// Classified from a quantizer attribute (svdquant_lora_a) only ModelOpt's
		// SVDQuant class has; its export is nvfp4's, which is covered.
		"nvfp4_svdquant": "",
	}
	var out []string
	for _, f := range Formats() {
		if _, skip := notFromModule[f]; !skip {
			out = append(out, f)
		}
	}
	if len(out) < 10 {
		t.Fatalf("registry lists %v", Formats())
	}
	return out
}

// rowsModule is a calibrated module of format with a random weight of dt and
// shape [rows, cols], or [experts, rows, cols] for batched-matmul experts.
func rowsModule(t testing.TB, r *rand.Rand, format string, dt DType, shape ...int) *Module {
	t.Helper()
	return rowsModuleBlocks(t, r, format, 0, dt, shape...)
}

// rowsModuleBlocks is rowsModule with the weight quantizer's block size set to
// block (every blocked axis), unless block is 0.
func rowsModuleBlocks(t testing.TB, r *rand.Rand, format string, block int, dt DType, shape ...int) *Module {
	t.Helper()
	n := 1
	var shape64 []int64
	for _, d := range shape {
		n *= d
		shape64 = append(shape64, int64(d))
	}
	cols := shape[len(shape)-1]
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(r.NormFloat64() * 0.02)
	}
	v[r.IntN(len(v))] = 0.5 // an outlier, so that blocks differ
	w, err := FromFloat32(dt, shape64, v)
	if err != nil {
		t.Fatal(err)
	}
	wq, iq := rowsPreset(format)
	if block > 0 {
		for _, q := range append([]*Quantizer{wq}, wq.Sequential...) {
			if q.BlockSizes != nil {
				for ax, b := range q.BlockSizes.Dims {
					if b > 0 {
						q.BlockSizes.Dims[ax] = block
					}
				}
			}
		}
	}
	m := &Module{Name: "m", Weight: w, WeightQuantizer: wq, InputQuantizer: iq, BMMExpert: len(shape) == 3}
	calib := func(q *Quantizer) *Tensor {
		a, err := CalibrateAmax(q, w)
		if errors.Is(err, ErrNoAmax) {
			return nil
		}
		if err != nil {
			t.Fatalf("%s: calibrate: %v", format, err)
		}
		return &a
	}
	if len(wq.Sequential) > 0 {
		m.WeightAmaxSeq = []*Tensor{calib(wq.Sequential[0]), calib(wq.Sequential[1])}
	} else {
		m.WeightAmax = calib(wq)
	}
	if iq.Enabled && !IsMXFormat(iq) {
		a, _ := FromFloat32(F32, []int64{}, []float32{2.5})
		m.InputAmax = &a
	}
	if format == "nvfp4_awq" {
		p := make([]float32, cols)
		for i := range p {
			p[i] = 0.5 + float32(i%7)/4
		}
		pqs, _ := FromFloat32(dt, []int64{int64(cols)}, p)
		m.PreQuantScale = &pqs
	}
	return m
}

// TestRowExportMatchesExport: for every format, PrepareRowExport's scales and its
// row kernels run over random row splits give ExportQuantizedWeight's bytes.
func TestRowExportMatchesExport(t *testing.T) {
	formats := append(rowFormats(t), "bmm/fp8", "bmm/mxfp4", "bmm/w4a8_mxfp4_fp8", "bmm/nvfp4", "bmm/w4a16_nvfp4", "bmm/nvfp4_awq")
	r := rand.New(rand.NewPCG(1, 2))
	for _, name := range formats {
		format, bmm := strings.CutPrefix(name, "bmm/")
		shape := []int{38, 96}
		if bmm {
			shape = []int{3, 14, 64} // batched-matmul experts [E, in, out]
			if strings.Contains(format, "nvfp4") {
				shape = []int{3, 32, 48} // blocks along "in" (transposed)
			}
		}
		for _, dt := range []DType{BF16, F16, F32} {
			for _, mode := range []DivMode{DivIEEE, DivCUDA} {
				t.Run(name+"/"+dt.String()+"/"+[]string{"ieee", "cuda"}[mode], func(t *testing.T) {
					m := rowsModule(t, r, format, dt, shape...)
					want, err := ExportQuantizedWeight(m, dt, mode)
					if err != nil {
						t.Fatal(err)
					}
					ex, re, ok := PrepareRowExport(m, dt, mode)
					if !ok {
						t.Fatal("no row export")
					}
					dst := make([][]byte, len(re.Outs))
					for k, o := range re.Outs {
						n, _ := o.DType.ByteLen(Numel(o.Shape))
						dst[k] = bytes.Repeat([]byte{0xA5}, int(n))
					}
					for u0 := 0; u0 < re.Units; {
						u1 := min(re.Units, u0+1+r.IntN(4))
						if err := re.Fill(dst, u0, u1); err != nil {
							t.Fatal(err)
						}
						u0 = u1
					}
					same := func(role string, got, want *Tensor) {
						t.Helper()
						if (got == nil) != (want == nil) {
							t.Fatalf("%s: got %v, want %v", role, got, want)
						}
						if got != nil && (got.DType != want.DType || !equalShape(got.Shape, want.Shape) || !bytes.Equal(got.Data, want.Data)) {
							t.Errorf("%s differs: %v %v vs %v %v", role, got.DType, got.Shape, want.DType, want.Shape)
						}
					}
					got := &Tensor{DType: re.Outs[0].DType, Shape: re.Outs[0].Shape, Data: dst[0]}
					same("weight", got, &want.Weight)
					scale := ex.WeightScale
					if len(re.Outs) > 1 {
						if scale != nil {
							t.Fatal("weight_scale both from the buffers and from the rows")
						}
						scale = &Tensor{DType: re.Outs[1].DType, Shape: re.Outs[1].Shape, Data: dst[1]}
					}
					same("weight_scale", scale, want.WeightScale)
					same("weight_scale_2", ex.WeightScale2, want.WeightScale2)
					same("input_scale", ex.InputScale, want.InputScale)
				})
			}
		}
	}
}

func equalShape(a, b []int64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// TestRowExportDeclines: what the row kernels do not cover goes to
// ExportQuantizedWeight (a 3-D weight that is not batched-matmul experts, a
// weight not in the export dtype).
func TestRowExportDeclines(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	m := rowsModule(t, r, "nvfp4", BF16, 4, 32)
	if _, _, ok := PrepareRowExport(m, F16, DivIEEE); ok {
		t.Error("export dtype F16 of a BF16 weight taken by rows")
	}
	m3 := rowsModule(t, r, "nvfp4", BF16, 2, 32, 16)
	m3.BMMExpert = false
	if _, _, ok := PrepareRowExport(m3, BF16, DivIEEE); ok {
		t.Error("3-D NVFP4 weight that is not a batched-matmul expert taken by rows")
	}
	_, re, ok := PrepareRowExport(m, BF16, DivIEEE)
	if !ok {
		t.Fatal("no row export")
	}
	if err := re.Fill([][]byte{make([]byte, 3), make([]byte, 8)}, 0, 1); !errors.Is(err, ErrShape) {
		t.Errorf("short output: %v, want ErrShape", err)
	}
}

// BenchmarkRowExport runs RowExport.Fill over whole weights in pieces of 64 units,
// as Stage.Process does on one core; NVFP4 experts show the cost of the
// transposing gather against the same bytes as a dense weight.
func BenchmarkRowExport(b *testing.B) {
	r := rand.New(rand.NewPCG(7, 8))
	for _, bc := range []struct {
		name, format string
		shape        []int
	}{
		{"nvfp4", "nvfp4", []int{1024, 2048}},
		{"nvfp4_bmm", "nvfp4", []int{4, 512, 1024}},
		{"int4_awq", "int4_awq", []int{1024, 2048}},
		{"mxfp4", "mxfp4", []int{1024, 2048}},
	} {
		m := rowsModule(b, r, bc.format, BF16, bc.shape...)
		_, re, ok := PrepareRowExport(m, BF16, DivIEEE)
		if !ok {
			b.Fatalf("%s: no row export", bc.name)
		}
		dst := make([][]byte, len(re.Outs))
		for k, o := range re.Outs {
			n, _ := o.DType.ByteLen(Numel(o.Shape))
			dst[k] = make([]byte, n)
		}
		b.Run(bc.name, func(b *testing.B) {
			b.SetBytes(int64(len(m.Weight.Data)))
			for b.Loop() {
				for u0 := 0; u0 < re.Units; u0 += 64 {
					if err := re.Fill(dst, u0, min(u0+64, re.Units)); err != nil {
						b.Fatal(err)
					}
				}
			}
		})
	}
}

// TestRegisteredFormatsClassify: for every registered format a module exports to,
// get_quantization_format of its preset's quantizers gives the format's own name, and
// ToQuantizedWeight finds it, so the registry and the classification name the same
// formats.
func TestRegisteredFormatsClassify(t *testing.T) {
	for _, format := range rowFormats(t) {
		t.Run(format, func(t *testing.T) {
			wq, iq := rowsPreset(format)
			m := &Module{Name: "x", Weight: Tensor{DType: BF16, Shape: []int64{32, 64}}, WeightQuantizer: wq, InputQuantizer: iq}
			if format == "nvfp4_awq" {
				m.FusedWithPrequant = true // what makes an NVFP4 module nvfp4_awq
			}
			got, err := QuantizationFormat(m)
			if err != nil || got != format {
				t.Fatalf("get_quantization_format = %q, %v; want %q", got, err, format)
			}
			if _, err := LookupFormat(got); err != nil {
				t.Fatal(err)
			}
		})
	}
}
