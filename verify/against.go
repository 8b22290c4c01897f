package verify

import (
	"context"
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/quantstream/quantstream/arrowio"
	"github.com/quantstream/quantstream/quant"
)

// ModuleSNR is the signal-to-noise ratio of one dequantized module (one expert of a
// batched-matmul experts tensor) against its source weight:
// 10·log10(Σ source² / Σ (source − dequantized)²).
type ModuleSNR struct {
	Module string  `json:"module"`
	Format string  `json:"format"`
	DB     float64 `json:"snr_db"`
	// Exact is set when the dequantized weight equals the source (DB is then 999).
	Exact bool    `json:"exact,omitempty"`
	Floor float64 `json:"floor_db"`
	// ColumnRescaled: AWQ formats smooth the weight by a per-input-channel scale
	// before quantizing it; their SNR is taken after the best per-column rescaling
	// (which a transposed or shuffled weight cannot fake).
	ColumnRescaled bool `json:"column_rescaled,omitempty"`
}

// snrFloors is, per format, the SNR below which a module is reported: far below what
// the format gives. They come from measurements on every golden export against its
// source (TestGoldenAgainstSource prints the lowest module per format; the package doc
// has the figures): about half the lowest measured SNR of the format's precision
// class — 8-bit floats ≥ 31 dB, INT8 ≥ 42 dB, 4-bit formats ≥ 17.8 dB. A transposed,
// shuffled or misplaced weight is uncorrelated with its source: about −3 dB, 0 dB
// after rescaling.
var snrFloors = map[string]float64{
	"fp8":            15,
	"fp8_pc_pt":      15,
	"fp8_pb_wo":      15,
	"mxfp8":          15,
	"int8_wo":        20,
	"int8_sq":        20,
	"int4_awq":       8,
	"w4a8_awq":       8,
	"nvfp4":          8,
	"nvfp4_awq":      8,
	"nvfp4_svdquant": 8,
	"w4a16_nvfp4":    8,
	"w4a8_nvfp4_fp8": 8,
	"mxfp4":          8,
	"w4a8_mxfp4_fp8": 8,
}

// exactDB stands for an exact match in reports (JSON has no infinity).
const exactDB = 999

// chunkElems bounds the elements of one comparison step: the dequantizers allocate a
// few float32 copies of a chunk, so this, times a small factor, is what --against
// holds at a time.
const chunkElems = 1 << 18

// snrAcc accumulates the sums of one module (or expert). A plain comparison needs one
// pass: Σ s² and Σ (s − d)². The rescaled one (AWQ formats) needs two: the first
// finds the per-column scale α_c that best maps d onto s (Σ s·d / Σ d²), the second
// the per-row scale β_r on top of it and the residual left; smoothing scales whole
// input channels (columns) and nvfp4_awq folds a scale into output rows, so a weight
// exported right fits almost exactly, while a shuffled or transposed one does not.
type snrAcc struct {
	ss, ee   float64
	rescaled bool
	pass     int       // 0 or 1 (rescaled only)
	sd, dd   []float64 // per column, pass 0
	alpha    []float64 // per column, after pass 0
	noise    float64   // Σ residual, pass 1
}

func newAcc(cols int64, rescaled bool) *snrAcc {
	a := &snrAcc{rescaled: rescaled}
	if rescaled {
		a.sd, a.dd = make([]float64, cols), make([]float64, cols)
	}
	return a
}

// add accumulates a chunk of rows of the source s and the dequantized d, row-major
// with cols columns.
func (a *snrAcc) add(s, d []float32, cols int) {
	switch {
	case !a.rescaled || a.pass == 0:
		for i, x := range s {
			fs, fd := float64(x), float64(d[i])
			if a.pass == 0 {
				a.ss += fs * fs
				a.ee += (fs - fd) * (fs - fd)
			}
			if a.rescaled {
				c := i % cols
				a.sd[c] += fs * fd
				a.dd[c] += fd * fd
			}
		}
	default:
		for r := 0; r+cols <= len(s); r += cols {
			var sd, dd, ss float64
			for c := range cols {
				fs, fd := float64(s[r+c]), a.alpha[c]*float64(d[r+c])
				sd += fs * fd
				dd += fd * fd
				ss += fs * fs
			}
			if dd > 0 {
				a.noise += max(ss-sd*sd/dd, 0)
			} else {
				a.noise += ss
			}
		}
	}
}

