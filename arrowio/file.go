package arrowio

import (
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/quantstream/quantstream/quant"
)

// ErrNotFound is returned for a tensor or file that is not where it was looked for.
var ErrNotFound = errors.New("arrowio: not found")

// File is an open safetensors file with a validated header. Reads go through
// io.ReaderAt (pread), so a File is safe for concurrent reads and is never loaded
// whole.
type File struct {
	Path   string
	Header *Header
	r      io.ReaderAt
	closer io.Closer
	size   int64
}

// Open opens a safetensors file and validates its header against its size.
func Open(path string) (*File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("arrowio: %w", err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("arrowio: %w", err)
	}
	sf, err := NewFile(f, st.Size(), path)
	if err != nil {
		f.Close()
		return nil, err
	}
	sf.closer = f
	return sf, nil
}

// NewFile reads the header of a safetensors file held in r (size bytes, named name
// in errors). The File reads r on demand; the caller keeps ownership of r, and Close
// does not close it.
func NewFile(r io.ReaderAt, size int64, name string) (*File, error) {
	h, err := ReadHeader(r, size, name)
	if err != nil {
		return nil, err
	}
	return &File{Path: name, Header: h, r: r, size: size}, nil
}

// Close closes the file if Open opened it.
func (f *File) Close() error {
	if f.closer == nil {
		return nil
	}
	return f.closer.Close()
}

// Size is the file's size in bytes.
func (f *File) Size() int64 { return f.size }

// Section returns a reader over the bytes of tensor t, which must come from f.Header.
func (f *File) Section(t TensorHeader) *io.SectionReader {
	return io.NewSectionReader(f.r, f.Header.DataOff+t.Begin, t.Size())
}

// ReadInto reads tensor t (from f.Header) into dst, which must be exactly t.Size()
// bytes. It does not retain dst. Safe for concurrent use.
func (f *File) ReadInto(t TensorHeader, dst []byte) error {
	if int64(len(dst)) != t.Size() {
		return fmt.Errorf("arrowio: %s: tensor %q: buffer of %d bytes for %d", f.Path, t.Name, len(dst), t.Size())
	}
	if len(dst) == 0 {
		return nil
	}
	n, err := f.r.ReadAt(dst, f.Header.DataOff+t.Begin)
	if n == len(dst) {
		return nil // ReadAt may report io.EOF with a full read at the end of the file
	}
	if err == nil {
		err = io.ErrUnexpectedEOF
	}
	return readErr(err, f.Path, fmt.Sprintf("tensor %q", t.Name))
}

// ReadTensor reads a tensor by name into a new slice owned by the caller. For tests
// and small tensors; the streaming path reads into allocator-owned buffers.
func (f *File) ReadTensor(name string) (quant.Tensor, error) {
	t, ok := f.Header.Lookup(name)
	if !ok {
		return quant.Tensor{}, fmt.Errorf("%w: tensor %q in %s", ErrNotFound, name, f.Path)
	}
	buf := make([]byte, t.Size())
	if err := f.ReadInto(t, buf); err != nil {
		return quant.Tensor{}, err
	}
	return quant.Tensor{DType: t.DType, Shape: t.Shape, Data: buf}, nil
}
