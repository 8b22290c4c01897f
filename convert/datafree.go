package convert

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"math"
	"os"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/quantstream/quantstream"
	"github.com/quantstream/quantstream/arch"
	"github.com/quantstream/quantstream/arrowio"
	"github.com/quantstream/quantstream/internal/parallel"
	"github.com/quantstream/quantstream/modelopt"
	"github.com/quantstream/quantstream/pipeline"
	"github.com/quantstream/quantstream/quant"
	"github.com/quantstream/quantstream/stages"
)

// dataFree resolves the recipe against the checkpoint's headers and returns the
// quantizer table plus the calibration stage that adds each weight quantizer's
// amax to its layer (ModelOpt's max calibration with forward_loop=None depends on
// the weights alone, so it can run layer by layer). It also returns the sha256 of
// the resolved recipe's JSON (rules included), for the fingerprint.
//
// Tensors for which src.mtp.Has is true are not modules of the model (hf_ptq's MTP
// layers): no quantizer is derived for them. With Options.CastMXFP4ToNVFP4 the
// weight quantizers are forced static and each MXFP4 projection's quantizer must be
// a static NVFP4 one, whose buffers ck already carries (quantsrc.CastMXFP4).
func dataFree(ck *arrowio.Checkpoint, side map[string]string, opt Options, fams *arch.Registry, mem memory.Allocator, src *source) (stages.Quantizers, *calibrateStage, []quantstream.TensorInfo, string, error) {
	q, cs, extra, r, err := dataFreeRecipe(ck, side, opt, fams, mem, src)
	if err != nil {
		return nil, nil, nil, "", err
	}
	b, err := r.MarshalJSON()
	if err != nil {
		return nil, nil, nil, "", err
	}
	return q, cs, extra, sha256Hex(b), nil
}

func dataFreeRecipe(ck *arrowio.Checkpoint, side map[string]string, opt Options, fams *arch.Registry, mem memory.Allocator, src *source) (stages.Quantizers, *calibrateStage, []quantstream.TensorInfo, *modelopt.Recipe, error) {
	r, err := modelopt.ResolveRecipe(opt.Recipe, opt.KVCache)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	if opt.CastMXFP4ToNVFP4 {
		r = modelopt.ForceWeightQuantizersStatic(r)
	}
	// Later rules win, as entries added to a ModelOpt quant_cfg after the preset's.
	r.Rules = append(slices.Clip(r.Rules), opt.Rules...)
	cfgPath := side["config.json"]
	if cfgPath == "" {
		return nil, nil, nil, nil, fmt.Errorf("convert: no config.json in %s: a recipe is applied per architecture", strings.Join(opt.Inputs, ", "))
	}
	cfgJSON, err := os.ReadFile(cfgPath)
	if err != nil {
		return nil, nil, nil, nil, err
	}
	// The family of the registry the export plan uses (the user's --arch files
	// included): the quantizers derived here follow the rules the export applies.
	cfg, err := arch.ParseConfig(cfgJSON)
	if err != nil {
		return nil, nil, nil, nil, fmt.Errorf("%w (%s)", err, cfgPath)
	}
	fam, err := fams.Detect(cfg)
	if err != nil {
		return nil, nil, nil, nil, fmt.Errorf("%w:\n%w", ErrPlan, err)
	}
	shapes := map[string][]int64{}
	dtypes := map[string]quant.DType{}
	for _, t := range ck.Tensors() {
		if src.mtp.Has(t.Name) {
			continue
		}
		shapes[t.Name] = t.Shape
		dtypes[t.Name] = t.DType
	}
	q, err := modelopt.DataFreeFor(r, cfg, fam, shapes)
	if errors.Is(err, modelopt.ErrModel) {
		// The checkpoint's structure: a plan problem, reported with the others.
		return nil, nil, nil, nil, fmt.Errorf("%w:\n%w", ErrPlan, err)
	}
	if err != nil {
		return nil, nil, nil, nil, err
	}
	if opt.KVCache != "" {
		if err := checkKVCoverage(q, shapes, opt.KVCache); err != nil {
			return nil, nil, nil, nil, fmt.Errorf("%w:\n%w", ErrPlan, err)
		}
	}
	if opt.CastMXFP4ToNVFP4 {
		if err := checkCast(q, src); err != nil {
			return nil, nil, nil, nil, err
		}
	}
	cs, extra, unfit, err := newCalibrateStage(q, dtypes, mem, "the checkpoint lacks")
	if err != nil {
		return nil, nil, nil, nil, err
	}
	if len(unfit) > 0 {
		// Found from headers, all at once, so that plan reports what convert hits.
		return nil, nil, nil, nil, fmt.Errorf("%w:\n%w", ErrPlan, errors.Join(unfit...))
	}
	return q.Table, cs, extra, r, nil
}

