package quantsrc

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/quantstream/quantstream"
	"github.com/quantstream/quantstream/arrowio"
	"github.com/quantstream/quantstream/internal/parallel"
	"github.com/quantstream/quantstream/quant"
)

// fp8Keys are the quantization_config keys of a block-FP8 source: transformers'
// FineGrainedFP8Config (activation_scheme, weight_block_size, modules_to_not_convert,
// dequantize) and DeepSeek's own (fmt, scale_fmt).
var fp8Keys = []string{"quant_method", "fmt", "activation_scheme", "weight_block_size", "scale_fmt", "modules_to_not_convert", "ignored_layers", "dequantize"}

// detectFP8 checks a quant_method "fp8" source: the config fields, then every
// tensor against them. Every F8_E4M3 tensor must be a 2-D <m>.weight with an F32
// <m>.weight_scale_inv of one scale per block, outside modules_to_not_convert;
// every scale must have its weight; nothing else may be quantized data.
func detectFP8(qc *quantConfig, byName map[string]quantstream.TensorInfo, tensors []quantstream.TensorInfo) (*Scheme, error) {
	if err := checkKeys(qc, fp8Keys...); err != nil {
		return nil, err
	}
	s := &Scheme{Method: FP8Block, Key: qc.key, BlockRows: 128, BlockCols: 128}
	unsupported := func(what string) error {
		return fmt.Errorf("%w: %s: %s %s, which quantstream does not read; %s; %s", ErrUnsupported, qc.where, qc.key, what, Supported, remedy)
	}
	if f, ok := qc.raw["fmt"]; ok && qc.str("fmt") != "e4m3" {
		return nil, unsupported(fmt.Sprintf("has fmt %s (only e4m3)", f))
	}
	if a, ok := qc.raw["activation_scheme"]; ok && qc.str("activation_scheme") != "dynamic" {
		return nil, unsupported(fmt.Sprintf("has activation_scheme %s (static activation scales; only dynamic)", a))
	}
	if f, ok := qc.raw["scale_fmt"]; ok && string(f) != "null" && qc.str("scale_fmt") != "float" && qc.str("scale_fmt") != "ue8m0" {
		return nil, unsupported(fmt.Sprintf("has scale_fmt %s (only float and ue8m0)", f))
	}
	// Absent: transformers' default block of 128×128. null: one scale per tensor.
	if raw, ok := qc.raw["weight_block_size"]; ok {
		if string(raw) == "null" {
			return nil, unsupported("has weight_block_size null (per-tensor FP8 scales; only 2-D block scales)")
		}
		var b []int
		if err := json.Unmarshal(raw, &b); err != nil || len(b) != 2 || b[0] <= 0 || b[1] <= 0 {
			return nil, fmt.Errorf("%w: %s: %s.weight_block_size is %s, want two positive integers", ErrInvalid, qc.where, qc.key, raw)
		}
		s.BlockRows, s.BlockCols = b[0], b[1]
	}
	nc, err := parseNotConverted(qc)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrInvalid, qc.where, err)
	}
	var problems []error
	problem := func(format string, a ...any) {
		problems = append(problems, fmt.Errorf("%w: "+format, append([]any{ErrInvalid}, a...)...))
	}
	known := map[string]bool{}
	for _, t := range tensors {
		switch {
		case t.DType == quant.F8E4M3:
			if !strings.HasSuffix(t.Name, ".weight") || len(t.Shape) != 2 {
				problem("tensor %s is F8_E4M3 %v, but an fp8 source stores 2-D <module>.weight tensors only", t.Name, t.Shape)
				continue
			}
			module := strings.TrimSuffix(t.Name, ".weight")
			scale := t.Name + "_scale_inv"
			sc, ok := byName[scale]
			want := []int64{ceilDiv(t.Shape[0], int64(s.BlockRows)), ceilDiv(t.Shape[1], int64(s.BlockCols))}
			switch {
			case !ok:
				problem("F8_E4M3 weight %s has no %s", t.Name, scale)
			case sc.DType != quant.F32:
				problem("%s is %s, want F32", scale, sc.DType)
			case !slices.Equal(sc.Shape, want):
				problem("%s has shape %v; weight %s %v in blocks of %d×%d needs %v", scale, sc.Shape, t.Name, t.Shape, s.BlockRows, s.BlockCols, want)
			case nc.has(module):
				problem("weight %s is F8_E4M3, but %s lists module %s in modules_to_not_convert (kept in high precision)", t.Name, qc.key, module)
			default:
				s.fp8 = append(s.fp8, fp8Weight{weight: t.Name, scale: scale, rows: int(t.Shape[0]), cols: int(t.Shape[1])})
			}
			known[t.Name], known[scale] = true, true
		case strings.HasSuffix(t.Name, ".weight_scale_inv"):
			w := strings.TrimSuffix(t.Name, "_scale_inv")
			if byName[w].DType != quant.F8E4M3 {
				problem("%s has no F8_E4M3 weight %s", t.Name, w)
			}
			known[t.Name] = true
		}
	}
	if other := quantizedTensors(tensors, known); len(other) > 0 {
		problem("tensors that an fp8 source does not hold, so quantstream cannot tell what they are: %s", listSome(other))
	}
	if len(s.fp8) == 0 && len(problems) == 0 {
		problem("%s says quant_method fp8, but no tensor is F8_E4M3", qc.key)
	}
	if len(problems) > 0 {
		return nil, fmt.Errorf("%s:\n%w", qc.where, errors.Join(problems...))
	}
	sort.Slice(s.fp8, func(i, j int) bool { return s.fp8[i].weight < s.fp8[j].weight })
	return s, nil
}

