package verify

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"strings"

	"github.com/quantstream/quantstream/quant"
)

// chunkBytes bounds each read of tensor data: the data checks and --against hold a
// few chunks at a time, whatever the checkpoint's size.
const chunkBytes = 4 << 20

// E4M3 and E8M0 codes the data checks look for. Part of the formats (quant/doc.go).
const (
	e4m3NaN    = 0x7F // with or without the sign bit
	e4m3Max    = 0x7E // 448, the largest finite E4M3 (NVFP4 block scales clamp here)
	e8m0NaN    = 0xFF
	e2m1MaxMag = 7 // the E2M1 code of ±6
)

// dataChecker runs the data checks of an analysis, one tensor chunk at a time.
type dataChecker struct {
	a         *analysis
	r         *Report
	ctx       context.Context
	progress  func(Progress)
	done      int64
	total     int64
	buf, buf2 []byte
	// scalars holds every per-tensor scale read, by tensor name, for the fused-group
	// comparisons.
	scalars map[string]float32
}

// Progress reports the bytes of tensor data read so far by a phase ("scales",
// "against").
type Progress struct {
	Phase       string
	Done, Total int64
}

// read reads n bytes of t's data at offset off into a reused buffer.
func (d *dataChecker) read(t *tensor, off, n int64, second bool) ([]byte, error) {
	if err := d.ctx.Err(); err != nil {
		return nil, err
	}
	b := &d.buf
	if second {
		b = &d.buf2
	}
	if int64(cap(*b)) < n {
		*b = make([]byte, n)
	}
	p := (*b)[:n]
	if n == 0 {
		return p, nil
	}
	got, err := t.file.Section(t.th).ReadAt(p, off)
	if int64(got) == n {
		err = nil
	} else if err == nil || errors.Is(err, io.EOF) {
		err = fmt.Errorf("%s: tensor %q: short read", t.file.Path, t.Name)
	}
	d.done += n
	if d.progress != nil {
		d.progress(Progress{Phase: "scales", Done: d.done, Total: d.total})
	}
	return p, err
}

func (d *dataChecker) find(sev Severity, t *tensor, format string, args ...any) {
	d.r.add(Finding{Severity: sev, Check: CheckScales, Tensor: t.Name, File: t.base(), Message: fmt.Sprintf(format, args...)})
}

// checkData runs every data check: scales finite and positive where engines divide,
// NaN codes in FP8 and E8M0 bytes, saturated NVFP4 blocks, ModelOpt's all-zero-weight
// quirk, and equal scales across fused groups. It stops at the first I/O error or
// when ctx is done.
func checkData(ctx context.Context, a *analysis, r *Report, progress func(Progress)) error {
	d := &dataChecker{a: a, r: r, ctx: ctx, progress: progress, scalars: map[string]float32{}}
	var work []*module
	for _, m := range a.mods {
		if m.Format == "" || m.bad {
			continue
		}
		work = append(work, m)
		for _, n := range m.tensors {
			d.total += a.c.tensors[n].bytes()
		}
		if readsWeight(m.Format) {
			d.total += a.c.tensors[m.Weight].bytes()
		}
	}
	for _, n := range a.kv {
		d.total += a.c.tensors[n].bytes()
	}
	for _, m := range work {
		if err := d.module(m); err != nil {
			return err
		}
	}
	for _, n := range a.kv {
		t := a.c.tensors[n]
		if len(t.Shape) == 0 && floatDType(t.DType) {
			if err := d.scalar(t, n, "the KV cache is quantized with it"); err != nil {
				return err
			}
		}
	}
	d.compareFused()
	return nil
}

// readsWeight: formats whose weight bytes are checked (FP8 codes that are NaN, NVFP4
// blocks that saturate).
func readsWeight(format string) bool {
	switch format {
	case "fp8", "fp8_pc_pt", "fp8_pb_wo", "mxfp8":
		return true
	}
	return strings.Contains(format, "nvfp4")
}