// kvProjections are the key/value projection names of attention modules.
var kvProjections = map[string]bool{
	"k_proj": true, "v_proj": true, "qkv_proj": true, "query_key_value": true, "c_attn": true,
	"kv_a_proj_with_mqa": true, "kv_b_proj": true,
}

// checkKVCoverage refuses a KV-cache recipe (--kv-cache) when a module holding
// key/value projections got no KV-cache quantizers (<attn>.k_bmm_quantizer): the
// model rules recognise an attention module by its query projection (q_proj,
// qkv_proj, …), and ModelOpt's _QuantAttention quantizes every transformers
// *Attention class, DeepSeek's MLA included (q_a_proj, kv_a_proj_with_mqa), so
// converting without them would silently drop the scales the user asked for.
func checkKVCoverage(q *modelopt.Quantized, shapes map[string][]int64, kv string) error {
	var missing []string
	seen := map[string]bool{}
	for _, n := range slices.Sorted(maps.Keys(shapes)) {
		mod, ok := strings.CutSuffix(n, ".weight")
		if !ok || len(shapes[n]) != 2 {
			continue
		}
		i := strings.LastIndexByte(mod, '.')
		if i < 0 || !kvProjections[mod[i+1:]] || seen[mod[:i]] {
			continue
		}
		parent := mod[:i]
		seen[parent] = true
		if _, ok := q.Slot(parent + ".k_bmm_quantizer"); !ok {
			missing = append(missing, fmt.Sprintf("%s (%s)", parent, mod[i+1:]))
		}
	}
	if len(missing) == 0 {
		return nil
	}
	return fmt.Errorf("convert: --kv-cache %s: %d attention module(s) get no KV-cache quantizers, e.g. %s: quantstream recognises an attention module by q_proj, qkv_proj, query_key_value or c_attn, and ModelOpt quantizes this one's keys and values too (_QuantAttention), in a layout no golden case pins; convert without --kv-cache",
		kv, len(missing), strings.Join(missing[:min(3, len(missing))], ", "))
}

// newCalibrateStage returns the calibration stage for q and the headers of the amax
// buffers it adds, given the dtype of every checkpoint tensor by name. A quantizer
// whose weight is not in dtypes is an error, "which <lacks>". Weights that
// CalibrateAmax cannot calibrate (quant.CheckCalibrationDType) do not stop it: unfit
// has one error for each, so that a caller can report them all at once.
func newCalibrateStage(q *modelopt.Quantized, dtypes map[string]quant.DType, mem memory.Allocator, lacks string) (cs *calibrateStage, added []quantstream.TensorInfo, unfit []error, err error) {
	cs = &calibrateStage{q: q, mem: mem, byWeight: map[string][]quantstream.TensorInfo{}, globals: map[string][]string{}}
	statics := q.StaticGlobals()
	for _, qn := range q.Table.Names() {
		shape, ok := q.AmaxShapes[qn]
		tq := q.Table[qn]
		if !ok || !tq.Enabled {
			continue
		}
		if _, given := dtypes[qn+"._amax"]; given {
			// The input sets it (the MXFP4 cast's closed form, quantsrc.CastMXFP4).
			continue
		}
		slot, ok := q.Slot(qn)
		if !ok || slot.Kind != modelopt.WeightSlot || slot.Name != qn {
			continue
		}
		dt, ok := dtypes[slot.Weight]
		if !ok {
			return nil, nil, nil, fmt.Errorf("convert: quantizer %s calibrates on %s, which %s", qn, slot.Weight, lacks)
		}
		if err := quant.CheckCalibrationDType(dt); err != nil {
			unfit = append(unfit, fmt.Errorf("convert: quantizer %s calibrates on %s: %w", qn, slot.Weight, err))
		}
		info := quantstream.TensorInfo{
			Name:  qn + "._amax",
			DType: quant.CalibratedAmaxDType(tq, dt, len(slot.WeightShape)),
			Shape: shape,
		}
		cs.byWeight[slot.Weight] = append(cs.byWeight[slot.Weight], info)
		added = append(added, info)
		if members, ok := statics[qn]; ok {
			// promote_static_block_weight_quantizers: the global amax, float32.
			g := quantstream.TensorInfo{Name: qn + "._global_amax", DType: quant.F32, Shape: []int64{}}
			for _, m := range members {
				cs.globals[g.Name] = append(cs.globals[g.Name], m+"._amax")
			}
			cs.byWeight[slot.Weight] = append(cs.byWeight[slot.Weight], g)
			added = append(added, g)
		}
	}
	// constant_amax: the buffer is the configured value, added to the layer of the
	// module the quantizer belongs to.
	for _, qn := range slices.Sorted(maps.Keys(q.Constants)) {
		anchor := constantAnchor(qn)
		if _, ok := dtypes[anchor]; !ok {
			return nil, nil, nil, fmt.Errorf("convert: quantizer %s has a constant_amax, but its module's weight %s %s", qn, anchor, lacks)
		}
		info := quantstream.TensorInfo{Name: qn + "._amax", DType: quant.F32, Shape: []int64{}}
		cs.byWeight[anchor] = append(cs.byWeight[anchor], info)
		added = append(added, info)
	}
	return cs, added, unfit, nil
}