// next ends a pass; it reports whether another pass over the same data is needed.
func (a *snrAcc) next() bool {
	if !a.rescaled || a.pass == 1 {
		return false
	}
	a.alpha = make([]float64, len(a.sd))
	for c := range a.sd {
		if a.dd[c] > 0 {
			a.alpha[c] = a.sd[c] / a.dd[c]
		}
	}
	a.pass = 1
	return true
}

// db is the SNR; exact when nothing differs. ok is false for an all-zero source;
// db is NaN when the dequantized weight holds NaN or ±Inf.
func (a *snrAcc) db() (db float64, exact, ok bool) {
	noise := a.ee
	if a.rescaled && !math.IsNaN(a.noise) {
		noise = min(a.noise, a.ee)
	}
	switch {
	case a.ss == 0:
		return 0, false, false
	case math.IsNaN(noise) || math.IsInf(noise, 0):
		return math.NaN(), false, true
	case noise == 0:
		return exactDB, true, true
	}
	return 10 * math.Log10(a.ss/noise), false, true
}

// against dequantizes every quantized module of a with quant's dequantizers, a chunk
// of rows at a time, and compares it with the weight of the same name in source.
func against(ctx context.Context, a *analysis, source string, r *Report, progress func(Progress)) error {
	src, err := arrowio.OpenCheckpoint(source)
	if err != nil {
		r.add(Finding{Severity: Error, Check: CheckAgainst, File: source, Message: fmt.Sprintf("cannot open the source: %v", err)})
		return nil
	}
	defer src.Close()
	s := &snr{ctx: ctx, a: a, r: r, src: src, progress: progress}
	var work []*module
	for _, m := range a.mods {
		if m.Format != "" && !m.bad {
			work = append(work, m)
			s.total += a.c.tensors[m.Weight].bytes()
		}
	}
	var missing []string
	for _, m := range work {
		st, ok := sourceOf(src, m)
		if !ok {
			missing = append(missing, m.Weight)
			continue
		}
		if !floatDType(st.DType) {
			r.add(Finding{Severity: Note, Check: CheckAgainst, Tensor: m.Weight,
				Message: fmt.Sprintf("not compared: the source weight is %v (quantized); compare against the checkpoint it dequantizes to", st.DType)})
			continue
		}
		if !slices.Equal(st.shape, m.Logical) {
			r.add(Finding{Severity: Error, Check: CheckAgainst, Tensor: m.Weight,
				Message: fmt.Sprintf("the source weight %s is %v, the export's (unpacked) weight %v: transposed, misplaced or another model", st.Name, st.shape, m.Logical)})
			continue
		}
		if err := s.module(m, st); err != nil {
			return err
		}
	}
	switch {
	case len(missing) > 0 && len(missing) == len(work):
		r.add(Finding{Severity: Error, Check: CheckAgainst, File: source,
			Message: fmt.Sprintf("no quantized module of the checkpoint has its weight in the source (e.g. %s): not the model it was quantized from", missing[0])})
	case len(missing) > 0:
		r.add(Finding{Severity: Warning, Check: CheckAgainst, File: source,
			Message: fmt.Sprintf("%d quantized weights are not in the source and were not compared (e.g. %s)", len(missing), missing[0])})
	}
	return nil
}

type snr struct {
	ctx         context.Context
	a           *analysis
	r           *Report
	src         *arrowio.Checkpoint
	progress    func(Progress)
	done, total int64
	qbuf, sbuf  []byte
	srcBuf      []byte
}

// readRef reads n bytes at off of a source tensor.
func readRef(t arrowio.TensorRef, off, n int64, buf *[]byte) ([]byte, error) {
	if int64(cap(*buf)) < n {
		*buf = make([]byte, n)
	}
	p := (*buf)[:n]
	if n == 0 {
		return p, nil
	}
	got, err := t.File.Section(t.TensorHeader).ReadAt(p, off)
	if int64(got) == n {
		return p, nil
	}
	if err == nil {
		err = fmt.Errorf("short read")
	}
	return nil, fmt.Errorf("verify: %s: tensor %q: %w", t.File.Path, t.Name, err)
}

