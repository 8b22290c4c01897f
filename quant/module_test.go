package quant

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"testing"
)

func modBlocks(last int, typ string, scale *NumBits) *BlockSizes {
	return &BlockSizes{Dims: map[int]int{-1: last}, Type: typ, ScaleBits: scale}
}

var (
	mbE4M3 = BitsE4M3
	mbE8M0 = BitsE8M0
)

// Preset recipes of modelopt_recipes/configs/ptq/presets (weight quantizer, input quantizer).
func modPreset(name string) (wq, iq *Quantizer) {
	fp8 := func() *Quantizer { return &Quantizer{Enabled: true, NumBits: BitsE4M3, FakeQuant: true} }
	nvfp4 := func(b int) *Quantizer {
		return &Quantizer{Enabled: true, NumBits: BitsE2M1, FakeQuant: true, BlockSizes: modBlocks(b, "dynamic", &mbE4M3)}
	}
	mxfp4 := func() *Quantizer {
		return &Quantizer{Enabled: true, NumBits: BitsE2M1, FakeQuant: true, BlockSizes: modBlocks(32, "dynamic", &mbE8M0)}
	}
	off := &Quantizer{Enabled: false, NumBits: BitsInt8, FakeQuant: true}
	switch name {
	case "fp8":
		return fp8(), fp8()
	case "fp8_pc_pt":
		w := fp8()
		w.Axis = []int{0}
		in := fp8()
		in.Dynamic = true
		in.Axis, in.AxisTuple = []int{0, 1}, true
		return w, in
	case "fp8_pb_wo":
		w := fp8()
		w.BlockSizes = &BlockSizes{Dims: map[int]int{-1: 128, -2: 128}}
		return w, off
	case "int8_sq":
		return &Quantizer{Enabled: true, NumBits: BitsInt8, Axis: []int{0}, FakeQuant: true}, &Quantizer{Enabled: true, NumBits: BitsInt8, FakeQuant: true}
	case "int8_wo":
		return &Quantizer{Enabled: true, NumBits: BitsInt8, Axis: []int{0}, FakeQuant: true}, off
	case "int4_awq":
		return &Quantizer{Enabled: true, NumBits: BitsInt4, FakeQuant: true, BlockSizes: modBlocks(128, "static", nil)}, off
	case "w4a8_awq":
		return &Quantizer{Class: "SequentialQuantizer", Enabled: true, Sequential: []*Quantizer{
			{Enabled: true, NumBits: BitsInt4, FakeQuant: true, BlockSizes: modBlocks(128, "static", nil)},
			fp8(),
		}}, fp8()
	case "nvfp4":
		return nvfp4(16), nvfp4(16)
	case "w4a16_nvfp4":
		return nvfp4(16), off
	case "w4a8_nvfp4_fp8":
		return nvfp4(32), fp8()
	case "mxfp4":
		return mxfp4(), mxfp4()
	case "w4a8_mxfp4_fp8":
		return mxfp4(), fp8()
	case "mxfp8":
		w := fp8()
		w.BlockSizes = modBlocks(32, "dynamic", &mbE8M0)
		return w, w
	}
	panic(name)
}

func TestQuantizationFormatPresets(t *testing.T) {
	tests := []struct {
		preset, want string
		block        int
	}{
		{"fp8", "fp8", 0}, {"fp8_pc_pt", "fp8_pc_pt", 0}, {"fp8_pb_wo", "fp8_pb_wo", 128},
		{"int8_sq", "int8_sq", 0}, {"int8_wo", "int8_wo", 0}, {"int4_awq", "int4_awq", 128},
		{"w4a8_awq", "w4a8_awq", 128}, {"nvfp4", "nvfp4", 16}, {"w4a16_nvfp4", "w4a16_nvfp4", 16},
		{"w4a8_nvfp4_fp8", "w4a8_nvfp4_fp8", 32}, {"mxfp4", "mxfp4", 32},
		{"w4a8_mxfp4_fp8", "w4a8_mxfp4_fp8", 32}, {"mxfp8", "mxfp8", 32},
	}
	for _, tc := range tests {
		t.Run(tc.preset, func(t *testing.T) {
			wq, iq := modPreset(tc.preset)
			m := &Module{Name: "x", WeightQuantizer: wq, InputQuantizer: iq}
			got, err := QuantizationFormat(m)
			if err != nil || got != tc.want {
				t.Fatalf("format %q, %v; want %q", got, err, tc.want)
			}
			if b := WeightBlockSize(m); b != tc.block {
				t.Fatalf("block size %d, want %d", b, tc.block)
			}
		})
	}
}

