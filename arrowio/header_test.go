package arrowio

import (
	"bytes"
	"encoding/binary"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/quantstream/quantstream/quant"
)

// rawFile assembles a safetensors file from a header string and data, with the
// header length given explicitly when hdrLen >= 0.
func rawFile(header string, data []byte, hdrLen int64) []byte {
	var b bytes.Buffer
	n := uint64(len(header))
	if hdrLen >= 0 {
		n = uint64(hdrLen)
	}
	binary.Write(&b, binary.LittleEndian, n)
	b.WriteString(header)
	b.Write(data)
	return b.Bytes()
}

func TestOpenGoldenUnit(t *testing.T) {
	path := filepath.Join("..", "testdata", "golden", "unit.safetensors")
	f, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if len(f.Header.Tensors) == 0 {
		t.Fatal("no tensors")
	}
	for _, h := range f.Header.Tensors {
		tt, err := f.ReadTensor(h.Name)
		if err != nil {
			t.Fatal(err)
		}
		if err := tt.Check(); err != nil {
			t.Fatalf("%s: %v", h.Name, err)
		}
	}
}

func TestReadHeaderErrors(t *testing.T) {
	const file = "bad.safetensors"
	ok := `{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}`
	eight := make([]byte, 8)
	cases := []struct {
		name   string
		file   []byte
		want   error
		tensor string // must appear in the message
	}{
		{"empty", nil, ErrCorrupt, ""},
		{"truncated length", []byte{1, 0, 0}, ErrCorrupt, ""},
		{"header length beyond file", rawFile(ok, eight, 1000), ErrCorrupt, ""},
		{"header too large", rawFile(ok, eight, MaxHeaderSize+1), ErrHeaderTooLarge, ""},
		{"header length huge", rawFile(ok, eight, 1<<62), ErrHeaderTooLarge, ""},
		{"invalid JSON", rawFile(`{"a":`, nil, -1), ErrCorrupt, ""},
		{"not an object", rawFile(`[1,2]`, nil, -1), ErrCorrupt, ""},
		{"invalid UTF-8", rawFile("{\"\xff\":1}", nil, -1), ErrCorrupt, ""},
		{"trailing bytes", rawFile(ok+`x`, eight, -1), ErrCorrupt, ""},
		{"unknown dtype", rawFile(`{"w":{"dtype":"F12","shape":[2],"data_offsets":[0,8]}}`, eight, -1), quant.ErrUnknownDType, "w"},
		{"size mismatch", rawFile(`{"w":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}`, eight, -1), ErrCorrupt, "w"},
		{"negative dim", rawFile(`{"w":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}}`, eight, -1), ErrCorrupt, "w"},
		{"overflowing shape", rawFile(`{"w":{"dtype":"F32","shape":[4294967296,4294967296,4],"data_offsets":[0,8]}}`, eight, -1), ErrCorrupt, "w"},
		{"sub-byte not whole bytes", rawFile(`{"w":{"dtype":"F4","shape":[3],"data_offsets":[0,2]}}`, eight[:2], -1), ErrCorrupt, "w"},
		{"no shape", rawFile(`{"w":{"dtype":"F32","data_offsets":[0,8]}}`, eight, -1), ErrCorrupt, "w"},
		{"no offsets", rawFile(`{"w":{"dtype":"F32","shape":[2]}}`, eight, -1), ErrCorrupt, "w"},
		{"offsets wrong arity", rawFile(`{"w":{"dtype":"F32","shape":[2],"data_offsets":[0]}}`, eight, -1), ErrCorrupt, "w"},
		{"offsets beyond data", rawFile(`{"w":{"dtype":"F32","shape":[2],"data_offsets":[8,16]}}`, eight, -1), ErrCorrupt, "w"},
		{"offsets reversed", rawFile(`{"w":{"dtype":"F32","shape":[0],"data_offsets":[8,0]}}`, eight, -1), ErrCorrupt, "w"},
		{"overlap", rawFile(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}`, eight, -1), ErrCorrupt, "b"},
		{"gap", rawFile(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}`, eight, -1), ErrCorrupt, "a"},
		{"data not covered", rawFile(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}`, eight, -1), ErrCorrupt, ""},
		{"duplicate tensor", rawFile(`{"a":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}`, eight, -1), ErrCorrupt, "a"},
		{"duplicate metadata", rawFile(`{"__metadata__":{},"__metadata__":{}}`, nil, -1), ErrCorrupt, ""},
		{"empty tensor name", rawFile(`{"":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}`, make([]byte, 4), -1), ErrCorrupt, ""},
		{"metadata not strings", rawFile(`{"__metadata__":{"a":1}}`, nil, -1), ErrCorrupt, ""},
		{"entry not an object", rawFile(`{"w":[1]}`, nil, -1), ErrCorrupt, "w"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ReadHeader(bytes.NewReader(tc.file), int64(len(tc.file)), file)
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrHeaderTooLarge) {
				t.Errorf("err = %v does not wrap ErrCorrupt", err)
			}
			if !strings.Contains(err.Error(), file) {
				t.Errorf("err = %v does not name the file", err)
			}
			if tc.tensor != "" && !strings.Contains(err.Error(), `"`+tc.tensor+`"`) {
				t.Errorf("err = %v does not name tensor %q", err, tc.tensor)
			}
		})
	}
}

func TestReadHeaderAccepts(t *testing.T) {
	cases := []struct {
		name string
		file []byte
		n    int
	}{
		{"empty object", rawFile(`{}`, nil, -1), 0},
		{"metadata only, padded", rawFile(`{"__metadata__":{"format":"pt"}}      `, nil, -1), 0},
		{"scalar and zero-size tensors", rawFile(`{"s":{"dtype":"BF16","shape":[],"data_offsets":[0,2]},"z":{"dtype":"F32","shape":[0,3],"data_offsets":[2,2]},"y":{"dtype":"U8","shape":[0],"data_offsets":[2,2]}}`, []byte{1, 2}, -1), 3},
		{"any key order", rawFile(`{"b":{"dtype":"U8","shape":[1],"data_offsets":[1,2]},"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}`, []byte{1, 2}, -1), 2},
		{"packed sub-byte", rawFile(`{"p":{"dtype":"F4","shape":[4],"data_offsets":[0,2]},"q":{"dtype":"F6_E2M3","shape":[4],"data_offsets":[2,5]}}`, []byte{1, 2, 3, 4, 5}, -1), 2},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			h, err := ReadHeader(bytes.NewReader(tc.file), int64(len(tc.file)), "ok.safetensors")
			if err != nil {
				t.Fatal(err)
			}
			if len(h.Tensors) != tc.n {
				t.Fatalf("%d tensors, want %d", len(h.Tensors), tc.n)
			}
			for i, th := range h.Tensors {
				if got, _ := h.Lookup(th.Name); got.Begin != th.Begin || i > 0 && th.Begin < h.Tensors[i-1].End {
					t.Fatalf("tensor %q out of order", th.Name)
				}
			}
		})
	}
}