// part reads bytes [off, off+n) of a checkpoint tensor as a tensor of the given
// shape.
func (s *snr) part(t *tensor, off, n int64, shape []int64, buf *[]byte) (*quant.Tensor, error) {
	if err := s.ctx.Err(); err != nil {
		return nil, err
	}
	b, err := readRef(arrowio.TensorRef{TensorHeader: t.th, File: t.file}, off, n, buf)
	if err != nil {
		return nil, err
	}
	return &quant.Tensor{DType: t.DType, Shape: shape, Data: b}, nil
}

func (s *snr) whole(name string) (*quant.Tensor, error) {
	if name == "" {
		return nil, nil
	}
	t := s.a.c.tensors[name]
	var buf []byte
	return s.part(t, 0, t.bytes(), t.Shape, &buf)
}

// module compares one module. rows visits the module (one expert of BMM experts) a
// chunk of rows at a time as source and dequantized values; a rescaled comparison
// visits it twice.
func (s *snr) module(m *module, st srcView) error {
	c := s.a.c
	w := c.tensors[m.Weight]
	scale := c.tensors[m.tensors[roleScale]]
	s2, err := s.whole(m.tensors[roleScale2])
	if err != nil {
		return err
	}
	rescaled := strings.Contains(m.Format, "awq") || strings.Contains(m.Format, "svdquant")
	if m.BMM {
		E, B := m.Logical[0], m.Logical[2]
		for e := range E {
			acc := newAcc(B, rescaled)
			for {
				err := s.bmm(m, w, scale, s2, st, e, func(sv, dv []float32) { acc.add(sv, dv, int(B)) })
				if err != nil {
					return err
				}
				if !acc.next() {
					break
				}
			}
			s.tick(w.bytes() / E)
			s.report(m, fmt.Sprintf("%s[expert %d]", m.Weight, e), acc)
		}
		return nil
	}
	cols := m.Logical[1]
	acc := newAcc(cols, rescaled)
	for {
		if err := s.rows(m, w, scale, s2, st, func(sv, dv []float32) { acc.add(sv, dv, int(cols)) }); err != nil {
			return err
		}
		if !acc.next() {
			break
		}
	}
	s.tick(w.bytes())
	s.report(m, m.Weight, acc)
	return nil
}

// rows visits a 2-D module a chunk of logical rows at a time.
func (s *snr) rows(m *module, w, scale *tensor, s2 *quant.Tensor, st srcView, visit func(sv, dv []float32)) error {
	rows, cols := m.Logical[0], m.Logical[1]
	unit := int64(1)
	switch m.Format {
	case "int4_awq", "w4a8_awq":
		unit = 2 // two output rows per packed row
	case "fp8_pb_wo":
		unit = int64(m.Group)
	}
	per := max(chunkElems/max(cols, 1)/unit, 1) * unit
	for r0 := int64(0); r0 < rows; r0 += per {
		r1 := min(r0+per, rows)
		q, sc, err := s.rows2D(m, w, scale, r0, r1)
		if err != nil {
			return err
		}
		deq, err := quant.FromQuantizedWeight(*q, sc, s2, m.Format, m.Group, quant.F32)
		if err != nil {
			return fmt.Errorf("verify: dequantizing %s rows [%d, %d): %w", m.Weight, r0, r1, err)
		}
		sv, err := s.source(st, r0*cols, (r1-r0)*cols)
		if err != nil {
			return err
		}
		dv, err := quant.Float32s(deq)
		if err != nil {
			return err
		}
		visit(sv, dv)
	}
	return nil
}

// rows2D slices logical rows [r0, r1) of a 2-D module: its stored weight rows and
// the matching part of its weight_scale, shaped as quant's dequantizers take them.
func (s *snr) rows2D(m *module, w, scale *tensor, r0, r1 int64) (*quant.Tensor, *quant.Tensor, error) {
	wRow := w.bytes() / w.Shape[0]
	q0, q1 := r0, r1
	if m.Format == "int4_awq" || m.Format == "w4a8_awq" {
		q0, q1 = r0/2, r1/2
	}
	q, err := s.part(w, q0*wRow, (q1-q0)*wRow, []int64{q1 - q0, w.Shape[1]}, &s.qbuf)
	if err != nil {
		return nil, nil, err
	}
	if scale == nil {
		return q, nil, nil
	}
	switch {
	case len(scale.Shape) == 0: // per tensor (or one FP8 block)
		sc, err := s.part(scale, 0, scale.bytes(), scale.Shape, &s.sbuf)
		return q, sc, err
	case m.Format == "fp8_pb_wo": // [O/B, 1, I/B, 1]: a stripe of block rows
		b := int64(m.Group)
		k0, k1 := r0/b, ceilDiv(r1, b)
		stripe := scale.bytes() / scale.Shape[0]
		sc, err := s.part(scale, k0*stripe, (k1-k0)*stripe, []int64{k1 - k0, 1, scale.Shape[2], 1}, &s.sbuf)
		return q, sc, err
	default: // one scale row (or one scale) per logical row
		per := scale.bytes() / scale.Shape[0]
		shape := slices.Clone(scale.Shape)
		shape[0] = r1 - r0
		sc, err := s.part(scale, r0*per, (r1-r0)*per, shape, &s.sbuf)
		return q, sc, err
	}
}