// constantAnchor is the weight of the module an input quantizer belongs to:
// <m>.weight for <m>.input_quantizer, <c>.<attr> for <c>.<attr>_input_quantizer
// (batched-matmul and fused experts).
func constantAnchor(qn string) string {
	if m, ok := strings.CutSuffix(qn, ".input_quantizer"); ok {
		return m + ".weight"
	}
	return strings.TrimSuffix(qn, "_input_quantizer")
}

// calibrateStage adds the weight quantizers' amax buffers to each layer, computed
// from the layer's own weights.
type calibrateStage struct {
	q        *modelopt.Quantized
	mem      memory.Allocator
	byWeight map[string][]quantstream.TensorInfo // weight tensor -> amax buffers it yields
	// globals maps the _global_amax of each static NVFP4 weight quantizer to the
	// _amax buffers it is the maximum of (modelopt.Quantized.StaticGlobals).
	globals map[string][]string
	// fp8 are the weights that arrive coded (quant.FP8Block.FromCoded; set by the
	// Job before it runs, read-only while a pipeline runs): their per-tensor amax
	// comes from the codes (fp8Amax).
	fp8 map[string]quant.FP8Block
	// headsChain says the stage is the first of the conversion's chain, so its
	// layers come from arrowio's reader with quantstream.DefaultAppendRoom (set by
	// the Job before it plans or runs; read-only while a pipeline runs).
	headsChain bool
}

var (
	_ quantstream.Stage     = (*calibrateStage)(nil)
	_ pipeline.BufferReuser = (*calibrateStage)(nil)
)

// NewBytes is the pipeline's charge for what Process allocates: nothing for a layer
// without amax buffers (handed on), only the buffers for a layer straight from the
// reader, which leaves room for them (appendRoom; Layer.Extend appends in place),
// else the copy.
func (s *calibrateStage) NewBytes(in quantstream.LayerInfo, out []quantstream.TensorInfo) int64 {
	want := s.added(in.Tensors)
	if len(want) == 0 {
		return 0
	}
	added, err := infosBytes(want)
	if err == nil && s.headsChain {
		return added
	}
	all, err := infosBytes(out)
	if err != nil {
		return math.MaxInt64 // Plan validated these headers; never reached
	}
	return all
}

// appendRoom is the append room the reader leaves after layer li when the stage
// heads the chain (arrowio.Source.WithAppendRoom): the amax buffers it adds.
func (s *calibrateStage) appendRoom(li quantstream.LayerInfo) int64 {
	n, err := infosBytes(s.added(li.Tensors))
	if err != nil {
		return 0
	}
	return n
}

func infosBytes(ts []quantstream.TensorInfo) (int64, error) {
	var n int64
	for _, t := range ts {
		b, err := t.DataBytes()
		if err != nil {
			return 0, err
		}
		n += b
	}
	return n, nil
}

func (s *calibrateStage) Name() string { return "calibrate" }

