package convert

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/quantstream/quantstream"
	"github.com/quantstream/quantstream/arrowio"
	"github.com/quantstream/quantstream/quant"
)

// passChunk is the piece in which passAmax reads a weight: one buffer, reused, so
// that the pass costs a few MiB whatever the weight's size.
const passChunk = 8 << 20

// passable reports whether amax buffer name, which the stage adds, can be computed
// before the pipeline runs by passAmax, exactly as Process computes it: a
// constant_amax, or the per-tensor amax of a whole stored 16- or 32-bit float weight
// (the fast path of amax: the largest magnitude bit pattern, a maximum that does not
// depend on how the weight is cut). Block, channel and expert amaxes, a static
// NVFP4 global amax and derived weights are not.
func (s *calibrateStage) passable(ck *arrowio.Checkpoint, name string) bool {
	_, _, ok := s.passInfo(ck, name)
	return ok
}

// passInfo is the buffer's header and the weight it is computed from (no weight for
// a constant).
func (s *calibrateStage) passInfo(ck *arrowio.Checkpoint, name string) (quantstream.TensorInfo, *arrowio.TensorRef, bool) {
	var info quantstream.TensorInfo
	found := false
	for _, infos := range s.byWeight {
		for _, t := range infos {
			if t.Name == name {
				info, found = t, true
			}
		}
	}
	qn, isAmax := strings.CutSuffix(name, "._amax")
	if !found || !isAmax || s.globals[name] != nil || quant.Numel(info.Shape) != 1 {
		return info, nil, false
	}
	if _, ok := s.q.Constants[qn]; ok {
		return info, nil, true
	}
	slot, ok := s.q.Slot(qn)
	if !ok || slot.Expert >= 0 {
		return info, nil, false
	}
	ref, ok := ck.Lookup(slot.Weight)
	if !ok || ref.IsDerived() || ref.Section() == nil || absMaxBits(ref.DType, nil) == nil {
		return info, nil, false
	}
	return info, &ref, true
}

// passAmax computes amax buffer name (passable) reading its weight from ck in
// len(buf)-byte pieces into buf: bytes equal to the buffer Process appends.
func (s *calibrateStage) passAmax(ctx context.Context, ck *arrowio.Checkpoint, name string, buf []byte) (quant.Tensor, error) {
	info, ref, ok := s.passInfo(ck, name)
	if !ok {
		return quant.Tensor{}, fmt.Errorf("convert: %s cannot be calibrated before its layer is read", name)
	}
	qn := strings.TrimSuffix(name, "._amax")
	if v, ok := s.q.Constants[qn]; ok {
		return quant.FromFloat32(quant.F32, []int64{}, []float32{v})
	}
	dt := ref.DType
	esize := int64(dt.Bits() / 8)
	sec := ref.Section()
	size := sec.Size()
	chunk := int64(len(buf)) / esize * esize
	if chunk == 0 {
		return quant.Tensor{}, fmt.Errorf("convert: a buffer of %d bytes for %s", len(buf), ref.Name)
	}
	var m uint32
	for off := int64(0); off < size; off += chunk {
		if err := ctx.Err(); err != nil {
			return quant.Tensor{}, err
		}
		n := min(chunk, size-off)
		got, err := sec.ReadAt(buf[:n], off)
		if int64(got) != n {
			if err == nil || errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return quant.Tensor{}, fmt.Errorf("convert: reading %s: %w", ref.Name, err)
		}
		m = max(m, absMaxBits(dt, buf[:n])())
	}
	v, finite := bitsValue(dt, m)
	if !finite {
		return quant.Tensor{}, fmt.Errorf("quantizer %s: weight %s: %w: detected nan or inf values in amax", qn, ref.Name, quant.ErrAssertion)
	}
	return quant.FromFloat32(info.DType, info.Shape, []float32{v})
}