// bmm visits expert e of a batched-matmul experts weight [E, A, B] a chunk of rows
// of A at a time (a misplaced expert stands out: each expert is reported on its own).
func (s *snr) bmm(m *module, w, scale *tensor, s2 *quant.Tensor, st srcView, e int64, visit func(sv, dv []float32)) error {
	A, B := m.Logical[1], m.Logical[2]
	unit := int64(1)
	if strings.Contains(m.Format, "nvfp4") {
		unit = int64(m.Group)
	}
	per := max(chunkElems/max(B, 1)/unit, 1) * unit
	for a0 := int64(0); a0 < A; a0 += per {
		a1 := min(a0+per, A)
		deq, err := s.bmmChunk(m, w, scale, s2, e, a0, a1)
		if err != nil {
			return err
		}
		sv, err := s.source(st, (e*A+a0)*B, (a1-a0)*B)
		if err != nil {
			return err
		}
		visit(sv, deq)
	}
	return nil
}

// bmmChunk dequantizes rows [a0, a1) of expert e of a BMM weight into [a1−a0, B]
// float32 values in the source's layout.
func (s *snr) bmmChunk(m *module, w, scale *tensor, s2 *quant.Tensor, e, a0, a1 int64) ([]float32, error) {
	E, A, B := m.Logical[0], m.Logical[1], m.Logical[2]
	rows := a1 - a0
	switch m.Format {
	case "fp8", "fp8_pc_pt":
		q, err := s.part(w, (e*A+a0)*B, rows*B, []int64{rows, B}, &s.qbuf)
		if err != nil {
			return nil, err
		}
		// One scale for the expert: the tensor's, or the expert's entry of [E].
		off := int64(0)
		if scale.numel() == E && E > 1 {
			off = e * 4
		}
		sc, err := s.part(scale, off, 4, []int64{}, &s.sbuf)
		if err != nil {
			return nil, err
		}
		deq, err := quant.FromQuantizedWeight(*q, sc, nil, "fp8", 0, quant.F32)
		if err != nil {
			return nil, fmt.Errorf("verify: dequantizing %s expert %d: %w", m.Weight, e, err)
		}
		return quant.Float32s(deq)
	case "mxfp4", "w4a8_mxfp4_fp8": // [E, A, B/2], scales [E, A, B/g]: rows as in 2-D
		half, nb := B/2, B/int64(m.Group)
		q, err := s.part(w, (e*A+a0)*half, rows*half, []int64{rows, half}, &s.qbuf)
		if err != nil {
			return nil, err
		}
		sc, err := s.part(scale, (e*A+a0)*nb, rows*nb, []int64{rows, nb}, &s.sbuf)
		if err != nil {
			return nil, err
		}
		deq, err := quant.FromQuantizedWeight(*q, sc, nil, m.Format, m.Group, quant.F32)
		if err != nil {
			return nil, fmt.Errorf("verify: dequantizing %s expert %d: %w", m.Weight, e, err)
		}
		return quant.Float32s(deq)
	}
	// NVFP4 [E, A/2, B] packed along A with scales [E, A/g, B]: ModelOpt quantized the
	// transpose [B, A]; dequantize that and read it back transposed.
	g := int64(m.Group)
	q, err := s.part(w, (e*A/2+a0/2)*B, rows/2*B, []int64{rows / 2, B}, &s.qbuf)
	if err != nil {
		return nil, err
	}
	sc, err := s.part(scale, (e*A/g+a0/g)*B, rows/g*B, []int64{rows / g, B}, &s.sbuf)
	if err != nil {
		return nil, err
	}
	qt, err := quant.TransposeLast2(*q)
	if err != nil {
		return nil, err
	}
	st, err := quant.TransposeLast2(*sc)
	if err != nil {
		return nil, err
	}
	deq, err := quant.FromQuantizedWeight(qt, &st, s2, m.Format, m.Group, quant.F32)
	if err != nil {
		return nil, fmt.Errorf("verify: dequantizing %s expert %d: %w", m.Weight, e, err)
	}
	back, err := quant.TransposeLast2(deq) // [B, rows] → [rows, B]
	if err != nil {
		return nil, err
	}
	return quant.Float32s(back)
}

