package arrowio

import (
	"fmt"
	"io"
	"os"

	"github.com/quantstream/quantstream/quant"
)

// File is an open safetensors file. Reads go through io.ReaderAt; the file is never
// loaded whole.
type File struct {
	Path   string
	Header *Header
	f      *os.File
	size   int64
}

// Open opens and validates a safetensors file.
func Open(path string) (*File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	h, err := ReadHeader(f, st.Size(), path)
	if err != nil {
		f.Close()
		return nil, err
	}
	return &File{Path: path, Header: h, f: f, size: st.Size()}, nil
}

// Close closes the file.
func (f *File) Close() error { return f.f.Close() }

// Section returns a reader over the bytes of one tensor.
func (f *File) Section(t TensorHeader) *io.SectionReader {
	return io.NewSectionReader(f.f, f.Header.DataOff+t.Begin, t.End-t.Begin)
}

// ReadInto reads tensor t into dst, which must be exactly t.End-t.Begin bytes.
func (f *File) ReadInto(t TensorHeader, dst []byte) error {
	if int64(len(dst)) != t.End-t.Begin {
		return fmt.Errorf("arrowio: %s: tensor %q: buffer of %d bytes for %d", f.Path, t.Name, len(dst), t.End-t.Begin)
	}
	if _, err := f.f.ReadAt(dst, f.Header.DataOff+t.Begin); err != nil {
		return fmt.Errorf("%w: %s: tensor %q: %v", ErrCorrupt, f.Path, t.Name, err)
	}
	return nil
}

// ReadTensor reads a tensor by name into a new slice. For tests and small tensors;
// the streaming path reads into allocator-owned buffers with ReadInto.
func (f *File) ReadTensor(name string) (quant.Tensor, error) {
	t, ok := f.Header.Lookup(name)
	if !ok {
		return quant.Tensor{}, fmt.Errorf("arrowio: %s: no tensor %q", f.Path, name)
	}
	buf := make([]byte, t.End-t.Begin)
	if err := f.ReadInto(t, buf); err != nil {
		return quant.Tensor{}, err
	}
	return quant.Tensor{DType: t.DType, Shape: t.Shape, Data: buf}, nil
}