func (s *calibrateStage) added(in []quantstream.TensorInfo) []quantstream.TensorInfo {
	var out []quantstream.TensorInfo
	for _, t := range in {
		out = append(out, s.byWeight[t.Name]...)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Plan appends the amax buffers, sorted by name, after the layer's tensors.
func (s *calibrateStage) Plan(in quantstream.LayerInfo) ([]quantstream.TensorInfo, error) {
	return append(append([]quantstream.TensorInfo(nil), in.Tensors...), s.added(in.Tensors)...), nil
}

// Process computes the layer's weight amaxes and returns a new layer with the input
// tensors followed by the amax buffers (calibrateStage.Plan's order). It releases l.
func (s *calibrateStage) Process(ctx context.Context, l *quantstream.Layer) (*quantstream.Layer, error) {
	defer l.Release()
	tensors := l.Tensors()
	infos := l.Info().Tensors
	want := s.added(infos)
	if len(want) == 0 {
		l.Retain()
		return l, nil
	}
	amax, err := s.amax(ctx, tensors, want)
	if err != nil {
		return nil, err
	}
	// The amax buffers go after the last tensor, in the room the reader left
	// (quantstream.DefaultAppendRoom): no copy of the layer. Without room, copy it.
	b, inPlace, err := l.Extend(s.mem, want)
	if err != nil {
		return nil, err
	}
	if !inPlace {
		b, err = quantstream.NewLayerBuilder(s.mem, quantstream.LayerInfo{Index: l.Index(), Prefix: l.Prefix(), Tensors: append(infos, want...)}, quantstream.BuildOptions{})
		if err != nil {
			return nil, err
		}
	}
	defer b.Release()
	var tasks []parallel.Task
	if !inPlace {
		for i, t := range tensors {
			tasks = append(tasks, parallel.Copy(b.Data(i), t.Data)...)
		}
	}
	for j, w := range want {
		if err := putAmax(b.Data(len(tensors)+j), amax, w); err != nil {
			return nil, err
		}
	}
	if err := parallel.Run(ctx, tasks); err != nil {
		return nil, err
	}
	return b.Finish()
}

// putAmax copies the calibrated buffer w into dst, checking it against the plan.
func putAmax(dst []byte, amax map[string]quant.Tensor, w quantstream.TensorInfo) error {
	a, ok := amax[w.Name]
	if !ok {
		return fmt.Errorf("%w: calibration produced no %s", pipeline.ErrPlanMismatch, w.Name)
	}
	if len(a.Data) != len(dst) || a.DType != w.DType {
		return fmt.Errorf("%w: calibration produced %s %v %v, planned %s %v", pipeline.ErrPlanMismatch, w.Name, a.DType, a.Shape, w.DType, w.Shape)
	}
	copy(dst, a.Data)
	return nil
}

// amax calibrates the buffers want on the layer's tensors, on all cores (a maximum
// does not depend on how it is split). A per-tensor amax of a whole float weight
// (the data-free NVFP4 and FP8 recipes) is max |x| over its bit patterns in chunks;
// every other layout (blocks, channels, experts) is quant.CalibrateAmax reduced by
// ranges of rows (rowAmax).
func (s *calibrateStage) amax(ctx context.Context, tensors []quantstream.Tensor, want []quantstream.TensorInfo) (map[string]quant.Tensor, error) {
	byName := make(map[string]quant.Tensor, len(tensors))
	for _, t := range tensors {
		byName[t.Name] = t.Tensor
	}
	out := map[string]quant.Tensor{}
	var rows []*rowAmax
	var tasks []parallel.Task
	type fast struct {
		info   quantstream.TensorInfo
		weight string
		parts  []uint32
	}
	var fasts []*fast
	var globals []quantstream.TensorInfo
	for _, w := range want {
		if _, ok := s.globals[w.Name]; ok {
			globals = append(globals, w) // once the amaxes are known
			continue
		}
		qn := strings.TrimSuffix(w.Name, "._amax")
		if v, ok := s.q.Constants[qn]; ok {
			a, err := quant.FromFloat32(quant.F32, []int64{}, []float32{v})
			if err != nil {
				return nil, err
			}
			out[w.Name] = a
			continue
		}
		slot, ok := s.q.Slot(qn)
		if !ok {
			return nil, fmt.Errorf("convert: no quantizer %s", qn)
		}
		wt, ok := byName[slot.Weight]
		if !ok {
			return nil, fmt.Errorf("convert: %s calibrates on %s, which is not in the layer", qn, slot.Weight)
		}
		if geom, coded := s.fp8[slot.Weight]; coded {
			if slot.Expert >= 0 || quant.Numel(w.Shape) != 1 || wt.DType != quant.BF16 {
				return nil, fmt.Errorf("%w: %s calibrates on the coded FP8 weight %s, but not as one per-tensor amax", pipeline.ErrPlanMismatch, qn, slot.Weight)
			}
			f, err := fp8Amax(geom, wt, slot.Weight)
			if err != nil {
				return nil, err
			}
			tasks = append(tasks, f.tasks...)
			fasts = append(fasts, &fast{info: w, weight: slot.Weight, parts: f.parts})
			continue
		}
		if slot.Expert >= 0 || quant.Numel(w.Shape) != 1 || absMaxBits(wt.DType, nil) == nil || wt.Check() != nil {
			r, err := newRowAmax(s.q.Table[qn], qn, slot, wt)
			if errors.Is(err, quant.ErrNoAmax) {
				continue // no buffer: putAmax reports the plan's
			}
			if err != nil {
				return nil, err
			}
			rows = append(rows, r)
			tasks = append(tasks, r.tasks()...)
			continue
		}
		f := &fast{info: w, weight: slot.Weight}
		esize := int64(wt.DType.Bits() / 8)
		n := int64(len(wt.Data)) / esize
		per := int64(parallel.ChunkBytes) / esize
		f.parts = make([]uint32, (n+per-1)/per)
		for k := range f.parts {
			lo, hi := int64(k)*per, min(int64(k+1)*per, n)
			tasks = append(tasks, func() error {
				f.parts[k] = absMaxBits(wt.DType, wt.Data[lo*esize:hi*esize])()
				return nil
			})
		}
		fasts = append(fasts, f)
	}
	if err := parallel.Run(ctx, tasks); err != nil {
		return nil, err
	}
	for _, f := range fasts {
		var m uint32
		for _, p := range f.parts {
			m = max(m, p)
		}
		dt := byName[f.weight].DType
		v, finite := bitsValue(dt, m)
		if !finite {
			return nil, fmt.Errorf("quantizer %s: weight %s: %w: detected nan or inf values in amax",
				strings.TrimSuffix(f.info.Name, "._amax"), f.weight, quant.ErrAssertion)
		}
		a, err := quant.FromFloat32(f.info.DType, f.info.Shape, []float32{v})
		if err != nil {
			return nil, err
		}
		out[f.info.Name] = a
	}
	for _, r := range rows {
		a, err := r.c.Amax(r.cells)
		if err != nil {
			return nil, fmt.Errorf("quantizer %s: weight %s: %w", r.quantizer, r.weight, err)
		}
		out[r.quantizer+"._amax"] = a
	}
	for _, g := range globals {
		var best float32
		for _, m := range s.globals[g.Name] {
			a, ok := out[m]
			if !ok {
				a, ok = byName[m]
			}
			if !ok {
				return nil, fmt.Errorf("convert: %s is the maximum of %s, which is not in the layer", g.Name, m)
			}
			v, err := quant.Float32s(a)
			if err != nil {
				return nil, err
			}
			for _, x := range v {
				best = max(best, x)
			}
		}
		t, err := quant.FromFloat32(quant.F32, []int64{}, []float32{best})
		if err != nil {
			return nil, err
		}
		out[g.Name] = t
	}
	return out, nil
}

// codedAmax is the per-tensor amax of a coded block-FP8 weight, reduced by bands
// of rows into parts of BF16 magnitude bit patterns.
type codedAmax struct {
	parts []uint32
	tasks []parallel.Task
}

// fp8Amax lays out the amax of the coded block-FP8 weight wt (layout geom): max
// calibration on the BF16 weight it decodes to is max |bf16(f32(q)·s)|, and that
// is the largest magnitude code of each block decoded under its scale
// (quant.FP8Block.AmaxBF16): the same BF16 bit pattern, read from a byte a weight
// rather than two.
func fp8Amax(geom quant.FP8Block, wt quant.Tensor, name string) (*codedAmax, error) {
	b, codes, err := geom.FromCoded(wt.Data)
	if err != nil {
		return nil, fmt.Errorf("tensor %s: %w", name, err)
	}
	f := &codedAmax{}
	per := max(1, parallel.ChunkBytes/max(1, 2*b.Cols)) // rows a piece, as the BF16 weight's
	for r0 := 0; r0 < b.Rows; r0 += per {
		r1, k := min(r0+per, b.Rows), len(f.parts)
		f.parts = append(f.parts, 0)
		f.tasks = append(f.tasks, func() error {
			m, err := b.AmaxBF16(codes[r0*b.Cols:r1*b.Cols], r0, r1)
			if err != nil {
				return fmt.Errorf("tensor %s: %w", name, err)
			}
			f.parts[k] = uint32(m)
			return nil
		})
	}
	return f, nil
}

// fusableAmax reports whether every buffer the stage calibrates on weight is a
// per-tensor amax of the whole weight (or a constant), which fp8Amax computes from
// the codes: the weights a coded source may hand on to this stage.
func (s *calibrateStage) fusableAmax(weight string) bool {
	for _, w := range s.byWeight[weight] {
		if _, ok := s.globals[w.Name]; ok {
			return false
		}
		qn := strings.TrimSuffix(w.Name, "._amax")
		if _, ok := s.q.Constants[qn]; ok {
			continue
		}
		slot, ok := s.q.Slot(qn)
		if !ok || slot.Weight != weight || slot.Expert >= 0 || quant.Numel(w.Shape) != 1 {
			return false
		}
	}
	return true
}

// rowAmax is one weight quantizer's amax reduced by ranges of rows
// (quant.RowCalibration) into cells.
type rowAmax struct {
	quantizer, weight string
	c                 *quant.RowCalibration
	cells             []uint32
	mu                sync.Mutex // guards the cells that several ranges reduce into
}

// newRowAmax lays out the calibration of quantizer qn on its weight wt (on expert
// slot.Expert of a fused-experts weight), with errors as modelopt's WeightAmax
// words them.
func newRowAmax(q *quant.Quantizer, qn string, slot *modelopt.Slot, wt quant.Tensor) (*rowAmax, error) {
	if slot.Expert >= 0 {
		// w[e] of a fused [E, ...] weight, sharing its bytes.
		if err := wt.Check(); err != nil {
			return nil, fmt.Errorf("quantizer %s: weight %s: %w", qn, slot.Weight, err)
		}
		if len(wt.Shape) < 2 || int64(slot.Expert) >= wt.Shape[0] {
			return nil, fmt.Errorf("quantizer %s: weight %s: %w: expert %d of shape %v", qn, slot.Weight, modelopt.ErrModel, slot.Expert, wt.Shape)
		}
		per := len(wt.Data) / int(wt.Shape[0])
		wt = quant.Tensor{DType: wt.DType, Shape: wt.Shape[1:], Data: wt.Data[slot.Expert*per : (slot.Expert+1)*per]}
	}
	c, err := quant.NewRowCalibration(q, wt)
	if err != nil {
		if errors.Is(err, quant.ErrNoAmax) {
			return nil, err
		}
		return nil, fmt.Errorf("quantizer %s: weight %s: %w", qn, slot.Weight, err)
	}
	return &rowAmax{quantizer: qn, weight: slot.Weight, c: c, cells: make([]uint32, c.Cells())}, nil
}

// tasks reduce the weight in parallel.ChunkBytes ranges of rows. A range whose
// cells no other range touches (per channel, per block of the last axis) reduces
// straight into them; one that shares them (per tensor, 2-D blocks cut by the
// range) reduces into a buffer of its own and merges it under r.mu.
func (r *rowAmax) tasks() []parallel.Task {
	return parallel.Rows(r.c.Rows(), r.c.RowBytes(), func(r0, r1 int) error {
		lo, hi, shared := r.c.Span(r0, r1)
		if !shared {
			r.c.Reduce(r.cells[lo:hi], r0, r1)
			return nil
		}
		part := make([]uint32, hi-lo)
		r.c.Reduce(part, r0, r1)
		r.mu.Lock()
		defer r.mu.Unlock()
		for k, x := range part {
			r.cells[lo+k] = max(r.cells[lo+k], x)
		}
		return nil
	})
}

// absMaxBits returns a function computing the largest magnitude bit pattern (sign
// cleared) among data's elements of dtype dt, nil when dt is not a float format it
// knows. For IEEE-style formats the magnitude bits of finite values order like
// the values, and infinities and NaNs sort above every finite value.
func absMaxBits(dt quant.DType, data []byte) func() uint32 {
	switch dt {
	case quant.BF16, quant.F16:
		return func() uint32 { return quant.MaxMagnitude16(data) }
	case quant.F32:
		return func() uint32 { return quant.MaxMagnitude32(data) }
	}
	return nil
}

// bitsValue decodes a magnitude bit pattern of dt; finite is false for Inf or NaN.
func bitsValue(dt quant.DType, m uint32) (v float32, finite bool) {
	switch dt {
	case quant.BF16:
		return math.Float32frombits(m << 16), m < 0x7F80
	case quant.F16:
		return quant.F16ToF32(uint16(m)), m < 0x7C00
	default:
		return math.Float32frombits(m), m < 0x7F800000
	}
}
