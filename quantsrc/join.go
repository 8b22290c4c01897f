package quantsrc

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/quantstream/quantstream"
	"github.com/quantstream/quantstream/arrowio"
	"github.com/quantstream/quantstream/modelopt"
	"github.com/quantstream/quantstream/quant"
)

// ErrJoin marks calibration state with fused expert quantizers that cannot be
// given to the checkpoint's per-expert weights.
var ErrJoin = errors.New("quantsrc: cannot join fused expert state to per-expert weights")

// fusedQuantizerRE matches a transformers-5 fused experts weight quantizer:
// <c>.{gate_up_proj,up_proj,down_proj}_weight_quantizers.<e>.
var fusedQuantizerRE = regexp.MustCompile(`^(.*experts)\.(gate_up_proj|up_proj|down_proj)_weight_quantizers\.(\d+)$`)

// Joined is calibration state whose fused expert quantizers were given to a hub
// checkpoint's per-expert weights (JoinFused).
type Joined struct {
	View  *arrowio.Checkpoint // the checkpoint with the per-expert buffers
	Table modelopt.Table      // the quantizers under per-expert names
	// Containers lists the experts containers joined ("model.layers.0.mlp.experts").
	Containers []string
}

// JoinFused joins calibration state saved from transformers 5 to a checkpoint that
// stores experts one by one (the hub layout of Qwen3-MoE, DeepSeek-V3, …). In memory
// transformers fuses <c>.<e>.{gate,up}_proj.weight into <c>.gate_up_proj[e] (gate
// rows first) and <c>.<e>.down_proj.weight into <c>.down_proj[e]; ModelOpt's
// quantizers and their buffers are named after those: one
// <c>.gate_up_proj_weight_quantizers.<e> per expert over gate and up, one shared
// <c>.gate_up_proj_input_quantizer, and the same for down_proj (up_proj alone for
// non-gated experts). ModelOpt exports them per expert (moe_utils._export_fused_experts):
// gate and up each get a copy of the expert's weight quantizer, a per-channel or
// per-block amax cut in halves by rows (gate first), a 0-dim amax and the global
// amax shared, and the projection's shared input quantizer. JoinFused writes that
// down as per-expert quantizers (<c>.<e>.gate_proj.weight_quantizer, …) and
// derived buffers under their names, so that the export sees an ordinary
// per-expert MoE, which it can also cut into groups of experts.
//
// A container whose fused weight (<c>.gate_up_proj) is in the checkpoint is left
// alone (the export splits it). Nothing to join returns nil. Anything that cannot
// be joined exactly is ErrJoin: a missing per-expert weight, an enabled weight
// quantizer without an amax (ModelOpt would calibrate it from the fused weight), an
// amax whose rows do not split, a buffer ModelOpt's split does not carry.
func JoinFused(ck *arrowio.Checkpoint, table modelopt.Table) (*Joined, error) {
	type container struct {
		name    string
		first   string // gate_up_proj or up_proj
		experts int
	}
	found := map[string]*container{}
	for _, qn := range table.Names() {
		m := fusedQuantizerRE.FindStringSubmatch(qn)
		if m == nil {
			continue
		}
		c := found[m[1]]
		if c == nil {
			c = &container{name: m[1]}
			found[m[1]] = c
		}
		if m[2] != "down_proj" {
			c.first = m[2]
		}
		e, _ := strconv.Atoi(m[3])
		c.experts = max(c.experts, e+1)
	}
	j := &Joined{Table: modelopt.Table{}}
	for k, v := range table {
		j.Table[k] = v
	}
	var derived []arrowio.Derived
	var hide []string
	var problems []error
	buffers := map[string][]arrowio.TensorRef{} // quantizer -> its buffers
	if len(found) > 0 {
		for _, t := range ck.Tensors() {
			if q, _ := splitLast(t.Name); q != "" {
				buffers[q] = append(buffers[q], t)
			}
		}
	}
	for _, name := range slices.Sorted(maps.Keys(found)) {
		c := found[name]
		if _, fused := ck.Lookup(c.name + "." + c.first); fused || c.first == "" {
			continue
		}
		d, h, err := joinContainer(ck, buffers, j.Table, c.name, c.first, c.experts)
		if err != nil {
			problems = append(problems, err)
			continue
		}
		derived, hide = append(derived, d...), append(hide, h...)
		j.Containers = append(j.Containers, c.name)
	}
	if len(problems) > 0 {
		return nil, errors.Join(problems...)
	}
	if len(j.Containers) == 0 {
		return nil, nil
	}
	v, err := ck.Derive(derived, hide)
	if err != nil {
		return nil, err
	}
	j.View = v
	return j, nil
}