func TestQuantizationFormatRules(t *testing.T) {
	pqs := &Tensor{DType: BF16, Shape: []int64{1}, Data: []byte{0x80, 0x3f}}
	tests := []struct {
		name    string
		build   func() *Module
		want    string
		wantErr error
	}{
		{"no weight quantizer", func() *Module { return &Module{} }, "", nil},
		{"disabled weight quantizer", func() *Module {
			w, i := modPreset("fp8")
			w.Enabled = false
			return &Module{WeightQuantizer: w, InputQuantizer: i}
		}, "", nil},
		{"axis (0,) is not axis 0", func() *Module {
			w, i := modPreset("fp8_pc_pt")
			w.AxisTuple = true
			return &Module{WeightQuantizer: w, InputQuantizer: i}
		}, "fp8", nil},
		{"fp8 block without fake quant is real", func() *Module {
			w, i := modPreset("fp8_pb_wo")
			w.FakeQuant = false
			return &Module{WeightQuantizer: w, InputQuantizer: i}
		}, "fp8_pb_real", nil},
		{"int8 without input quantizer", func() *Module {
			w, _ := modPreset("int8_sq")
			return &Module{WeightQuantizer: w}
		}, "int8_wo", nil},
		{"svdquant before awq", func() *Module {
			w, i := modPreset("nvfp4")
			return &Module{WeightQuantizer: w, InputQuantizer: i, SVDQuant: true, PreQuantScale: pqs}
		}, "nvfp4_svdquant", nil},
		{"pre_quant_scale makes nvfp4_awq", func() *Module {
			w, i := modPreset("nvfp4")
			return &Module{WeightQuantizer: w, InputQuantizer: i, PreQuantScale: pqs}
		}, "nvfp4_awq", nil},
		{"fused_with_prequant makes nvfp4_awq", func() *Module {
			w, i := modPreset("w4a16_nvfp4")
			return &Module{WeightQuantizer: w, InputQuantizer: i, FusedWithPrequant: true}
		}, "nvfp4_awq", nil},
		{"mxfp4 without input quantizer asserts", func() *Module {
			w, _ := modPreset("mxfp4")
			return &Module{WeightQuantizer: w}
		}, "", ErrAssertion},
		{"int4 without blocks asserts", func() *Module {
			return &Module{WeightQuantizer: &Quantizer{Enabled: true, NumBits: BitsInt4}}
		}, "", ErrAssertion},
		{"bad chain asserts", func() *Module {
			w, i := modPreset("w4a8_awq")
			w.Sequential[1].NumBits = BitsInt8
			return &Module{WeightQuantizer: w, InputQuantizer: i}
		}, "", ErrAssertion},
		{"int2 is not supported", func() *Module {
			return &Module{WeightQuantizer: &Quantizer{Enabled: true, NumBits: NumBits{0, 2}}}
		}, "", ErrNotImplemented},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := QuantizationFormat(tc.build())
			if tc.wantErr != nil {
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err %v, want %v", err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("format %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}

func TestMaxBound(t *testing.T) {
	tests := []struct {
		q    Quantizer
		want float64
		ok   bool
	}{
		{Quantizer{NumBits: BitsE4M3}, 448, true},
		{Quantizer{NumBits: BitsE2M1, BlockSizes: modBlocks(16, "dynamic", &mbE4M3)}, 6, true},
		{Quantizer{NumBits: BitsE2M1, BlockSizes: modBlocks(32, "dynamic", &mbE8M0)}, 0, false},
		{Quantizer{NumBits: BitsInt8}, 127, true},
		{Quantizer{NumBits: BitsInt4}, 7, true},
		{Quantizer{NumBits: BitsInt8, Unsigned: true}, 255, true},
	}
	for _, tc := range tests {
		got, ok := MaxBound(&tc.q)
		if got != tc.want || ok != tc.ok {
			t.Errorf("MaxBound(%v) = %v, %v; want %v, %v", tc.q.NumBits, got, ok, tc.want, tc.ok)
		}
	}
}

func modF32(t *testing.T, dt DType, shape []int64, v ...float32) *Tensor {
	t.Helper()
	x := intTensor(t, dt, shape, v)
	return &x
}

func TestExportAmax(t *testing.T) {
	inf := float32(math.Inf(1))
	nan := float32(math.NaN())
	perTensor := &Quantizer{Enabled: true, NumBits: BitsInt8}
	perChannel := &Quantizer{Enabled: true, NumBits: BitsInt8, Axis: []int{0}}
	tests := []struct {
		name      string
		q         *Quantizer
		amax      *Tensor
		wantShape []int64
		want      []float32
	}{
		{"0-dim gets a dim", perTensor, modF32(t, BF16, []int64{}, 2), []int64{1}, []float32{2}},
		{"zero to maxbound", perTensor, modF32(t, BF16, []int64{}, 0), []int64{1}, []float32{127}},
		{"nan to maxbound", perTensor, modF32(t, F32, []int64{}, nan), []int64{1}, []float32{127}},
		{"+inf to the dtype max (bf16)", perTensor, modF32(t, BF16, []int64{}, inf), []int64{1}, []float32{math.Float32frombits(0x7F7F0000)}},
		{"+inf to the dtype max (f16)", perTensor, modF32(t, F16, []int64{}, inf), []int64{1}, []float32{65504}},
		{"f16 subnormal clamps to f16 tiny", perTensor, modF32(t, F16, []int64{}, 0x1p-20), []int64{1}, []float32{0x1p-14}},
		{"negative clamps to tiny", perTensor, modF32(t, F32, []int64{}, -1), []int64{1}, []float32{0x1p-126}},
		{"per-channel squeezed", perChannel, modF32(t, BF16, []int64{3, 1}, 1, 0, 3), []int64{3}, []float32{1, 127, 3}},
		{"one channel becomes 0-dim", perChannel, modF32(t, BF16, []int64{1, 1}, 5), []int64{}, []float32{5}},
		{"static blocks reshaped", &Quantizer{Enabled: true, NumBits: BitsInt4, BlockSizes: modBlocks(2, "static", nil), AmaxShape: []int64{2, -1}},
			modF32(t, F32, []int64{4, 1}, 1, 0, 3, 4), []int64{2, 2}, []float32{1, 7, 3, 4}},
		{"dynamic blocks returned raw", &Quantizer{Enabled: true, NumBits: BitsE2M1, BlockSizes: modBlocks(16, "dynamic", &mbE4M3)},
			modF32(t, BF16, []int64{}, 0), []int64{}, []float32{0}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := append([]byte(nil), tc.amax.Data...)
			got, err := ExportAmax(tc.q, tc.amax)
			if err != nil {
				t.Fatal(err)
			}
			v, _ := Float32s(*got)
			if !slices.Equal(got.Shape, tc.wantShape) || fmt.Sprint(v) != fmt.Sprint(tc.want) {
				t.Fatalf("got %v %v, want %v %v", got.Shape, v, tc.wantShape, tc.want)
			}
			if got.DType != tc.amax.DType {
				t.Fatalf("dtype %v, want the amax's %v", got.DType, tc.amax.DType)
			}
			if string(before) != string(tc.amax.Data) {
				t.Fatal("ExportAmax modified its input")
			}
		})
	}
	mx := &Quantizer{Enabled: true, NumBits: BitsE2M1, BlockSizes: modBlocks(32, "dynamic", &mbE8M0)}
	if got, err := ExportAmax(mx, modF32(t, BF16, []int64{}, 1)); got != nil || err != nil {
		t.Errorf("MX amax: %v, %v; want None", got, err)
	}
	if got, err := ExportAmax(perTensor, nil); got != nil || err != nil {
		t.Errorf("no amax: %v, %v; want None", got, err)
	}
}

func TestScalingFactorAssertsPositive(t *testing.T) {
	q := &Quantizer{Enabled: true, NumBits: BitsE2M1, BlockSizes: modBlocks(16, "dynamic", &mbE4M3)}
	if _, err := scalingFactor(q, modF32(t, F32, []int64{}, 0), nil, DivIEEE); !errors.Is(err, ErrAssertion) {
		t.Fatalf("zero NVFP4 amax: err %v, want ErrAssertion", err)
	}
	q8 := &Quantizer{Enabled: true, NumBits: BitsInt8}
	s, err := scalingFactor(q8, modF32(t, BF16, []int64{}, 0), nil, DivIEEE)
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := Scalar(*s); v != 1 || !slices.Equal(s.Shape, []int64{1}) {
		t.Fatalf("zero int8 amax: scale %v %v, want 1 of shape (1,)", v, s.Shape)
	}
	q8.Enabled = false
	if s, err := scalingFactor(q8, modF32(t, BF16, []int64{}, 3), nil, DivIEEE); s != nil || err != nil {
		t.Fatalf("disabled: %v, %v; want None", s, err)
	}
}

func TestKVCacheDType(t *testing.T) {
	fp8 := &Quantizer{Enabled: true, NumBits: BitsE4M3}
	i8 := &Quantizer{Enabled: true, NumBits: BitsInt8}
	fp4 := &Quantizer{Enabled: true, NumBits: BitsE2M1}
	off := &Quantizer{Enabled: false, NumBits: BitsE4M3}
	tests := []struct {
		name string
		qs   []*Quantizer
		bias []bool
		want string
	}{
		{"none", nil, nil, ""},
		{"disabled only", []*Quantizer{off, nil}, []bool{false, false}, ""},
		{"fp8 wins", []*Quantizer{fp4, i8, fp8}, []bool{true, true, true}, "FP8"},
		{"int8 before nvfp4", []*Quantizer{fp4, i8}, []bool{false, false}, "INT8"},
		{"affine needs every bias", []*Quantizer{fp4, fp4}, []bool{true, true}, "NVFP4_AFFINE"},
		{"one without bias", []*Quantizer{fp4, fp4}, []bool{true, false}, "NVFP4"},
	}
	for _, tc := range tests {
		if got := KVCacheDType(tc.qs, tc.bias); got != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
	}
}

func TestKVCacheScaleHF(t *testing.T) {
	s, err := KVCacheScaleHF(*modF32(t, BF16, []int64{}, 448), "NVFP4", DivIEEE)
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := Scalar(s); v != 1 || len(s.Shape) != 0 || s.DType != F32 {
		t.Fatalf("k_scale %v %v %v, want 0-dim F32 1", s.DType, s.Shape, v)
	}
	if _, err := KVCacheScaleHF(*modF32(t, BF16, []int64{}, 1), "INT8", DivIEEE); !errors.Is(err, ErrAssertion) {
		t.Fatalf("INT8 KV: err %v, want ErrAssertion", err)
	}
	// The TRT-LLM rule raises FP8 scales to at least 1.
	fp8 := &Quantizer{Enabled: true, NumBits: BitsE4M3}
	k, v, err := kvCacheScalingFactor(fp8, fp8, modF32(t, F32, []int64{}, 4), modF32(t, F32, []int64{}, 896), "FP8", DivIEEE)
	if err != nil {
		t.Fatal(err)
	}
	kv, _ := Scalar(*k)
	vv, _ := Scalar(*v)
	if kv != 1 || vv != 2 || !slices.Equal(k.Shape, []int64{1}) {
		t.Fatalf("k %v %v, v %v; want 1 (1,), 2", kv, k.Shape, vv)
	}
}

func TestCalibrateAmaxLayouts(t *testing.T) {
	v := make([]float32, 4*6)
	for i := range v {
		v[i] = float32(i%7) - 3
	}
	w := intTensor(t, BF16, []int64{4, 6}, v)
	tests := []struct {
		name  string
		q     *Quantizer
		dt    DType
		shape []int64
		want  []float32
	}{
		{"per-tensor", &Quantizer{NumBits: BitsE4M3}, BF16, []int64{}, []float32{3}},
		{"per-channel", &Quantizer{NumBits: BitsInt8, Axis: []int{0}}, BF16, []int64{4, 1}, []float32{3, 3, 3, 3}},
		// Blocks of 4 over 6 columns: the second block of each row is short (padded).
		{"static int blocks in f32", &Quantizer{NumBits: BitsInt4, FakeQuant: true, BlockSizes: modBlocks(4, "static", nil)}, F32,
			[]int64{8, 1}, []float32{3, 2, 3, 1, 3, 1, 3, 2}},
		{"2-D blocks", &Quantizer{NumBits: BitsE4M3, BlockSizes: &BlockSizes{Dims: map[int]int{-1: 4, -2: 2}}}, BF16,
			[]int64{2, 1, 2, 1}, []float32{3, 2, 3, 2}},
		{"one block is 0-dim", &Quantizer{NumBits: BitsE4M3, BlockSizes: &BlockSizes{Dims: map[int]int{-1: 8, -2: 8}}}, BF16,
			[]int64{}, []float32{3}},
		{"dynamic NVFP4 is per-tensor", &Quantizer{NumBits: BitsE2M1, BlockSizes: modBlocks(2, "dynamic", &mbE4M3)}, BF16,
			[]int64{}, []float32{3}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := CalibrateAmax(tc.q, w)
			if err != nil {
				t.Fatal(err)
			}
			gv, _ := Float32s(got)
			if got.DType != tc.dt || !slices.Equal(got.Shape, tc.shape) || fmt.Sprint(gv) != fmt.Sprint(tc.want) {
				t.Fatalf("got %v %v %v, want %v %v %v", got.DType, got.Shape, gv, tc.dt, tc.shape, tc.want)
			}
		})
	}
	mx := &Quantizer{NumBits: BitsE2M1, BlockSizes: modBlocks(32, "dynamic", &mbE8M0)}
	if _, err := CalibrateAmax(mx, w); !errors.Is(err, ErrNoAmax) {
		t.Errorf("MX: err %v, want ErrNoAmax", err)
	}
	bad := intTensor(t, F32, []int64{1, 2}, []float32{1, float32(math.NaN())})
	if _, err := CalibrateAmax(&Quantizer{NumBits: BitsE4M3}, bad); !errors.Is(err, ErrAssertion) {
		t.Errorf("NaN weight: err %v, want ErrAssertion", err)
	}
}