func (d *dataChecker) module(m *module) error {
	c := d.a.c
	for _, role := range []string{roleScale, roleScale2, roleInput} {
		n, ok := m.tensors[role]
		if !ok {
			continue
		}
		t := c.tensors[n]
		if len(t.Shape) > 1 || t.numel() != 1 || !floatDType(t.DType) {
			continue
		}
		why := "engines multiply by it"
		if role == roleInput {
			why = "engines divide activations by it"
		}
		if role == roleScale2 && strings.Contains(m.Format, "nvfp4") {
			// Zero is ModelOpt's all-zero-weight quirk when the blocks agree; nvfp4Blocks decides.
			v, err := d.readScalar(t)
			if err != nil {
				return err
			}
			d.scalars[n] = v
			if v != 0 {
				d.checkScalar(t, v, why)
			}
			continue
		}
		if err := d.scalar(t, n, why); err != nil {
			return err
		}
	}
	if n, ok := m.tensors[rolePreQuant]; ok {
		if err := d.floats(c.tensors[n], "engines multiply the input by it"); err != nil {
			return err
		}
	}
	scale := c.tensors[m.tensors[roleScale]]
	w := c.tensors[m.Weight]
	switch {
	case strings.Contains(m.Format, "nvfp4"):
		return d.nvfp4Blocks(m, w, scale)
	case m.Format == "mxfp4" || m.Format == "w4a8_mxfp4_fp8" || m.Format == "mxfp8":
		if err := d.codes(scale, func(b byte) bool { return b == e8m0NaN }, "E8M0 block scales are NaN (0xFF)"); err != nil {
			return err
		}
	case scale != nil && scale.numel() > 1:
		if err := d.floats(scale, "engines multiply by it"); err != nil {
			return err
		}
	}
	if m.Format == "fp8" || m.Format == "fp8_pc_pt" || m.Format == "fp8_pb_wo" || m.Format == "mxfp8" {
		return d.codes(w, func(b byte) bool { return b&0x7F == e4m3NaN }, "FP8 weight codes are NaN (0x7F/0xFF): the scale was too small and the cast overflowed (ModelOpt's E4M3 cast does not saturate)")
	}
	return nil
}

func (d *dataChecker) readScalar(t *tensor) (float32, error) {
	b, err := d.read(t, 0, t.bytes(), false)
	if err != nil {
		return 0, err
	}
	return quant.Scalar(quant.Tensor{DType: t.DType, Shape: t.Shape, Data: b})
}

// scalar reads a per-tensor scale, records it and checks it.
func (d *dataChecker) scalar(t *tensor, name, why string) error {
	v, err := d.readScalar(t)
	if err != nil {
		return err
	}
	d.scalars[name] = v
	d.checkScalar(t, v, why)
	return nil
}

func (d *dataChecker) checkScalar(t *tensor, v float32, why string) {
	switch {
	case math.IsNaN(float64(v)) || math.IsInf(float64(v), 0):
		d.find(Error, t, "%v: %s", v, why)
	case v < 0:
		d.find(Error, t, "%v is negative: %s", v, why)
	case v == 0:
		d.find(Error, t, "0: %s (an input_scale of 0 is a division by zero, a weight scale of 0 zeroes the module)", why)
	}
}

// floats checks every element of a float scale tensor: finite and positive.
func (d *dataChecker) floats(t *tensor, why string) error {
	es := int64(t.DType.Size())
	if es == 0 || !floatDType(t.DType) {
		return nil
	}
	var bad, zero, nonfinite int64
	first := int64(-1)
	per := max(chunkBytes/es, 1)
	for i := int64(0); i < t.numel(); i += per {
		n := min(per, t.numel()-i)
		b, err := d.read(t, i*es, n*es, false)
		if err != nil {
			return err
		}
		v, err := quant.Float32s(quant.Tensor{DType: t.DType, Shape: []int64{n}, Data: b})
		if err != nil {
			return err
		}
		for j, x := range v {
			f := float64(x)
			switch {
			case math.IsNaN(f) || math.IsInf(f, 0):
				nonfinite++
			case x < 0:
				bad++
			case x == 0:
				zero++
			default:
				continue
			}
			if first < 0 {
				first = i + int64(j)
			}
		}
	}
	if nonfinite+bad+zero > 0 {
		d.find(Error, t, "%d of %d elements are NaN/Inf, %d negative, %d zero (first at flat index %d): %s", nonfinite, t.numel(), bad, zero, first, why)
	}
	return nil
}

