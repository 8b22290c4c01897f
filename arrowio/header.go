package arrowio

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"unicode/utf8"

	"github.com/quantstream/quantstream"
	"github.com/quantstream/quantstream/quant"
)

// These limits and constants are part of how we read and write the safetensors
// on-disk format; changing them changes which files we accept or the bytes we write.
const (
	// MaxHeaderSize bounds the JSON header, as the reference implementation does.
	MaxHeaderSize = 100_000_000
	// headerLenSize is the little-endian uint64 that starts every file.
	headerLenSize = 8
	// headerAlign: the reference writer pads the JSON with spaces so that the data
	// section starts 8-byte aligned.
	headerAlign = 8
	// metadataKey is the reserved header key holding the string→string metadata.
	metadataKey = "__metadata__"
)

var (
	// ErrCorrupt marks a file whose bytes contradict the safetensors format.
	ErrCorrupt = errors.New("arrowio: corrupt safetensors")
	// ErrHeaderTooLarge marks a header length beyond MaxHeaderSize.
	ErrHeaderTooLarge = errors.New("arrowio: safetensors header too large")
)

// TensorHeader is one entry of a safetensors header: the tensor's header and where
// its bytes lie, Begin and End relative to the start of the data section.
type TensorHeader struct {
	quantstream.TensorInfo
	Begin int64
	End   int64
}

// Size is the tensor's length in bytes.
func (t TensorHeader) Size() int64 { return t.End - t.Begin }

// Header is a parsed, validated safetensors header.
type Header struct {
	Tensors  []TensorHeader // sorted by Begin, then by name
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

// DataSize is the length of the data section.
func (h *Header) DataSize() int64 {
	if len(h.Tensors) == 0 {
		return 0
	}
	return h.Tensors[len(h.Tensors)-1].End
}

type rawEntry struct {
	DType       string   `json:"dtype"`
	Shape       []int64  `json:"shape"`
	DataOffsets *[]int64 `json:"data_offsets"`
}

// ReadHeader reads and validates the header of a safetensors file of size bytes.
// It reads only the header (at most MaxHeaderSize bytes). file names the file in errors.
func ReadHeader(r io.ReaderAt, size int64, file string) (*Header, error) {
	var lenBuf [headerLenSize]byte
	if size < headerLenSize {
		return nil, fmt.Errorf("%w: %s: %d bytes, shorter than the 8-byte header length", ErrCorrupt, file, size)
	}
	if _, err := r.ReadAt(lenBuf[:], 0); err != nil {
		return nil, readErr(err, file, "reading header length")
	}
	n := binary.LittleEndian.Uint64(lenBuf[:])
	if n > MaxHeaderSize {
		return nil, fmt.Errorf("%w: %s: header length %d > %d", ErrHeaderTooLarge, file, n, MaxHeaderSize)
	}
	if int64(n) > size-headerLenSize {
		return nil, fmt.Errorf("%w: %s: header length %d beyond the %d-byte file", ErrCorrupt, file, n, size)
	}
	// n is bounded by MaxHeaderSize and by the file size, so this allocation is too.
	buf := make([]byte, n)
	if _, err := r.ReadAt(buf, headerLenSize); err != nil {
		return nil, readErr(err, file, "reading header")
	}
	return ParseHeader(buf, size-headerLenSize-int64(n), file)
}

// readErr labels a short read as corruption (the file ended early) and wraps any
// other I/O error as it is.
func readErr(err error, file, what string) error {
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return fmt.Errorf("%w: %s: %s: file truncated: %v", ErrCorrupt, file, what, err)
	}
	return fmt.Errorf("arrowio: %s: %s: %w", file, what, err)
}

