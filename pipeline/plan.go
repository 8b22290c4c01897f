package pipeline

import (
	"fmt"
	"math"
	"slices"

	"github.com/quantstream/quantstream"
)

// Plan is what a run will do, computed from headers alone: every layer's tensors
// after every stage, their sizes, and the bytes each layer is charged against the
// memory budget. A writer can lay out its output from the last step before any
// tensor is read.
type Plan struct {
	Layers []LayerPlan

	// TotalBytes is the sum of the layers' source sizes: the denominator of Progress.
	TotalBytes int64
	// MaxCharge is the largest Charge[0] of any layer: the smallest MaxMemory that
	// can run this plan.
	MaxCharge int64
}

// LayerPlan is one layer's plan. Steps[0] and Bytes[0] describe the layer as the
// source yields it; Steps[k] and Bytes[k] describe it after stage k (1-based).
//
// New[k] (k ≥ 1) is how many of Bytes[k] stage k allocates anew: Bytes[k] unless
// the stage is a BufferReuser handing on its input's buffer (New[0] is Bytes[0]).
// Charge[k] is what the layer holds of the budget while it waits for or runs
// through stage k+1 (0-based k), and Charge[len(Stages)] what it holds at the sink:
//
//	Charge[n] = Bytes[n]
//	Charge[k] = max(Bytes[k] + New[k+1], Charge[k+1])
//
// because a stage holds its input and what it allocates at once until it releases
// the input, and a charge, once lowered, must never need to rise again.
type LayerPlan struct {
	quantstream.LayerInfo
	Steps  [][]quantstream.TensorInfo
	Bytes  []int64
	New    []int64
	Charge []int64
}

// BufferReuser is an optional capability of a Stage that hands on its input's data
// buffer rather than copying it: the input layer itself when it leaves a layer
// unchanged, or a layer sharing its buffer (quantstream.Layer.Extend) when it only
// appends small tensors. Such a layer is charged only for what the stage adds, so
// a tensor that no stage changes is counted once, not once per stage.
//
// NewBytes returns how many of the data bytes of out (what Plan returned for in)
// Process allocates anew; the rest must be bytes of the input's buffer. The
// pipeline checks it: a stage that claims to reuse its input's buffer and returns
// a layer that does not share it fails the run with ErrPlanMismatch, since the
// budget would no longer bound what is in memory.
type BufferReuser interface {
	NewBytes(in quantstream.LayerInfo, out []quantstream.TensorInfo) int64
}

// NewPlan plans layers through stages by calling each stage's Plan. Errors are
// *StageError values naming the stage ("source" for the layers' own headers).
func NewPlan(layers []quantstream.LayerInfo, stages ...quantstream.Stage) (*Plan, error) {
	p := &Plan{Layers: make([]LayerPlan, len(layers))}
	n := len(stages)
	for i, li := range layers {
		lp := &p.Layers[i]
		lp.LayerInfo = li
		lp.Steps = make([][]quantstream.TensorInfo, n+1)
		lp.Bytes = make([]int64, n+1)
		lp.New = make([]int64, n+1)
		lp.Charge = make([]int64, n+1)
		lp.Steps[0] = li.Tensors
		b, err := planBytes(li.Tensors)
		if err != nil {
			return nil, &StageError{Stage: sourceName, Layer: li.Index, Err: err}
		}
		lp.Bytes[0], lp.New[0] = b, b
		for k, s := range stages {
			var out []quantstream.TensorInfo
			err := protect(func() (err error) {
				// A stage must not see, nor be able to change, another step's slice.
				out, err = s.Plan(quantstream.LayerInfo{Index: li.Index, Prefix: li.Prefix, Tensors: cloneInfos(lp.Steps[k])})
				return err
			})
			if err == nil {
				b, err = planBytes(out)
			}
			if err != nil {
				return nil, &StageError{Stage: s.Name(), Layer: li.Index, Err: err}
			}
			lp.Steps[k+1], lp.Bytes[k+1], lp.New[k+1] = out, b, b
			if r, ok := s.(BufferReuser); ok {
				var nb int64
				err := protect(func() error {
					nb = r.NewBytes(quantstream.LayerInfo{Index: li.Index, Prefix: li.Prefix, Tensors: cloneInfos(lp.Steps[k])}, cloneInfos(out))
					return nil
				})
				if err != nil {
					return nil, &StageError{Stage: s.Name(), Layer: li.Index, Err: err}
				}
				// What the stage reuses is at most its input and at most its output.
				lp.New[k+1] = min(max(nb, b-lp.Bytes[k], 0), b)
			}
		}
		lp.Charge[n] = lp.Bytes[n]
		for k := n - 1; k >= 0; k-- {
			c, ok := addBytes(lp.Bytes[k], lp.New[k+1])
			if !ok {
				return nil, &StageError{Stage: stages[k].Name(), Layer: li.Index,
					Err: fmt.Errorf("%w: input and output size overflow", ErrBadPlan)}
			}
			lp.Charge[k] = max(c, lp.Charge[k+1])
		}
		var ok bool
		if p.TotalBytes, ok = addBytes(p.TotalBytes, lp.Bytes[0]); !ok {
			return nil, &StageError{Stage: sourceName, Layer: li.Index,
				Err: fmt.Errorf("%w: total size overflows", ErrBadPlan)}
		}
		p.MaxCharge = max(p.MaxCharge, lp.Charge[0])
	}
	return p, nil
}

