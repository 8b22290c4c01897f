package pipeline_test

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/quantstream/quantstream"
	"github.com/quantstream/quantstream/pipeline"
	"github.com/quantstream/quantstream/quant"
)

func TestNewPlanCharges(t *testing.T) {
	widen := &convStage{name: "widen", from: quant.F16, to: quant.F32}
	pack := &convStage{name: "pack", from: quant.F32, to: quant.F8E4M3}
	plan, err := pipeline.NewPlan([]quantstream.LayerInfo{layerSpec(0, 2)}, widen, pack)
	if err != nil {
		t.Fatal(err)
	}
	lp := plan.Layers[0]
	// F16 [8 32] + BF16 [32] = 576 bytes; widened 1088; packed to F8 320.
	if want := []int64{576, 1088, 320}; !slices.Equal(lp.Bytes, want) {
		t.Errorf("Bytes %v, want %v", lp.Bytes, want)
	}
	// Each stage holds input and output; the charge never rises again.
	if want := []int64{576 + 1088, 1088 + 320, 320}; !slices.Equal(lp.Charge, want) {
		t.Errorf("Charge %v, want %v", lp.Charge, want)
	}
	if got := lp.Steps[2][0].DType; got != quant.F8E4M3 {
		t.Errorf("planned dtype %s, want F8_E4M3", got)
	}
	if plan.TotalBytes != 576 || plan.MaxCharge != 1664 {
		t.Errorf("TotalBytes %d MaxCharge %d, want 576 1664", plan.TotalBytes, plan.MaxCharge)
	}
	if err := plan.Check(1664); err != nil {
		t.Errorf("Check(1664): %v", err)
	}
	if err := plan.Check(1663); !errors.Is(err, pipeline.ErrOverBudget) || !strings.Contains(err.Error(), "layer 0 needs 1664 bytes") {
		t.Errorf("Check(1663): %v", err)
	}
}

func TestNewPlanBadHeaders(t *testing.T) {
	tests := []struct {
		name string
		ts   []quantstream.TensorInfo
	}{
		{"unknown dtype", []quantstream.TensorInfo{{Name: "a", DType: quant.Invalid, Shape: []int64{2}}}},
		{"negative dimension", []quantstream.TensorInfo{{Name: "a", DType: quant.F16, Shape: []int64{2, -1}}}},
		{"shape overflows", []quantstream.TensorInfo{{Name: "a", DType: quant.F16, Shape: []int64{1 << 40, 1 << 40}}}},
		{"bytes overflow", []quantstream.TensorInfo{{Name: "a", DType: quant.F64, Shape: []int64{1 << 61}}}},
		{"layer overflows", []quantstream.TensorInfo{
			{Name: "a", DType: quant.U8, Shape: []int64{1 << 62}},
			{Name: "b", DType: quant.U8, Shape: []int64{1 << 62}},
		}},
		{"half a byte", []quantstream.TensorInfo{{Name: "a", DType: quant.F4, Shape: []int64{3}}}},
		{"duplicate name", []quantstream.TensorInfo{
			{Name: "a", DType: quant.F16, Shape: []int64{2}},
			{Name: "a", DType: quant.F16, Shape: []int64{2}},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, err := pipeline.NewPlan([]quantstream.LayerInfo{{Index: 7, Tensors: tc.ts}})
			if !errors.Is(err, pipeline.ErrBadPlan) || !strings.HasPrefix(err.Error(), "source: layer 7: ") {
				t.Errorf("NewPlan: %v, want ErrBadPlan at source layer 7", err)
			}
		})
	}
}

type planStage struct {
	convStage
	plan func(layer int, in []quantstream.TensorInfo) ([]quantstream.TensorInfo, error)
}

func (s *planStage) Plan(in quantstream.LayerInfo) ([]quantstream.TensorInfo, error) {
	return s.plan(in.Index, in.Tensors)
}

func TestNewPlanStageErrors(t *testing.T) {
	tests := []struct {
		name    string
		plan    func(int, []quantstream.TensorInfo) ([]quantstream.TensorInfo, error)
		wantIs  error
		wantMsg string
	}{
		{
			name:    "error",
			plan:    func(int, []quantstream.TensorInfo) ([]quantstream.TensorInfo, error) { return nil, errBoom },
			wantIs:  errBoom,
			wantMsg: "stage odd: layer 3: boom",
		},
		{
			name:    "panic",
			plan:    func(int, []quantstream.TensorInfo) ([]quantstream.TensorInfo, error) { panic("kaput") },
			wantIs:  pipeline.ErrPanic,
			wantMsg: "stage odd: layer 3: pipeline: panic: kaput",
		},
		{
			name: "invalid output",
			plan: func(_ int, in []quantstream.TensorInfo) ([]quantstream.TensorInfo, error) {
				return append(in, in[0]), nil
			},
			wantIs:  pipeline.ErrBadPlan,
			wantMsg: "stage odd: layer 3: pipeline: invalid tensor headers: duplicate tensor",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := &planStage{convStage: convStage{name: "odd"}, plan: tc.plan}
			_, err := pipeline.NewPlan([]quantstream.LayerInfo{layerSpec(3, 5)}, s)
			var se *pipeline.StageError
			if !errors.Is(err, tc.wantIs) || !errors.As(err, &se) || se.Stage != "odd" || se.Layer != 3 ||
				!strings.HasPrefix(err.Error(), tc.wantMsg) {
				t.Errorf("NewPlan: %v, want %q", err, tc.wantMsg)
			}
		})
	}
}

// A stage's Plan gets its own copy of the headers, so it cannot rewrite the
// source's step of the plan.
func TestNewPlanIsolatesSteps(t *testing.T) {
	s := &planStage{convStage: convStage{name: "mutate"}, plan: func(_ int, in []quantstream.TensorInfo) ([]quantstream.TensorInfo, error) {
		in[0].DType = quant.F32
		return in, nil
	}}
	plan, err := pipeline.NewPlan([]quantstream.LayerInfo{layerSpec(0, 2)}, s)
	if err != nil {
		t.Fatal(err)
	}
	if got := plan.Layers[0].Steps[0][0].DType; got != quant.F16 {
		t.Errorf("source step dtype %s after stage Plan, want F16", got)
	}
}

// A layer the source cut into groups is named by its group in the budget error.
func TestCheckNamesTheGroupOverBudget(t *testing.T) {
	a := quantstream.LayerInfo{Index: 3, Prefix: "model.layers.3.", Tensors: []quantstream.TensorInfo{
		{Name: "model.layers.3.a", DType: quant.F32, Shape: []int64{4}},
	}}
	b := quantstream.LayerInfo{Index: 3, Prefix: "model.layers.3.", Tensors: []quantstream.TensorInfo{
		{Name: "model.layers.3.big", DType: quant.F32, Shape: []int64{64}},
		{Name: "model.layers.3.c", DType: quant.F32, Shape: []int64{1}},
	}}
	plan, err := pipeline.NewPlan([]quantstream.LayerInfo{a, b})
	if err != nil {
		t.Fatal(err)
	}
	err = plan.Check(100)
	if !errors.Is(err, pipeline.ErrOverBudget) || !strings.Contains(err.Error(), "layer 3 (the group of 2 tensors model.layers.3.big … model.layers.3.c)") {
		t.Fatalf("Check: %v", err)
	}
	whole, _ := pipeline.NewPlan([]quantstream.LayerInfo{b})
	if err := whole.Check(100); err == nil || strings.Contains(err.Error(), "group") {
		t.Fatalf("a layer that is not cut is not a group: %v", err)
	}
}