// ParseHeader validates the JSON header bytes buf against a data section of dataSize
// bytes: a JSON object and nothing after it but whitespace, valid UTF-8, known dtypes,
// byte lengths matching dtype and shape, offsets inside the data section, tensors
// contiguous and non-overlapping and covering the whole section, names unique.
// It never panics and allocates in proportion to len(buf).
func ParseHeader(buf []byte, dataSize int64, file string) (*Header, error) {
	if !utf8.Valid(buf) {
		return nil, fmt.Errorf("%w: %s: header is not valid UTF-8", ErrCorrupt, file)
	}
	dec := json.NewDecoder(bytes.NewReader(buf))
	tok, err := dec.Token()
	if err != nil || tok != json.Delim('{') {
		return nil, fmt.Errorf("%w: %s: header is not a JSON object", ErrCorrupt, file)
	}
	h := &Header{DataOff: headerLenSize + int64(len(buf)), byName: map[string]int{}}
	seenMeta := false
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, fmt.Errorf("%w: %s: header JSON: %v", ErrCorrupt, file, err)
		}
		name, _ := tok.(string)
		if name == metadataKey {
			if seenMeta {
				return nil, fmt.Errorf("%w: %s: duplicate %s", ErrCorrupt, file, metadataKey)
			}
			seenMeta = true
			if err := dec.Decode(&h.Metadata); err != nil {
				return nil, fmt.Errorf("%w: %s: %s is not a string map: %v", ErrCorrupt, file, metadataKey, err)
			}
			continue
		}
		var e rawEntry
		if err := dec.Decode(&e); err != nil {
			return nil, fmt.Errorf("%w: %s: tensor %q: %v", ErrCorrupt, file, name, err)
		}
		if name == "" {
			// An empty name cannot be addressed by a weight map or a state dict.
			return nil, fmt.Errorf("%w: %s: tensor with an empty name", ErrCorrupt, file)
		}
		if _, dup := h.byName[name]; dup {
			return nil, fmt.Errorf("%w: %s: duplicate tensor %q", ErrCorrupt, file, name)
		}
		t, err := checkEntry(name, e, dataSize)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: %w", ErrCorrupt, file, err)
		}
		h.byName[name] = len(h.Tensors)
		h.Tensors = append(h.Tensors, t)
	}
	if _, err := dec.Token(); err != nil { // the closing '}'
		return nil, fmt.Errorf("%w: %s: header JSON: %v", ErrCorrupt, file, err)
	}
	for _, c := range buf[dec.InputOffset():] {
		if c != ' ' && c != '\t' && c != '\n' && c != '\r' {
			return nil, fmt.Errorf("%w: %s: bytes after the header's JSON object", ErrCorrupt, file)
		}
	}
	slices.SortFunc(h.Tensors, func(a, b TensorHeader) int {
		return cmp.Or(cmp.Compare(a.Begin, b.Begin), cmp.Compare(a.End, b.End), cmp.Compare(a.Name, b.Name))
	})
	var pos int64
	for i, t := range h.Tensors {
		h.byName[t.Name] = i
		if t.Begin != pos {
			if t.Begin < pos {
				return nil, fmt.Errorf("%w: %s: tensor %q at [%d,%d) overlaps the previous tensor ending at %d", ErrCorrupt, file, t.Name, t.Begin, t.End, pos)
			}
			return nil, fmt.Errorf("%w: %s: gap of %d bytes before tensor %q at %d (data is not contiguous)", ErrCorrupt, file, t.Begin-pos, t.Name, t.Begin)
		}
		pos = t.End
	}
	if pos != dataSize {
		return nil, fmt.Errorf("%w: %s: tensors cover %d bytes of a %d-byte data section", ErrCorrupt, file, pos, dataSize)
	}
	return h, nil
}

// checkEntry validates one tensor entry on its own; the caller adds the file.
func checkEntry(name string, e rawEntry, dataSize int64) (TensorHeader, error) {
	dt, err := quant.ParseDType(e.DType)
	if err != nil {
		return TensorHeader{}, fmt.Errorf("tensor %q: %w", name, err)
	}
	if e.DataOffsets == nil || len(*e.DataOffsets) != 2 {
		return TensorHeader{}, fmt.Errorf("tensor %q: data_offsets must have 2 entries", name)
	}
	if e.Shape == nil {
		return TensorHeader{}, fmt.Errorf("tensor %q: no shape", name)
	}
	want, ok := byteLen(dt, e.Shape)
	if !ok {
		return TensorHeader{}, fmt.Errorf("tensor %q: shape %v of %v is negative, overflows or is not a whole number of bytes", name, e.Shape, dt)
	}
	b, end := (*e.DataOffsets)[0], (*e.DataOffsets)[1]
	if b < 0 || end < b || end > dataSize {
		return TensorHeader{}, fmt.Errorf("tensor %q: data_offsets [%d,%d) beyond the %d-byte data section", name, b, end, dataSize)
	}
	if end-b != want {
		return TensorHeader{}, fmt.Errorf("tensor %q: data_offsets [%d,%d) hold %d bytes, %v %v needs %d", name, b, end, end-b, dt, e.Shape, want)
	}
	return TensorHeader{TensorInfo: quantstream.TensorInfo{Name: name, DType: dt, Shape: e.Shape}, Begin: b, End: end}, nil
}