// codes counts the bytes of t for which bad holds.
func (d *dataChecker) codes(t *tensor, bad func(byte) bool, what string) error {
	var n, first int64 = 0, -1
	for off := int64(0); off < t.bytes(); off += chunkBytes {
		b, err := d.read(t, off, min(chunkBytes, t.bytes()-off), false)
		if err != nil {
			return err
		}
		for i, c := range b {
			if bad(c) {
				if first < 0 {
					first = off + int64(i)
				}
				n++
			}
		}
	}
	if n > 0 {
		d.find(Error, t, "%d of %d %s (first at flat index %d)", n, t.numel(), what, first)
	}
	return nil
}

// nvfp4Blocks scans the block scales and packed elements of an NVFP4 module
// together: NaN, negative and zero block scales, and saturated blocks (the scale at
// its clamp of 448 and all elements ±6: values beyond what weight_scale_2 allows were
// clipped). A zero weight_scale_2 whose every block scale is NaN and every element
// code 7 is ModelOpt's export of an all-zero weight: a warning, documented.
func (d *dataChecker) nvfp4Blocks(m *module, w, scale *tensor) error {
	s2 := d.scalars[m.tensors[roleScale2]]
	g := int64(m.Group)
	var blocks, nan, neg, zero, sat, allSeven int64
	firstBad := int64(-1)
	visit := func(sc byte, blk []byte) {
		blocks++
		seven, full := true, true
		for _, b := range blk {
			seven = seven && b == 0x77
			full = full && b&0x7 == e2m1MaxMag && (b>>4)&0x7 == e2m1MaxMag
		}
		if seven {
			allSeven++
		}
		switch {
		case sc&0x7F == e4m3NaN:
			nan++
		case sc&0x80 != 0 && sc != 0x80:
			neg++
		case sc&0x7F == 0:
			zero++
		case sc == e4m3Max && full:
			sat++
		default:
			return
		}
		if firstBad < 0 {
			firstBad = blocks - 1
		}
	}
	var err error
	if m.BMM {
		err = d.nvfp4BMMBlocks(w, scale, g, visit)
	} else {
		err = d.nvfp4RowBlocks(w, scale, g, visit)
	}
	if err != nil {
		return err
	}
	quirk := s2 == 0 && nan == blocks && allSeven == blocks
	switch {
	case quirk:
		d.find(Warning, scale, "weight_scale_2 is 0, every block scale is NaN and every element code 7: ModelOpt's export of an all-zero weight (documented in the golden README, \"NVFP4 with an all-zero weight\"); engines compute NaN·0 for %s, so exclude it or drop the module", m.Weight)
		return nil
	case s2 == 0:
		d.find(Error, w, "weight_scale_2 is 0 but the weight is not ModelOpt's all-zero pattern: engines multiply every block by 0")
	}
	if nan > 0 {
		d.find(Error, scale, "%d of %d NVFP4 block scales are NaN (0x7F/0xFF), first block %d: those blocks dequantize to NaN", nan, blocks, firstBad)
	}
	if neg > 0 {
		d.find(Error, scale, "%d of %d NVFP4 block scales are negative (ModelOpt's block scales are amax-based, never negative)", neg, blocks)
	}
	if zero > 0 {
		d.find(Warning, scale, "%d of %d NVFP4 block scales are 0: those blocks dequantize to 0 (ModelOpt clamps block scales to at least 2^-9)", zero, blocks)
	}
	if sat > 0 {
		d.find(Error, scale, "%d of %d NVFP4 blocks are saturated: block scale at its 448 clamp and every element ±6, so the block's values exceeded what weight_scale_2 allows and were clipped", sat, blocks)
	}
	return nil
}