func ceilDiv(a, b int64) int64 { return (a + b - 1) / b }

// fp8Derived is the BF16 tensor a block-FP8 weight reads as, computed from the
// weight and its scales.
func (s *Scheme) fp8Derived(w fp8Weight) arrowio.Derived {
	block := quant.FP8Block{Rows: w.rows, Cols: w.cols, BlockRows: s.BlockRows, BlockCols: s.BlockCols}
	return arrowio.Derived{
		TensorInfo: quantstream.TensorInfo{Name: w.weight, DType: quant.BF16, Shape: []int64{int64(w.rows), int64(w.cols)}},
		From:       []string{w.weight, w.scale},
		Fill: func(ctx context.Context, dst []byte, from []arrowio.TensorRef) error {
			if s.coded[w.weight] {
				return fillFP8Coded(ctx, dst, block, from[0], from[1])
			}
			return fillFP8(ctx, dst, block, from[0], from[1])
		},
	}
}

// FP8Layouts returns the layout (without scales) of every block-FP8 weight of the
// source, by name.
func (s *Scheme) FP8Layouts() map[string]quant.FP8Block {
	out := make(map[string]quant.FP8Block, len(s.fp8))
	for _, w := range s.fp8 {
		out[w.weight] = quant.FP8Block{Rows: w.rows, Cols: w.cols, BlockRows: s.BlockRows, BlockCols: s.BlockCols}
	}
	return out
}

// CodeFP8 makes the view hand the named block-FP8 weights on coded instead of
// decoded: each one's BF16 slot of a layer holds its codes and block scales
// (quant.FP8Block.FromCoded reads them), checked as the decode checks them (the
// scales by quant.FP8Block.Check, the codes for NaN) so that a read fails where
// and as the decoded read would. It is for a conversion whose stages read those
// weights through the fused block-FP8 kernels and nothing else; it returns each
// weight's layout (without scales) for them. Call it before the view is read.
// A name that is not a block-FP8 weight of the scheme, or one whose coded layout
// does not fit its slot, is refused.
func (s *Scheme) CodeFP8(weights []string) (map[string]quant.FP8Block, error) {
	byName := make(map[string]fp8Weight, len(s.fp8))
	for _, w := range s.fp8 {
		byName[w.weight] = w
	}
	out := make(map[string]quant.FP8Block, len(weights))
	for _, n := range weights {
		w, ok := byName[n]
		if !ok {
			return nil, fmt.Errorf("quantsrc: %s is not a block-FP8 weight of the source", n)
		}
		b := quant.FP8Block{Rows: w.rows, Cols: w.cols, BlockRows: s.BlockRows, BlockCols: s.BlockCols}
		if !b.Fits() {
			return nil, fmt.Errorf("quantsrc: %s [%d, %d] in %d×%d blocks: its codes and scales do not fit its BF16 slot", n, w.rows, w.cols, s.BlockRows, s.BlockCols)
		}
		out[n] = b
	}
	if s.coded == nil {
		s.coded = map[string]bool{}
	}
	for n := range out {
		s.coded[n] = true
	}
	return out, nil
}

