package quant

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
)

// calibQuantizers are the layouts CalibrateAmax reduces along.
var calibQuantizers = []struct {
	name string
	q    *Quantizer
}{
	{"per-tensor", &Quantizer{NumBits: BitsE4M3}},
	{"axis 0", &Quantizer{NumBits: BitsInt8, Axis: []int{0}}},
	{"axis -1", &Quantizer{NumBits: BitsInt8, Axis: []int{-1}}},
	{"axis 1", &Quantizer{NumBits: BitsInt8, Axis: []int{1}}},
	{"axis (0,1)", &Quantizer{NumBits: BitsInt8, Axis: []int{0, 1}, AxisTuple: true}},
	{"axis (0,-1)", &Quantizer{NumBits: BitsInt8, Axis: []int{0, -1}, AxisTuple: true}},
	{"int4 blocks 128", &Quantizer{NumBits: BitsInt4, FakeQuant: true, BlockSizes: &BlockSizes{Dims: map[int]int{-1: 128}, Type: "static"}}},
	{"int4 blocks 8", &Quantizer{NumBits: BitsInt4, FakeQuant: true, BlockSizes: &BlockSizes{Dims: map[int]int{-1: 8}}}},
	{"int4 blocks 8 real quant", &Quantizer{NumBits: BitsInt4, BlockSizes: &BlockSizes{Dims: map[int]int{-1: 8}}}},
	{"fp8 blocks 5", &Quantizer{NumBits: BitsE4M3, BlockSizes: &BlockSizes{Dims: map[int]int{-1: 5}}}},
	{"int4 blocks 8 key 1", &Quantizer{NumBits: BitsInt4, FakeQuant: true, BlockSizes: &BlockSizes{Dims: map[int]int{1: 8}}}},
	{"2-D blocks 128", &Quantizer{NumBits: BitsE4M3, BlockSizes: &BlockSizes{Dims: map[int]int{-1: 128, -2: 128}}}},
	{"2-D blocks 4x3", &Quantizer{NumBits: BitsE4M3, BlockSizes: &BlockSizes{Dims: map[int]int{-1: 4, -2: 3}}}},
	{"blocks on axes -1 and -3", &Quantizer{NumBits: BitsE4M3, BlockSizes: &BlockSizes{Dims: map[int]int{-1: 3, -3: 2}}}},
	{"blocks on axis -2 only", &Quantizer{NumBits: BitsE4M3, BlockSizes: &BlockSizes{Dims: map[int]int{-2: 4}}}},
	{"blocks with a None axis", &Quantizer{NumBits: BitsE4M3, BlockSizes: &BlockSizes{Dims: map[int]int{-1: 6, -2: 0}}}},
	{"per-channel blocks {-1: None}", &Quantizer{NumBits: BitsE4M3, BlockSizes: &BlockSizes{Dims: map[int]int{-1: 0}}}},
	{"per-channel blocks {-1,-2: None}", &Quantizer{NumBits: BitsE4M3, BlockSizes: &BlockSizes{Dims: map[int]int{-1: 0, -2: 0}}}},
	{"per-channel blocks {0: None}", &Quantizer{NumBits: BitsE4M3, BlockSizes: &BlockSizes{Dims: map[int]int{0: 0}}}},
	{"dynamic NVFP4 blocks", &Quantizer{NumBits: BitsE2M1, BlockSizes: modBlocks(16, "dynamic", &mbE4M3)}},
	{"MX", &Quantizer{NumBits: BitsE2M1, BlockSizes: modBlocks(32, "dynamic", &mbE8M0)}},
	{"dynamic", &Quantizer{NumBits: BitsE4M3, Dynamic: true}},
}

var calibShapes = [][]int64{
	{}, {1}, {17}, {1, 1}, {3, 5}, {7, 130}, {129, 257}, {256, 384}, {0, 5}, {5, 0},
	{2, 3, 5}, {4, 9, 33}, {3, 130, 260}, {2, 0, 4}, {1, 1, 1},
}

// calibRandom is a weight of random finite bit patterns: ±0, subnormals, normals of
// every exponent, with all-zero rows and runs of zeros.
func calibRandom(rng *rand.Rand, dt DType, shape []int64) Tensor {
	n := int(Numel(shape))
	es := dt.Size()
	data := make([]byte, n*es)
	cols := 1
	if len(shape) > 0 {
		cols = int(shape[len(shape)-1])
	}
	zeroRun := 0
	for i := range n {
		if cols > 0 && i%cols == 0 && rng.IntN(8) == 0 {
			zeroRun = cols // an all-zero row
		}
		if zeroRun == 0 && rng.IntN(16) == 0 {
			zeroRun = 1 + rng.IntN(300)
		}
		var sign, exp, man uint32
		sign = rng.Uint32() & 1
		switch k := rng.IntN(10); {
		case zeroRun > 0:
			zeroRun--
		case k == 0:
		case k == 1:
			man = rng.Uint32() // subnormal
		default:
			exp, man = 1+rng.Uint32(), rng.Uint32()
		}
		switch dt {
		case BF16:
			binary.LittleEndian.PutUint16(data[2*i:], uint16(sign<<15|(exp%0xFF)<<7|man&0x7F))
		case F16:
			binary.LittleEndian.PutUint16(data[2*i:], uint16(sign<<15|(exp%0x1F)<<10|man&0x3FF))
		default:
			binary.LittleEndian.PutUint32(data[4*i:], sign<<31|(exp%0xFF)<<23|man&0x7FFFFF)
		}
	}
	return Tensor{DType: dt, Shape: shape, Data: data}
}

