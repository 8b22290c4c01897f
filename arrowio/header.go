package arrowio

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"

	"github.com/quantstream/quantstream/quant"
)

// These limits are part of how we read the safetensors on-disk format.
const (
	// MaxHeaderSize bounds the JSON header, as the reference implementation does.
	MaxHeaderSize = 100_000_000
	headerLenSize = 8
)

var (
	// ErrCorrupt marks a file whose bytes contradict the safetensors format.
	ErrCorrupt = errors.New("arrowio: corrupt safetensors")
	// ErrHeaderTooLarge marks a header length beyond MaxHeaderSize.
	ErrHeaderTooLarge = errors.New("arrowio: safetensors header too large")
)

// TensorHeader is one entry of a safetensors header. Begin and End are relative to
// the start of the data section.
type TensorHeader struct {
	Name  string
	DType quant.DType
	Shape []int64
	Begin int64
	End   int64
}

// Header is a parsed, validated safetensors header.
type Header struct {
	Tensors  []TensorHeader // sorted by Begin
	Metadata map[string]string
	DataOff  int64 // file offset of the data section: 8 + header length
	byName   map[string]int
}

// Lookup returns the header of a tensor by name.
func (h *Header) Lookup(name string) (TensorHeader, bool) {
	i, ok := h.byName[name]
	if !ok {
		return TensorHeader{}, false
	}
	return h.Tensors[i], true
}

type rawEntry struct {
	DType       string  `json:"dtype"`
	Shape       []int64 `json:"shape"`
	DataOffsets []int64 `json:"data_offsets"`
}

// ReadHeader reads and validates the header of a safetensors file of size bytes.
// file names the file in errors.
func ReadHeader(r io.ReaderAt, size int64, file string) (*Header, error) {
	var lenBuf [headerLenSize]byte
	if size < headerLenSize {
		return nil, fmt.Errorf("%w: %s: %d bytes, shorter than the 8-byte header length", ErrCorrupt, file, size)
	}
	if _, err := r.ReadAt(lenBuf[:], 0); err != nil {
		return nil, fmt.Errorf("%w: %s: reading header length: %v", ErrCorrupt, file, err)
	}
	n := binary.LittleEndian.Uint64(lenBuf[:])
	if n > MaxHeaderSize {
		return nil, fmt.Errorf("%w: %s: header length %d > %d", ErrHeaderTooLarge, file, n, MaxHeaderSize)
	}
	if int64(n) > size-headerLenSize {
		return nil, fmt.Errorf("%w: %s: header length %d beyond the %d-byte file", ErrCorrupt, file, n, size)
	}
	buf := make([]byte, n)
	if _, err := r.ReadAt(buf, headerLenSize); err != nil {
		return nil, fmt.Errorf("%w: %s: reading header: %v", ErrCorrupt, file, err)
	}
	return ParseHeader(buf, size-headerLenSize-int64(n), file)
}

// ParseHeader validates the JSON header bytes against a data section of dataSize
// bytes: known dtypes, byte lengths matching shapes, offsets inside the data, the
// tensors contiguous and non-overlapping, names unique.
func ParseHeader(buf []byte, dataSize int64, file string) (*Header, error) {
	var raw map[string]json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(buf))
	if err := dec.Decode(&raw); err != nil {
		return nil, fmt.Errorf("%w: %s: header is not a JSON object: %v", ErrCorrupt, file, err)
	}
	h := &Header{DataOff: headerLenSize + int64(len(buf)), byName: make(map[string]int, len(raw))}
	for name, msg := range raw {
		if name == "__metadata__" {
			if err := json.Unmarshal(msg, &h.Metadata); err != nil {
				return nil, fmt.Errorf("%w: %s: __metadata__ is not a string map: %v", ErrCorrupt, file, err)
			}
			continue
		}
		var e rawEntry
		if err := json.Unmarshal(msg, &e); err != nil {
			return nil, fmt.Errorf("%w: %s: tensor %q: %v", ErrCorrupt, file, name, err)
		}
		dt, err := quant.ParseDType(e.DType)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: tensor %q: %v", ErrCorrupt, file, name, err)
		}
		if len(e.DataOffsets) != 2 {
			return nil, fmt.Errorf("%w: %s: tensor %q: data_offsets must have 2 entries", ErrCorrupt, file, name)
		}
		if e.Shape == nil {
			return nil, fmt.Errorf("%w: %s: tensor %q: no shape", ErrCorrupt, file, name)
		}
		numel := int64(1)
		for _, d := range e.Shape {
			if d < 0 || (d > 0 && numel > (1<<62)/d) {
				return nil, fmt.Errorf("%w: %s: tensor %q: bad shape %v", ErrCorrupt, file, name, e.Shape)
			}
			numel *= d
		}
		want, ok := dt.ByteLen(numel)
		if !ok {
			return nil, fmt.Errorf("%w: %s: tensor %q: %v %v is not a whole number of bytes", ErrCorrupt, file, name, dt, e.Shape)
		}
		b, end := e.DataOffsets[0], e.DataOffsets[1]
		if b < 0 || end < b || end > dataSize {
			return nil, fmt.Errorf("%w: %s: tensor %q: data_offsets [%d,%d) beyond the %d-byte data section", ErrCorrupt, file, name, b, end, dataSize)
		}
		if end-b != want {
			return nil, fmt.Errorf("%w: %s: tensor %q: %d bytes for %v %v, want %d", ErrCorrupt, file, name, end-b, dt, e.Shape, want)
		}
		if _, dup := h.byName[name]; dup {
			return nil, fmt.Errorf("%w: %s: duplicate tensor %q", ErrCorrupt, file, name)
		}
		h.byName[name] = len(h.Tensors)
		h.Tensors = append(h.Tensors, TensorHeader{Name: name, DType: dt, Shape: e.Shape, Begin: b, End: end})
	}
	// Go's JSON decoder keeps the last of duplicate keys silently; catch them by counting.
	if err := checkDuplicateKeys(buf); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrCorrupt, file, err)
	}
	sort.Slice(h.Tensors, func(i, j int) bool {
		a, b := h.Tensors[i], h.Tensors[j]
		if a.Begin != b.Begin {
			return a.Begin < b.Begin
		}
		return a.End < b.End
	})
	var pos int64
	for i, t := range h.Tensors {
		h.byName[t.Name] = i
		if t.Begin != pos {
			if t.Begin < pos {
				return nil, fmt.Errorf("%w: %s: tensor %q at [%d,%d) overlaps the previous tensor", ErrCorrupt, file, t.Name, t.Begin, t.End)
			}
			return nil, fmt.Errorf("%w: %s: gap before tensor %q at %d (data is not contiguous)", ErrCorrupt, file, t.Name, t.Begin)
		}
		pos = t.End
	}
	if pos != dataSize {
		return nil, fmt.Errorf("%w: %s: tensors cover %d bytes of a %d-byte data section", ErrCorrupt, file, pos, dataSize)
	}
	return h, nil
}

func checkDuplicateKeys(buf []byte) error {
	dec := json.NewDecoder(bytes.NewReader(buf))
	if _, err := dec.Token(); err != nil { // {
		return err
	}
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return err
		}
		k, _ := tok.(string)
		if seen[k] {
			return fmt.Errorf("duplicate tensor %q", k)
		}
		seen[k] = true
		var skip json.RawMessage
		if err := dec.Decode(&skip); err != nil {
			return err
		}
	}
	return nil
}