// readFP8Scale reads a block-FP8 weight's weight_scale_inv into b.Scale and checks
// it against the weight's shape (FP8Block.Check), naming the scale tensor.
func readFP8Scale(b *quant.FP8Block, scale arrowio.TensorRef) error {
	sb := make([]byte, scale.Size())
	if err := scale.File.ReadInto(scale.TensorHeader, sb); err != nil {
		return err
	}
	sv, err := quant.Float32s(quant.Tensor{DType: quant.F32, Shape: scale.Shape, Data: sb})
	if err != nil {
		return err
	}
	b.Scale = sv
	if err := b.Check(); err != nil {
		return fmt.Errorf("%s: %w", scale.Name, err)
	}
	return nil
}

// fillFP8 decodes a block-FP8 weight into dst in bands of whole block rows (about
// parallel.ChunkBytes of codes each), on all cores; each band reads its codes into
// a buffer of its own, so a weight is never held twice.
func fillFP8(ctx context.Context, dst []byte, b quant.FP8Block, weight, scale arrowio.TensorRef) error {
	if err := readFP8Scale(&b, scale); err != nil {
		return err
	}
	bandRows := max(1, parallel.ChunkBytes/max(1, b.Cols)/b.BlockRows) * b.BlockRows
	sec := weight.Section()
	var tasks []parallel.Task
	for r0 := 0; r0 < b.Rows; r0 += bandRows {
		r1 := min(r0+bandRows, b.Rows)
		tasks = append(tasks, func() error {
			q := codeBuffer((r1 - r0) * b.Cols)
			defer putCodeBuffer(q)
			if n, err := sec.ReadAt(*q, int64(r0*b.Cols)); n != len(*q) {
				return fmt.Errorf("reading %s rows [%d,%d): %w", weight.Name, r0, r1, err)
			}
			return b.DequantRows(dst[2*r0*b.Cols:2*r1*b.Cols], *q, r0, r1)
		})
	}
	return parallel.Run(ctx, tasks)
}

// fillFP8Coded writes a block-FP8 weight's coded layout into dst, its BF16 slot:
// the codes read straight into place in bands (as fillFP8 reads them), each band
// checked for NaN codes as DequantRows checks it, then the checked scales.
func fillFP8Coded(ctx context.Context, dst []byte, b quant.FP8Block, weight, scale arrowio.TensorRef) error {
	if err := readFP8Scale(&b, scale); err != nil {
		return err
	}
	n := b.Rows * b.Cols
	if len(dst) != 2*n || !b.Fits() {
		return fmt.Errorf("quantsrc: %s: coded FP8 weight of %d bytes in a slot of %d", weight.Name, b.CodedBytes(), len(dst))
	}
	if err := b.PutCodedScales(dst[n : n+4*len(b.Scale)]); err != nil {
		return err
	}
	bandRows := max(1, parallel.ChunkBytes/max(1, b.Cols)/b.BlockRows) * b.BlockRows
	sec := weight.Section()
	var tasks []parallel.Task
	for r0 := 0; r0 < b.Rows; r0 += bandRows {
		r1 := min(r0+bandRows, b.Rows)
		tasks = append(tasks, func() error {
			q := dst[r0*b.Cols : r1*b.Cols]
			if n, err := sec.ReadAt(q, int64(r0*b.Cols)); n != len(q) {
				return fmt.Errorf("reading %s rows [%d,%d): %w", weight.Name, r0, r1, err)
			}
			return b.CheckCodes(q, r0)
		})
	}
	return parallel.Run(ctx, tasks)
}

// codes is a pool of read buffers for code bands, so that decoding a model does
// not allocate one per band.
var codes sync.Pool

func codeBuffer(n int) *[]byte {
	if p, ok := codes.Get().(*[]byte); ok && cap(*p) >= n {
		*p = (*p)[:n]
		return p
	}
	b := make([]byte, n)
	return &b
}

func putCodeBuffer(p *[]byte) { codes.Put(p) }