// byteLen is the byte length of a tensor, checking every step for overflow.
func byteLen(dt quant.DType, shape []int64) (int64, bool) {
	numel := int64(1)
	for _, d := range shape {
		if d < 0 || (d > 0 && numel > (1<<62)/d) {
			return 0, false
		}
		numel *= d
	}
	return dt.ByteLen(numel)
}

// dtypeRank orders dtypes as the reference writer's Dtype enum does ("increasing
// alignment order"). The writer lays tensors out by descending rank, then by name,
// so that our shards are byte-identical to safetensors.torch.save_file's.
// Part of the on-disk layout we reproduce.
var dtypeRank = [...]int{
	quant.BOOL: 0, quant.F4: 1, quant.F6E2M3: 2, quant.F6E3M2: 3, quant.U8: 4, quant.I8: 5,
	quant.F8E5M2: 6, quant.F8E4M3: 7, quant.F8E8M0: 8, quant.I16: 9, quant.U16: 10,
	quant.F16: 11, quant.BF16: 12, quant.I32: 13, quant.U32: 14, quant.F32: 15,
	quant.C64: 16, quant.F64: 17, quant.I64: 18, quant.U64: 19,
}

// layoutOrder sorts tensors into the reference writer's data order.
func layoutOrder(a, b TensorHeader) int {
	return cmp.Or(cmp.Compare(dtypeRank[b.DType], dtypeRank[a.DType]), cmp.Compare(a.Name, b.Name))
}

// EncodeHeader returns the header bytes (length prefix, JSON, space padding) for
// tensors whose Begin/End are already laid out, in the reference writer's format:
// compact JSON, __metadata__ first (keys sorted), then the tensors in the order
// given, padded with spaces to a multiple of 8 bytes.
func EncodeHeader(tensors []TensorHeader, metadata map[string]string) []byte {
	var b bytes.Buffer
	b.Write(make([]byte, headerLenSize))
	b.WriteByte('{')
	first := true
	if metadata != nil {
		b.WriteString(`"__metadata__":{`)
		keys := make([]string, 0, len(metadata))
		for k := range metadata {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for i, k := range keys {
			if i > 0 {
				b.WriteByte(',')
			}
			writeSerdeString(&b, k)
			b.WriteByte(':')
			writeSerdeString(&b, metadata[k])
		}
		b.WriteByte('}')
		first = false
	}
	var num []byte
	for _, t := range tensors {
		if !first {
			b.WriteByte(',')
		}
		first = false
		writeSerdeString(&b, t.Name)
		b.WriteString(`:{"dtype":"`)
		b.WriteString(t.DType.String())
		b.WriteString(`","shape":[`)
		for i, d := range t.Shape {
			if i > 0 {
				b.WriteByte(',')
			}
			num = strconv.AppendInt(num[:0], d, 10)
			b.Write(num)
		}
		b.WriteString(`],"data_offsets":[`)
		num = strconv.AppendInt(num[:0], t.Begin, 10)
		b.Write(num)
		b.WriteByte(',')
		num = strconv.AppendInt(num[:0], t.End, 10)
		b.Write(num)
		b.WriteString("]}")
	}
	b.WriteByte('}')
	for (b.Len()-headerLenSize)%headerAlign != 0 {
		b.WriteByte(' ')
	}
	out := b.Bytes()
	binary.LittleEndian.PutUint64(out, uint64(len(out)-headerLenSize))
	return out
}

// writeSerdeString writes s as Rust's serde_json does: only '"', '\\' and control
// characters are escaped; non-ASCII is written as UTF-8.
func writeSerdeString(b *bytes.Buffer, s string) {
	const hex = "0123456789abcdef"
	b.WriteByte('"')
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c == '"':
			b.WriteString(`\"`)
		case c == '\\':
			b.WriteString(`\\`)
		case c == '\n':
			b.WriteString(`\n`)
		case c == '\r':
			b.WriteString(`\r`)
		case c == '\t':
			b.WriteString(`\t`)
		case c == '\b':
			b.WriteString(`\b`)
		case c == '\f':
			b.WriteString(`\f`)
		case c < 0x20:
			b.WriteString(`\u00`)
			b.WriteByte(hex[c>>4])
			b.WriteByte(hex[c&0xf])
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte('"')
}