// ExampleQuantizationFormat classifies an INT4 AWQ linear.
func ExampleQuantizationFormat() {
	m := &Module{
		Name:            "q_proj",
		WeightQuantizer: &Quantizer{Enabled: true, NumBits: BitsInt4, FakeQuant: true, BlockSizes: &BlockSizes{Dims: map[int]int{-1: 128}, Type: "static"}},
		InputQuantizer:  &Quantizer{Enabled: false, NumBits: BitsInt8},
	}
	f, err := QuantizationFormat(m)
	fmt.Println(f, WeightBlockSize(m), err)
	// Output: int4_awq 128 <nil>
}

// ExampleReference_PackInt4InUint8 packs two output rows into one row of bytes.
func ExampleReference_PackInt4InUint8() {
	w, _ := FromFloat32(BF16, []int64{2, 4}, []float32{0.5, 1.5, -1, 7, 3, -8, 2.5, 7.5})
	s, _ := FromFloat32(F32, []int64{2, 1}, []float32{1, 1})
	p, _ := Reference{}.PackInt4InUint8(w, s)
	fmt.Printf("%v % x\n", p.Shape, p.Data)
	// Output: [1 4] 30 82 2f 77
}

// ExampleReference_ScalingFactorFromWeight is a hand-checked vector for
// quant_utils.get_scaling_factor_from_weight: groups of two,
// amax / 7, a zero group gets 1.
func ExampleReference_ScalingFactorFromWeight() {
	w, _ := FromFloat32(F32, []int64{2, 4}, []float32{0, 0.35, 0.28, 7, 0.49, 0.84, -0.77, 0.07})
	s, _ := Reference{}.ScalingFactorFromWeight(w, 2, DivIEEE)
	v, _ := Float32s(s)
	fmt.Println(s.Shape, v)
	// Output: [2 2] [0.05 1 0.12 0.11]
}

