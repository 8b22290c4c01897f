package pipeline_test

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/apache/arrow-go/v18/arrow/memory"

	"github.com/quantstream/quantstream"
	"github.com/quantstream/quantstream/quant"
)

var errBoom = errors.New("boom")

// tracker measures the data bytes of live layers independently of the pipeline's
// own accounting: sources add what they create, stages add their output and
// subtract their input, sinks subtract at the end of Write.
type tracker struct {
	cur, peak atomic.Int64
}

func (tr *tracker) add(n int64) {
	if tr == nil {
		return
	}
	c := tr.cur.Add(n)
	for {
		p := tr.peak.Load()
		if c <= p || tr.peak.CompareAndSwap(p, c) {
			return
		}
	}
}

// layerSpec is the headers of test layer i: a F16 weight whose row count varies, so
// layers differ in size, and a BF16 norm that the test stages leave alone.
func layerSpec(i, n int) quantstream.LayerInfo { return layerSpecCols(i, n, 32) }

func layerSpecCols(i, n int, cols int64) quantstream.LayerInfo {
	index := i
	if i == n-1 {
		index = quantstream.NonDecoder
	}
	prefix := fmt.Sprintf("model.layers.%d.", index)
	rows := int64(8 + (i%3)*8)
	return quantstream.LayerInfo{Index: index, Prefix: prefix, Tensors: []quantstream.TensorInfo{
		{Name: prefix + "w", DType: quant.F16, Shape: []int64{rows, cols}},
		{Name: prefix + "norm", DType: quant.BF16, Shape: []int64{cols}},
	}}
}

// testSource yields n layers built from layerSpec with deterministic data.
type testSource struct {
	mem    memory.Allocator
	tr     *tracker
	infos  []quantstream.LayerInfo
	pos    int
	hook   func(ctx context.Context, pos int) error // may panic
	active atomic.Int32
	calls  atomic.Int32
}

func newTestSource(mem memory.Allocator, tr *tracker, n int) *testSource {
	return newTestSourceCols(mem, tr, n, 32)
}

func newTestSourceCols(mem memory.Allocator, tr *tracker, n int, cols int64) *testSource {
	s := &testSource{mem: mem, tr: tr}
	for i := range n {
		s.infos = append(s.infos, layerSpecCols(i, n, cols))
	}
	return s
}

func (s *testSource) Layers() []quantstream.LayerInfo { return s.infos }

func (s *testSource) Next(ctx context.Context) (*quantstream.Layer, error) {
	s.active.Add(1)
	defer s.active.Add(-1)
	s.calls.Add(1)
	if s.pos >= len(s.infos) {
		return nil, io.EOF
	}
	pos := s.pos
	s.pos++
	if s.hook != nil {
		if err := s.hook(ctx, pos); err != nil {
			return nil, err
		}
	}
	info := s.infos[pos]
	var ts []quantstream.Tensor
	for k, ti := range info.Tensors {
		dt := ti.DType
		n, err := ti.DataBytes()
		if err != nil {
			return nil, err
		}
		data := make([]byte, n)
		// A 251-byte period (prime) keeps layers distinct at the cost of one copy per
		// period rather than arithmetic per byte, so benchmarks measure the stages.
		var period [251]byte
		for j := range period {
			period[j] = byte(pos*31 + k*7 + j*13)
		}
		for j := 0; j < len(data); j += len(period) {
			copy(data[j:], period[:])
		}
		ts = append(ts, quantstream.Tensor{Name: ti.Name, Tensor: quant.Tensor{DType: dt, Shape: ti.Shape, Data: data}})
	}
	l, err := quantstream.NewLayer(s.mem, info.Index, info.Prefix, ts)
	if err != nil {
		return nil, err
	}
	s.tr.add(dataBytes(l))
	return l, nil
}

// convStage turns every tensor of dtype from into dtype to, with data derived from
// the input so that any mix-up of layers shows in the output bytes.
type convStage struct {
	name     string
	from, to quant.DType
	mem      memory.Allocator
	tr       *tracker
	delay    func(layer int) time.Duration              // may be nil
	hook     func(ctx context.Context, layer int) error // may be nil; may panic
	liar     bool                                       // produce a shape other than planned
	active   atomic.Int32
	calls    atomic.Int32
}

func (s *convStage) Name() string { return s.name }

func (s *convStage) Plan(in quantstream.LayerInfo) ([]quantstream.TensorInfo, error) {
	out := slices.Clone(in.Tensors)
	for i := range out {
		if out[i].DType == s.from {
			out[i].DType = s.to
		}
	}
	return out, nil
}

func (s *convStage) Process(ctx context.Context, in *quantstream.Layer) (_ *quantstream.Layer, err error) {
	s.active.Add(1)
	defer s.active.Add(-1)
	s.calls.Add(1)
	inBytes := dataBytes(in)
	// Release the input on every path, panics included, as the contract asks.
	defer func() {
		if in != nil {
			in.Release()
			s.tr.add(-inBytes)
		}
	}()
	if s.hook != nil {
		if err := s.hook(ctx, in.Index()); err != nil {
			return nil, err
		}
	}
	if s.delay != nil {
		select {
		case <-time.After(s.delay(in.Index())):
		case <-ctx.Done():
			return nil, context.Cause(ctx)
		}
	}
	var ts []quantstream.Tensor
	for _, t := range in.Tensors() {
		if t.DType == s.from {
			n := int64(len(t.Data)) * int64(s.to.Bits()) / int64(s.from.Bits())
			data := make([]byte, n)
			for j := range data {
				data[j] = t.Data[int64(j)*int64(len(t.Data))/n] ^ byte(j) ^ s.name[0]
			}
			t.DType, t.Data = s.to, data
			if s.liar {
				t.Shape = []int64{n * 8 / int64(s.to.Bits())}
			}
		}
		ts = append(ts, t)
	}
	out, err := quantstream.NewLayer(s.mem, in.Index(), in.Prefix(), ts)
	if err != nil {
		return nil, err
	}
	s.tr.add(dataBytes(out))
	return out, nil
}

// collectSink serialises every layer it is lent, so runs can be compared by bytes.
type collectSink struct {
	tr     *tracker
	hook   func(ctx context.Context, n int) error // called before the nth write; may panic
	mu     sync.Mutex
	buf    bytes.Buffer
	order  []int
	active atomic.Int32
}

func (s *collectSink) Write(ctx context.Context, l *quantstream.Layer) error {
	s.active.Add(1)
	defer s.active.Add(-1)
	defer s.tr.add(-dataBytes(l))
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.hook != nil {
		if err := s.hook(ctx, len(s.order)); err != nil {
			return err
		}
	}
	s.order = append(s.order, l.Index())
	for _, t := range l.Tensors() {
		fmt.Fprintf(&s.buf, "%s %s %v %d\n", t.Name, t.DType, t.Shape, len(t.Data))
		binary.Write(&s.buf, binary.LittleEndian, t.Data)
	}
	return nil
}

func wantOrder(n int) []int {
	var o []int
	for i := range n {
		o = append(o, layerSpec(i, n).Index)
	}
	return o
}

// dataBytes stands in for Layer.DataBytes, which panics on the offset one past the
// last row (arrow's ValueOffset(n) is out of range).
func dataBytes(l *quantstream.Layer) int64 {
	var n int64
	for _, t := range l.Tensors() {
		n += int64(len(t.Data))
	}
	return n
}

type discardSink struct{}

func (discardSink) Write(context.Context, *quantstream.Layer) error { return nil }