// srcView is the source weight of a module: a tensor, or one expert's slice of a
// transformers-5 fused experts tensor, starting at element off.
type srcView struct {
	arrowio.TensorRef
	off   int64
	shape []int64
}

// sourceOf finds the source weight of m: the tensor of the same name, else, for an
// expert exported per expert ("<x>.experts.<e>.gate_proj.weight"), its rows of the
// fused "<x>.experts.gate_up_proj" [E, 2I, H] (gate first, then up), "up_proj"
// [E, I, H] or "down_proj" [E, H, I] that a transformers-5 checkpoint holds.
func sourceOf(src *arrowio.Checkpoint, m *module) (srcView, bool) {
	if t, ok := src.Lookup(m.Weight); ok {
		return srcView{TensorRef: t, shape: t.Shape}, true
	}
	if m.BMM || m.Expert < 0 || len(m.Logical) != 2 {
		return srcView{}, false
	}
	parent, proj := splitLast(m.Name)
	container, _ := splitLast(parent)
	O, I, e := m.Logical[0], m.Logical[1], int64(m.Expert)
	pick := func(name string, rows, row0 int64) (srcView, bool) {
		t, ok := src.Lookup(container + "." + name)
		if !ok || len(t.Shape) != 3 || e >= t.Shape[0] || t.Shape[1] != rows || t.Shape[2] != I {
			return srcView{}, false
		}
		return srcView{TensorRef: t, off: (e*rows + row0) * I, shape: []int64{O, I}}, true
	}
	switch proj {
	case "gate_proj":
		return pick("gate_up_proj", 2*O, 0)
	case "up_proj":
		if v, ok := pick("gate_up_proj", 2*O, O); ok {
			return v, true
		}
		return pick("up_proj", O, 0)
	case "down_proj":
		return pick("down_proj", O, 0)
	}
	return srcView{}, false
}

// source reads n elements at element offset off of a module's source weight as
// float32.
func (s *snr) source(st srcView, off, n int64) ([]float32, error) {
	es := int64(st.DType.Size())
	b, err := readRef(st.TensorRef, (st.off+off)*es, n*es, &s.srcBuf)
	if err != nil {
		return nil, err
	}
	return quant.Float32s(quant.Tensor{DType: st.DType, Shape: []int64{n}, Data: b})
}

func (s *snr) tick(n int64) {
	s.done += n
	if s.progress != nil {
		s.progress(Progress{Phase: "against", Done: s.done, Total: s.total})
	}
}

func (s *snr) report(m *module, id string, acc *snrAcc) {
	db, exact, ok := acc.db()
	if !ok {
		s.r.add(Finding{Severity: Note, Check: CheckAgainst, Tensor: id, Message: "not compared: the source weight is all zero"})
		return
	}
	if math.IsNaN(db) {
		s.r.add(Finding{Severity: Error, Check: CheckAgainst, Tensor: id,
			Message: "the dequantized weight holds NaN or Inf: its scales are not finite (engines serve NaN for this module)"})
		return
	}
	floor, known := snrFloors[m.Format]
	e := ModuleSNR{Module: id, Format: m.Format, DB: db, Exact: exact, Floor: floor, ColumnRescaled: acc.rescaled}
	s.r.SNR = append(s.r.SNR, e)
	switch {
	case !known:
		s.r.add(Finding{Severity: Note, Check: CheckAgainst, Tensor: id, Message: fmt.Sprintf("SNR %s; verify has no floor for format %s", fmtDB(db), m.Format)})
	case db < floor:
		s.r.add(Finding{Severity: Error, Check: CheckAgainst, Tensor: id,
			Message: fmt.Sprintf("SNR %s against the source, far below what %s gives (floor %.0f dB): the dequantized weight does not match its source (transposed, shuffled or misplaced rows, or wrong scales)", fmtDB(db), m.Format, floor)})
	}
}