// ExampleExportAmax shows the per-channel normalisation: (O,1) → (O,), zero → maxbound.
func ExampleExportAmax() {
	q := &Quantizer{Enabled: true, NumBits: BitsInt8, Axis: []int{0}}
	amax, _ := FromFloat32(BF16, []int64{3, 1}, []float32{0.5, 0, 2})
	e, _ := ExportAmax(q, &amax)
	v, _ := Float32s(*e)
	fmt.Println(e.DType, e.Shape, v)
	// Output: BF16 [3] [0.5 127 2]
}

// ExampleExportQuantizedWeight exports an INT8 weight-only linear: per-row scales
// amax/127 and int8 codes.
func ExampleExportQuantizedWeight() {
	w, _ := FromFloat32(BF16, []int64{2, 3}, []float32{1, -2, 0.5, 0, 0, 0})
	wq := &Quantizer{Enabled: true, NumBits: BitsInt8, Axis: []int{0}, FakeQuant: true}
	amax, _ := CalibrateAmax(wq, w)
	m := &Module{Name: "down_proj", Weight: w, WeightQuantizer: wq, WeightAmax: &amax}
	ex, _ := ExportQuantizedWeight(m, BF16, DivIEEE)
	s, _ := Float32s(*ex.WeightScale)
	q := make([]int8, len(ex.Weight.Data))
	for i, b := range ex.Weight.Data {
		q[i] = int8(b)
	}
	fmt.Println(ex.Format, ex.Weight.DType, q, s)
	// Output: int8_wo I8 [64 -127 32 0 0 0] [0.015748031 1]
}