// projection is one per-expert projection of a fused container.
type projection struct {
	proj   string // gate_proj, up_proj, down_proj
	src    string // fused attribute: gate_up_proj, up_proj, down_proj
	row0   int64  // first row of the fused expert slice
	rows   int64
	fused  int64 // rows of the fused expert slice
	shared bool  // the weight quantizer is the first projection's, copied
}

// joinContainer rewrites table in place for one container and returns the derived
// buffers and the fused buffers they replace.
func joinContainer(ck *arrowio.Checkpoint, buffers map[string][]arrowio.TensorRef, table modelopt.Table, c, first string, experts int) ([]arrowio.Derived, []string, error) {
	fail := func(format string, a ...any) error {
		return fmt.Errorf("%w: %s: "+format, append([]any{ErrJoin, c}, a...)...)
	}
	var derived []arrowio.Derived
	var hide []string
	hidden := map[string]bool{}
	hideOnce := func(n string) {
		if !hidden[n] {
			hidden[n] = true
			hide = append(hide, n)
		}
	}
	for e := range experts {
		es := strconv.Itoa(e)
		var projs []projection
		down, ok := ck.Lookup(c + "." + es + ".down_proj.weight")
		if !ok {
			return nil, nil, fail("the state has fused quantizers for expert %d, but the checkpoint has no %s.%d.down_proj.weight", e, c, e)
		}
		if first == "gate_up_proj" {
			gate, okG := ck.Lookup(c + "." + es + ".gate_proj.weight")
			up, okU := ck.Lookup(c + "." + es + ".up_proj.weight")
			if !okG || !okU || len(gate.Shape) != 2 || !slices.Equal(gate.Shape, up.Shape) {
				return nil, nil, fail("expert %d needs gate_proj and up_proj weights of one shape", e)
			}
			I := gate.Shape[0]
			projs = []projection{{"gate_proj", first, 0, I, 2 * I, true}, {"up_proj", first, I, I, 2 * I, true}}
		} else {
			up, ok := ck.Lookup(c + "." + es + ".up_proj.weight")
			if !ok || len(up.Shape) != 2 {
				return nil, nil, fail("expert %d has no 2-D up_proj weight", e)
			}
			projs = []projection{{"up_proj", first, 0, up.Shape[0], up.Shape[0], false}}
		}
		if len(down.Shape) != 2 {
			return nil, nil, fail("expert %d down_proj weight is %v, want 2-D", e, down.Shape)
		}
		projs = append(projs, projection{"down_proj", "down_proj", 0, down.Shape[0], down.Shape[0], false})
		for _, p := range projs {
			mod := c + "." + es + "." + p.proj
			wqName := c + "." + p.src + "_weight_quantizers." + es
			iqName := c + "." + p.src + "_input_quantizer"
			wq, ok := table[wqName]
			if !ok {
				return nil, nil, fail("no %s in the quantizer table", wqName)
			}
			cp := *wq
			if len(cp.AmaxShape) > 0 && cp.AmaxShape[0] == p.fused {
				cp.AmaxShape = slices.Clone(cp.AmaxShape)
				cp.AmaxShape[0] = p.rows
			}
			table[mod+".weight_quantizer"] = &cp
			if iq, ok := table[iqName]; ok {
				table[mod+".input_quantizer"] = iq
			}
			hasAmax := false
			for _, b := range buffers[wqName] {
				suffix := strings.TrimPrefix(b.Name, wqName+".")
				d, err := splitBuffer(b, mod+".weight_quantizer."+suffix, suffix, p)
				if err != nil {
					return nil, nil, fail("%v", err)
				}
				derived = append(derived, d)
				hideOnce(b.Name)
				hasAmax = hasAmax || suffix == "_amax"
			}
			if wq.Enabled && !hasAmax && !quantizerNeedsNoAmax(wq) {
				return nil, nil, fail("weight quantizer %s is enabled but the state has no %s._amax; ModelOpt would calibrate expert %d from its fused weight, which quantstream does not reproduce", wqName, wqName, e)
			}
			for _, b := range buffers[iqName] {
				suffix := strings.TrimPrefix(b.Name, iqName+".")
				derived = append(derived, copyBuffer(b, mod+".input_quantizer."+suffix))
				hideOnce(b.Name)
			}
		}
	}
	for k := range table {
		if strings.HasPrefix(k, c+".") && (fusedQuantizerRE.MatchString(k) || k == c+"."+first+"_input_quantizer" || k == c+".down_proj_input_quantizer") {
			delete(table, k)
		}
	}
	return derived, hide, nil
}