// calibRef is calibrateAmaxRef, with a panic reported as such.
func calibRef(q *Quantizer, w Tensor) (t Tensor, err error, panicked bool) {
	defer func() {
		if r := recover(); r != nil {
			panicked = true
		}
	}()
	t, err = calibrateAmaxRef(q, w)
	return t, err, false
}

// calibSplit reduces w in random pieces as concurrent callers would, sequentially:
// a piece whose cells are shared reduces into a buffer of its own and merges it.
func calibSplit(t *testing.T, rng *rand.Rand, c *RowCalibration) []uint32 {
	t.Helper()
	cells := make([]uint32, c.Cells())
	type piece struct{ lo, hi int }
	var own []piece
	var all []piece
	for r0 := 0; r0 < c.Rows(); {
		r1 := min(c.Rows(), r0+1+rng.IntN(max(1, c.Rows()/3+1)))
		lo, hi, shared := c.Span(r0, r1)
		if lo < 0 || hi > len(cells) || lo >= hi {
			t.Fatalf("rows [%d,%d) span cells [%d,%d) of %d", r0, r1, lo, hi, len(cells))
		}
		if shared {
			p := make([]uint32, hi-lo)
			c.Reduce(p, r0, r1)
			for k, x := range p {
				cells[lo+k] = max(cells[lo+k], x)
			}
		} else {
			c.Reduce(cells[lo:hi], r0, r1)
			own = append(own, piece{lo, hi})
		}
		all = append(all, piece{lo, hi})
		r0 = r1
	}
	// A piece that does not share its cells shares none with any other piece.
	for _, p := range own {
		n := 0
		for _, o := range all {
			if o.lo < p.hi && p.lo < o.hi {
				n++
			}
		}
		if n != 1 {
			t.Fatalf("unshared cells [%d,%d) overlap %d pieces", p.lo, p.hi, n)
		}
	}
	return cells
}

func sameAmax(a, b Tensor) bool {
	return a.DType == b.DType && slices.Equal(a.Shape, b.Shape) && bytes.Equal(a.Data, b.Data) && (a.Shape == nil) == (b.Shape == nil)
}

// TestCalibrateAmaxMatchesReference holds CalibrateAmax, whole and split into random
// row ranges, to the float32 reference on every layout, dtype and shape.
func TestCalibrateAmaxMatchesReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 11))
	for _, qc := range calibQuantizers {
		for _, dt := range []DType{BF16, F16, F32} {
			for _, shape := range calibShapes {
				t.Run(fmt.Sprintf("%s/%v/%v", qc.name, dt, shape), func(t *testing.T) {
					for range 3 {
						w := calibRandom(rng, dt, shape)
						want, wantErr, panicked := calibRef(qc.q, w)
						got, err := CalibrateAmax(qc.q, w)
						if panicked {
							if !errors.Is(err, ErrShape) {
								t.Fatalf("the reference panics; got %v, want ErrShape", err)
							}
							return
						}
						if fmt.Sprint(err) != fmt.Sprint(wantErr) {
							t.Fatalf("err %v, want %v", err, wantErr)
						}
						if err != nil {
							return
						}
						if !sameAmax(got, want) {
							t.Fatalf("got %v %v %x, want %v %v %x", got.DType, got.Shape, got.Data, want.DType, want.Shape, want.Data)
						}
						c, err := NewRowCalibration(qc.q, w)
						if err != nil {
							t.Fatal(err)
						}
						split, err := c.Amax(calibSplit(t, rng, c))
						if err != nil || !sameAmax(split, want) {
							t.Fatalf("split: %v %v %x (%v), want %x", split.DType, split.Shape, split.Data, err, want.Data)
						}
					}
				})
			}
		}
	}
}