// Check returns an error wrapping ErrOverBudget, naming the first layer that needs
// more than maxMemory bytes and how many it needs. maxMemory 0 means no limit.
func (p *Plan) Check(maxMemory int64) error {
	if maxMemory <= 0 {
		return nil
	}
	for i, lp := range p.Layers {
		if lp.Charge[0] > maxMemory {
			return fmt.Errorf("%w: %s%s needs %d bytes in flight (data bytes per step %v), over the memory budget of %d bytes; the largest layer needs %d",
				ErrOverBudget, quantstream.LayerName(lp.Index), p.groupOf(i), lp.Charge[0], lp.Bytes, maxMemory, p.MaxCharge)
		}
	}
	return nil
}

// groupOf names layer i's tensors when the source cut its layer into several
// groups (entries sharing an index), so that an error points at the right one.
func (p *Plan) groupOf(i int) string {
	lp := p.Layers[i]
	shared := (i > 0 && p.Layers[i-1].Index == lp.Index) || (i+1 < len(p.Layers) && p.Layers[i+1].Index == lp.Index)
	if !shared || len(lp.Tensors) == 0 {
		return ""
	}
	return fmt.Sprintf(" (the group of %d tensors %s … %s)", len(lp.Tensors), lp.Tensors[0].Name, lp.Tensors[len(lp.Tensors)-1].Name)
}

// planBytes is the data size of tensors, validating each header: data and plans
// come from files, so no size may be trusted to fit before it is checked.
func planBytes(ts []quantstream.TensorInfo) (int64, error) {
	seen := make(map[string]bool, len(ts))
	var total int64
	for _, t := range ts {
		if seen[t.Name] {
			return 0, fmt.Errorf("%w: duplicate tensor %q", ErrBadPlan, t.Name)
		}
		seen[t.Name] = true
		n, err := tensorBytes(t)
		if err != nil {
			return 0, err
		}
		var ok bool
		if total, ok = addBytes(total, n); !ok {
			return 0, fmt.Errorf("%w: layer size overflows at tensor %q", ErrBadPlan, t.Name)
		}
	}
	return total, nil
}

func tensorBytes(t quantstream.TensorInfo) (int64, error) {
	n, err := t.DataBytes()
	if err != nil {
		return 0, fmt.Errorf("%w: %w", ErrBadPlan, err)
	}
	return n, nil
}

func cloneInfos(ts []quantstream.TensorInfo) []quantstream.TensorInfo {
	out := slices.Clone(ts)
	for i := range out {
		out[i].Shape = slices.Clone(out[i].Shape)
	}
	return out
}

func addBytes(a, b int64) (int64, bool) {
	if a > math.MaxInt64-b {
		return 0, false
	}
	return a + b, true
}

// reuses reports whether stage k (1-based) planned to hand on bytes of its input.
func (lp *LayerPlan) reuses(k int) bool { return lp.New[k] < lp.Bytes[k] }

// firstData is the first byte of l's first non-empty tensor, or nil.
func firstData(l *quantstream.Layer) (string, *byte) {
	for i := range l.Len() {
		if t := l.Tensor(i); len(t.Data) > 0 {
			return t.Name, &t.Data[0]
		}
	}
	return "", nil
}

// checkReuse verifies that out, the output of stage k (1-based), shares the buffer
// whose first byte was at p (the input's tensor name) when the plan charged the
// stage only for what it adds.
func (lp *LayerPlan) checkReuse(k int, name string, p *byte, out *quantstream.Layer) error {
	if p == nil || !lp.reuses(k) {
		return nil
	}
	if t, ok := out.Lookup(name); ok && len(t.Data) > 0 && &t.Data[0] == p {
		return nil
	}
	return fmt.Errorf("%w: the stage allocated its output anew, where it planned (NewBytes) to allocate %d of %d bytes and hand on the rest of its input's buffer", ErrPlanMismatch, lp.New[k], lp.Bytes[k])
}

// check verifies that l is what step k of the plan promised.
func (lp *LayerPlan) check(k int, l *quantstream.Layer) error {
	if l == nil {
		return fmt.Errorf("%w: no layer", ErrPlanMismatch)
	}
	if l.Index() != lp.Index {
		return fmt.Errorf("%w: layer index %d, planned %d", ErrPlanMismatch, l.Index(), lp.Index)
	}
	want := lp.Steps[k]
	if l.Len() != len(want) {
		return fmt.Errorf("%w: %d tensors, planned %d", ErrPlanMismatch, l.Len(), len(want))
	}
	for _, w := range want {
		t, ok := l.Lookup(w.Name)
		if !ok {
			return fmt.Errorf("%w: tensor %q missing", ErrPlanMismatch, w.Name)
		}
		if t.DType != w.DType || !slices.Equal(t.Shape, w.Shape) {
			return fmt.Errorf("%w: tensor %q is %s %v, planned %s %v", ErrPlanMismatch, w.Name, t.DType, t.Shape, w.DType, w.Shape)
		}
		// Shape and dtype were validated when planned, so this cannot fail here.
		n, _ := tensorBytes(w)
		if int64(len(t.Data)) != n {
			return fmt.Errorf("%w: tensor %q has %d data bytes, planned %d", ErrPlanMismatch, w.Name, len(t.Data), n)
		}
	}
	return nil
}