// nvfp4RowBlocks visits the blocks of a 2-D NVFP4 weight [O, I/2] with scales [O, I/g].
func (d *dataChecker) nvfp4RowBlocks(w, scale *tensor, g int64, visit func(byte, []byte)) error {
	rows, wCols := w.Shape[0], w.Shape[1]
	sCols := scale.Shape[1]
	per := max(chunkBytes/max(wCols, 1), 1)
	for r0 := int64(0); r0 < rows; r0 += per {
		n := min(per, rows-r0)
		wb, err := d.read(w, r0*wCols, n*wCols, false)
		if err != nil {
			return err
		}
		sb, err := d.read(scale, r0*sCols, n*sCols, true)
		if err != nil {
			return err
		}
		for r := range n {
			for j := range sCols {
				visit(sb[r*sCols+j], wb[r*wCols+j*g/2:r*wCols+(j+1)*g/2])
			}
		}
	}
	return nil
}

// nvfp4BMMBlocks visits the blocks of a batched-matmul NVFP4 weight [E, A/2, B] with
// scales [E, A/g, B]: block (k, b) of an expert is column b of packed rows
// [k·g/2, (k+1)·g/2).
func (d *dataChecker) nvfp4BMMBlocks(w, scale *tensor, g int64, visit func(byte, []byte)) error {
	E, half, B := w.Shape[0], w.Shape[1], w.Shape[2]
	kRows := scale.Shape[1]
	rowsPerK := g / 2
	per := max(chunkBytes/max(rowsPerK*B, 1), 1) // scale rows per read
	for e := range E {
		for k0 := int64(0); k0 < kRows; k0 += per {
			n := min(per, kRows-k0)
			wb, err := d.read(w, (e*half+k0*rowsPerK)*B, n*rowsPerK*B, false)
			if err != nil {
				return err
			}
			sb, err := d.read(scale, (e*kRows+k0)*B, n*B, true)
			if err != nil {
				return err
			}
			blk := make([]byte, rowsPerK)
			for k := range n {
				for b := range B {
					for j := range rowsPerK {
						blk[j] = wb[(k*rowsPerK+j)*B+b]
					}
					visit(sb[k*B+b], blk)
				}
			}
		}
	}
	return nil
}

// compareFused checks that fused modules carry equal scalars: input_scale and
// weight_scale_2 across a fused group of a format the export shares them in, and the
// per-tensor weight scales of one expert's gate and up projections.
func (d *dataChecker) compareFused() {
	cmp := func(mods []*module, role, why string) {
		var ref *module
		var rv float32
		for _, m := range mods {
			n, ok := m.tensors[role]
			if !ok {
				continue
			}
			v, ok := d.scalars[n]
			if !ok {
				continue
			}
			if ref == nil {
				ref, rv = m, v
				continue
			}
			if math.Float32bits(v) != math.Float32bits(rv) {
				t := d.a.c.tensors[n]
				d.r.add(Finding{Severity: Error, Check: CheckFusion, Tensor: n, File: t.base(),
					Message: fmt.Sprintf("%v, but %s has %v: %s", v, ref.key(role), rv, why)})
			}
		}
	}
	for _, g := range d.a.groups {
		names := make([]string, len(g))
		for i, m := range g {
			names[i] = m.Name
		}
		why := fmt.Sprintf("%s are fused (one input, one kernel) and ModelOpt gives them one value; an engine keeps one (vLLM takes the max) and dequantizes the others with the wrong scale", strings.Join(names, ", "))
		cmp(g, roleScale2, why)
		cmp(g, roleInput, why)
	}
	for _, p := range d.a.pairs {
		why := "gate and up of one expert are loaded as one w13 tensor with one per-tensor scale (ModelOpt syncs them; vLLM and SGLang take the first or the max)"
		cmp(p[:], roleScale2, why)
		cmp(p[:], roleScale, why)
	}
}