// TestEncodeHeaderGolden re-encodes the header of every safetensors file that
// safetensors/transformers wrote in the golden set and expects the same bytes.
func TestEncodeHeaderGolden(t *testing.T) {
	files, _ := filepath.Glob(filepath.Join("..", "testdata", "golden", "e2e", "*", "*", "*.safetensors"))
	more, _ := filepath.Glob(filepath.Join("..", "testdata", "golden", "*.safetensors"))
	files = append(files, more...)
	if len(files) < 10 {
		t.Fatalf("only %d golden files", len(files))
	}
	for _, path := range files {
		t.Run(path, func(t *testing.T) {
			f, err := Open(path)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			want := make([]byte, f.Header.DataOff)
			if _, err := f.r.ReadAt(want, 0); err != nil {
				t.Fatal(err)
			}
			got := EncodeHeader(f.Header.Tensors, f.Header.Metadata)
			if !bytes.Equal(got, want) {
				t.Fatalf("re-encoded header differs:\n got %.200q\nwant %.200q", got, want)
			}
		})
	}
}

func TestFileReadTruncatedAfterOpen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "t.safetensors")
	data := rawFile(`{"w":{"dtype":"U8","shape":[8],"data_offsets":[0,8]}}`, []byte("abcdefgh"), -1)
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := os.Truncate(path, int64(len(data)-3)); err != nil {
		t.Fatal(err)
	}
	_, err = f.ReadTensor("w")
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), `"w"`) {
		t.Fatalf("err = %v, want ErrCorrupt naming file and tensor", err)
	}
	if _, err := f.ReadTensor("nope"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("err = %v, want ErrNotFound", err)
	}
}

func FuzzParseHeader(f *testing.F) {
	seeds := []string{
		`{}`,
		`{"__metadata__":{"format":"pt"},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}`,
		`{"a":{"dtype":"BF16","shape":[],"data_offsets":[0,2]},"b":{"dtype":"F4","shape":[2,2],"data_offsets":[2,4]}}`,
		`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}`,
		`{"a":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}}`,
		`{"a":{"dtype":"F32","shape":[-1],"data_offsets":[0,8]}}`,
		`{"a":{"dtype":"C64","shape":[1],"data_offsets":[0,8]}}   `,
		`{"a":`,
	}
	for _, s := range seeds {
		f.Add([]byte(s), int64(8))
	}
	if golden, err := os.ReadFile(filepath.Join("..", "testdata", "golden", "e2e", "fp8", "input", "quant_state.safetensors")); err == nil {
		n := binary.LittleEndian.Uint64(golden)
		f.Add(golden[8:8+n], int64(len(golden))-8-int64(n))
	}
	f.Fuzz(func(t *testing.T, buf []byte, dataSize int64) {
		h, err := ParseHeader(buf, dataSize, "fuzz")
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error %v does not wrap ErrCorrupt", err)
			}
			return
		}
		if h.DataSize() != dataSize && !(len(h.Tensors) == 0 && dataSize == 0) {
			t.Fatalf("accepted header covers %d of %d bytes", h.DataSize(), dataSize)
		}
		// What we accept, we can write back, and it reads the same.
		enc := EncodeHeader(h.Tensors, h.Metadata)
		h2, err := ParseHeader(enc[8:], dataSize, "fuzz-reencoded")
		if err != nil {
			t.Fatalf("re-encoded header rejected: %v", err)
		}
		if len(h2.Tensors) != len(h.Tensors) {
			t.Fatalf("re-encoded header has %d tensors, want %d", len(h2.Tensors), len(h.Tensors))
		}
		for i := range h.Tensors {
			a, b := h.Tensors[i], h2.Tensors[i]
			if a.Name != b.Name || a.DType != b.DType || a.Begin != b.Begin || a.End != b.End || !slices.Equal(a.Shape, b.Shape) {
				t.Fatalf("tensor %d: %+v became %+v", i, a, b)
			}
		}
	})
}