// quantizerNeedsNoAmax: dynamic and MX weight quantizers keep no amax.
func quantizerNeedsNoAmax(q *quant.Quantizer) bool {
	return q.Dynamic || (q.BlockSizes != nil && q.BlockSizes.Type == "dynamic")
}

// splitBuffer is one projection's share of a fused expert weight quantizer's
// buffer: a 0-dim amax or the global amax as they are; a per-channel or per-block
// amax viewed as (fused rows, -1) and cut to the projection's rows, as
// _export_fused_experts slices it.
func splitBuffer(b arrowio.TensorRef, name, suffix string, p projection) (arrowio.Derived, error) {
	switch suffix {
	case "_global_amax":
		return copyBuffer(b, name), nil
	case "_amax":
	default:
		return arrowio.Derived{}, fmt.Errorf("buffer %s: _export_fused_experts carries only _amax and _global_amax of an expert's weight quantizer", b.Name)
	}
	numel := quant.Numel(b.Shape)
	if numel == 1 || !p.shared {
		return copyBuffer(b, name), nil
	}
	if numel%p.fused != 0 {
		return arrowio.Derived{}, fmt.Errorf("buffer %s %v: %d values do not split over %d fused rows", b.Name, b.Shape, numel, p.fused)
	}
	per := numel / p.fused
	shape := []int64{p.rows, per}
	switch {
	case numel == p.fused && len(b.Shape) == 1:
		shape = []int64{p.rows}
	case numel == p.fused && len(b.Shape) == 2 && b.Shape[1] == 1:
		shape = []int64{p.rows, 1}
	}
	esize := int64(b.DType.Size())
	if esize == 0 {
		return arrowio.Derived{}, fmt.Errorf("buffer %s is %s", b.Name, b.DType)
	}
	off, n := p.row0*per*esize, p.rows*per*esize
	return arrowio.Derived{
		TensorInfo: quantstream.TensorInfo{Name: name, DType: b.DType, Shape: shape},
		From:       []string{b.Name},
		Fill: func(_ context.Context, dst []byte, from []arrowio.TensorRef) error {
			if got, err := from[0].Section().ReadAt(dst[:n], off); got != int(n) {
				return err
			}
			return nil
		},
	}, nil
}

// copyBuffer is a buffer under another name, bytes unchanged.
func copyBuffer(b arrowio.TensorRef, name string) arrowio.Derived {
	return arrowio.Derived{
		TensorInfo: quantstream.TensorInfo{Name: name, DType: b.DType, Shape: slices.Clone(b.Shape)},
		From:       []string{b.Name},
		Fill: func(_ context.Context, dst []byte, from []arrowio.TensorRef) error {
			return from[0].File.ReadInto(from[0].TensorHeader, dst)
		},
	}
}