// TestCalibrateAmaxNonFinite puts one NaN or infinity anywhere in the weight: the
// reference and CalibrateAmax, whole or split, refuse it alike.
func TestCalibrateAmaxNonFinite(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 5))
	bad := map[DType][]uint32{
		BF16: {0x7F80, 0xFF80, 0x7FC0, 0xFFC1, 0x7F81},
		F16:  {0x7C00, 0xFC00, 0x7E00, 0xFC01},
		F32:  {0x7F800000, 0xFF800000, 0x7FC00000, 0xFF800001},
	}
	for _, qc := range calibQuantizers[:19] {
		for dt, codes := range bad {
			for _, shape := range [][]int64{{7, 130}, {3, 9, 33}, {129, 257}} {
				w := calibRandom(rng, dt, shape)
				i := rng.IntN(int(Numel(shape)))
				code := codes[rng.IntN(len(codes))]
				if dt == F32 {
					binary.LittleEndian.PutUint32(w.Data[4*i:], code)
				} else {
					binary.LittleEndian.PutUint16(w.Data[2*i:], uint16(code))
				}
				_, wantErr := calibrateAmaxRef(qc.q, w)
				_, err := CalibrateAmax(qc.q, w)
				if !errors.Is(wantErr, ErrAssertion) || fmt.Sprint(err) != fmt.Sprint(wantErr) {
					t.Fatalf("%s %v %v element %d = %#x: err %v, reference %v", qc.name, dt, shape, i, code, err, wantErr)
				}
				c, err := NewRowCalibration(qc.q, w)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := c.Amax(calibSplit(t, rng, c)); !errors.Is(err, ErrAssertion) {
					t.Fatalf("%s %v %v split: err %v, want ErrAssertion", qc.name, dt, shape, err)
				}
			}
		}
	}
}

func TestCalibrateAmaxRefusals(t *testing.T) {
	w := calibRandom(rand.New(rand.NewPCG(1, 1)), BF16, []int64{4, 8})
	for _, tc := range []struct {
		name string
		q    *Quantizer
		w    Tensor
		want error
	}{
		{"nil quantizer", nil, w, ErrShape},
		{"sequential", &Quantizer{Class: "SequentialQuantizer", Sequential: []*Quantizer{{}, {}}}, w, ErrShape},
		{"F8 weight", &Quantizer{NumBits: BitsE4M3}, Tensor{DType: F8E4M3, Shape: []int64{2}, Data: []byte{1, 2}}, ErrUnsupportedDType},
		{"short data", &Quantizer{NumBits: BitsE4M3}, Tensor{DType: BF16, Shape: []int64{2, 2}, Data: w.Data[:6]}, ErrShape},
		{"blocks on a 0-dim weight", &Quantizer{NumBits: BitsInt4, BlockSizes: &BlockSizes{Dims: map[int]int{-1: 8}}},
			Tensor{DType: BF16, Shape: []int64{}, Data: w.Data[:2]}, ErrShape},
		{"last axis named twice", &Quantizer{NumBits: BitsInt4, BlockSizes: &BlockSizes{Dims: map[int]int{-1: 8, 1: 0}}}, w, ErrShape},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := CalibrateAmax(tc.q, tc.w); !errors.Is(err, tc.want) {
				t.Fatalf("err %v, want %v", err, tc.want)
			}
		})
	}
}

func TestCalibMaxMatchesLoop(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for n := range 140 {
		for range 30 {
			data := make([]byte, n)
			for i := range data {
				data[i] = byte(rng.Uint32())
			}
			var w16 uint16
			for i := 0; i+1 < len(data); i += 2 {
				w16 = max(w16, binary.LittleEndian.Uint16(data[i:])&0x7FFF)
			}
			var w32 uint32
			for i := 0; i+3 < len(data); i += 4 {
				w32 = max(w32, binary.LittleEndian.Uint32(data[i:])&0x7FFFFFFF)
			}
			if got := calibMax16(data); got != uint32(w16) {
				t.Fatalf("16-bit, %d bytes: got %#x want %#x", n, got, w16)
			}
			if got := calibMax32(data); got != w32 {
				t.Fatalf("32-bit, %d bytes: got %#x want %#x", n, got, w32)
			}
		}
	}
}

// BenchmarkCalibrateAmax compares CalibrateAmax with the float32 reference on a
// 4096×4096 BF16 weight; MB/s are of weight bytes.
func BenchmarkCalibrateAmax(b *testing.B) {
	w := calibRandom(rand.New(rand.NewPCG(1, 2)), BF16, []int64{4096, 4096})
	for _, qc := range []struct {
		name string
		q    *Quantizer
	}{
		{"per-tensor", calibQuantizers[0].q},
		{"axis0", calibQuantizers[1].q},
		{"int4_blocks128", calibQuantizers[6].q},
		{"2d_blocks128", calibQuantizers[11].q},
	} {
		for _, impl := range []struct {
			name string
			f    func(*Quantizer, Tensor) (Tensor, error)
		}{{"rows", CalibrateAmax}, {"reference", calibrateAmaxRef}} {
			b.Run(qc.name+"/"+impl.name, func(b *testing.B) {
				b.SetBytes(int64(len(w.Data)))
				for b.Loop() {
					if _, err := impl.f(qc.q, w); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	}
}
