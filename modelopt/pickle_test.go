package modelopt

import (
	"archive/zip"
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"os"
	"strings"
	"testing"
)

// pk assembles a pickle from opcodes and raw arguments.
func pk(parts ...any) []byte {
	var b bytes.Buffer
	b.Write([]byte{opProto, 2})
	for _, p := range parts {
		switch v := p.(type) {
		case byte:
			b.WriteByte(v)
		case int:
			b.WriteByte(byte(v))
		case string:
			b.WriteString(v)
		case []byte:
			b.Write(v)
		case uint32:
			binary.Write(&b, binary.LittleEndian, v)
		}
	}
	return b.Bytes()
}

func unicode(s string) []byte {
	b := []byte{opBinUnicode, 0, 0, 0, 0}
	binary.LittleEndian.PutUint32(b[1:], uint32(len(s)))
	return append(b, s...)
}

func TestUnpickleRefuses(t *testing.T) {
	deepMarks := []any{}
	for range 200 {
		deepMarks = append(deepMarks, byte(opMark))
	}
	deepTuples := []any{byte(opNone)}
	for range 200 {
		deepTuples = append(deepTuples, byte(opTuple1))
	}
	deepTuples = append(deepTuples, byte(opStop))
	// x = (); x = (x, x) 40 times: 2^40 nodes when unfolded.
	dag := []any{byte(opEmptyTuple)}
	for range 40 {
		dag = append(dag, byte(opBinPut), 0, byte(opBinGet), 0, byte(opTuple2))
	}
	dag = append(dag, byte(opStop))
	persid := func(numel uint32) []any {
		return []any{byte(opMark), unicode("storage"), "ctorch\nFloatStorage\n", unicode("0"), unicode("cpu"),
			byte(opBinInt), numel, byte(opTuple), byte(opBinPersID), byte(opStop)}
	}
	cases := []struct {
		name string
		data []byte
		want error
		text string
	}{
		{"unknown global", pk("cos\nsystem\n", byte(opStop)), ErrUnsupported, "os.system"},
		{"torch global not allowed", pk("ctorch\nload\n", byte(opStop)), ErrUnsupported, "torch.load"},
		{"dtype is not callable", pk("ctorch\nbfloat16\n", byte(opEmptyTuple), byte(opReduce), byte(opStop)), ErrCorrupt, "REDUCE"},
		{"storage class is not callable", pk("ctorch\nFloatStorage\n", byte(opEmptyTuple), byte(opReduce), byte(opStop)), ErrUnsupported, "not callable"},
		{"opcode outside the set", pk("i", "os\nsystem\n", byte(opStop)), ErrUnsupported, "opcode 0x69"},
		{"protocol 4", []byte{opProto, 4, opNone, opStop}, ErrUnsupported, "protocol"},
		{"no STOP", pk(byte(opNone)), ErrCorrupt, "without STOP"},
		{"empty", nil, ErrCorrupt, ""},
		{"huge string length", pk(byte(opBinUnicode), uint32(0xFFFFFFF0), "abc"), ErrCorrupt, "BINUNICODE length"},
		{"truncated int", pk(byte(opBinInt), "ab"), ErrCorrupt, "need 4 bytes"},
		{"deep MARKs", pk(deepMarks...), ErrLimit, "MARK nesting"},
		{"deep tuples", pk(deepTuples...), ErrLimit, "deeper"},
		{"cycle", pk(byte(opEmptyList), byte(opBinPut), 0, byte(opMark), byte(opBinGet), 0, byte(opAppends), byte(opStop)), ErrLimit, "cyclic"},
		{"shared DAG", pk(dag...), ErrLimit, "nodes"},
		{"undefined memo", pk(byte(opBinGet), 7, byte(opStop)), ErrCorrupt, "memo key 7"},
		{"pop empty", pk(byte(opTuple1), byte(opStop)), ErrCorrupt, "empty stack"},
		{"stack left over", pk(byte(opNone), byte(opNone), byte(opStop)), ErrCorrupt, "values"},
		{"unhashable key", pk(byte(opEmptyDict), byte(opEmptyList), byte(opNone), byte(opSetItem), byte(opStop)), ErrUnsupported, "dict key"},
		{"huge storage", pk(persid(0x7FFFFFFF)...), ErrLimit, "storage"},
		{"storage without archive", pk(persid(4)...), ErrUnsupported, "no archive"},
		{"bare global left", pk("ctorch\nFloatStorage\n", byte(opStop)), ErrUnsupported, "left in the decoded data"},
		{"odd SETITEMS", pk(byte(opEmptyDict), byte(opMark), byte(opNone), byte(opSetItems), byte(opStop)), ErrCorrupt, "odd"},
	}
	lim := Limits{MaxTensorBytes: 1 << 20, MaxVisits: 1 << 16}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Unpickle(tc.data, nil, lim)
			if !errors.Is(err, tc.want) || !strings.Contains(err.Error(), tc.text) {
				t.Fatalf("err = %v, want %v containing %q", err, tc.want, tc.text)
			}
		})
	}
}

func TestUnpickleValues(t *testing.T) {
	data := pk(byte(opEmptyDict), byte(opMark),
		unicode("a"), byte(opBinInt), uint32(0xFFFFFFFF), // -1
		byte(opBinInt1), 5, byte(opNewTrue),
		byte(opNone), byte(opLong1), 2, []byte{0x00, 0x80}, // -32768
		unicode("s"), "ctorch\nSize\n", byte(opBinInt2), []byte{0, 1}, byte(opTuple1), byte(opTuple1), byte(opReduce),
		byte(opSetItems), byte(opStop))
	v, err := Unpickle(data, nil, Limits{})
	if err != nil {
		t.Fatal(err)
	}
	got, err := EncodeJSON(v)
	if err != nil {
		t.Fatal(err)
	}
	want := `{"$dict": [["a", -1], [5, true], [null, -32768], ["s", {"$size": [256]}]]}`
	if string(got) != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
}

func TestPyFloat(t *testing.T) {
	for f, want := range map[float64]string{
		1: "1.0", 0.1: "0.1", 1e-5: "1e-05", 1e-4: "0.0001", 1e16: "1e+16", 123456789012345.0: "123456789012345.0",
		-2.5: "-2.5", 4.5: "4.5", 3.4028234663852886e+38: "3.4028234663852886e+38", 1.1754943508222875e-38: "1.1754943508222875e-38",
	} {
		if got := pyFloat(f); got != want {
			t.Errorf("pyFloat(%v) = %s, want %s", f, got, want)
		}
	}
}

func TestJSONDiffCatches(t *testing.T) {
	p := func(s string) any { return parseJSONNumbers(t, []byte(s)) }
	for _, c := range [][2]string{
		{`{"a": 1}`, `{"a": 1.0}`}, {`{"a": 1}`, `{"b": 1}`}, {`[1, 2]`, `[1]`}, {`{"a": "x"}`, `{"a": "y"}`},
		{`{"a": null}`, `{"a": false}`}, {`{"a": 0.5}`, `{"a": 0.25}`},
	} {
		if jsonDiff("$", p(c[0]), p(c[1])) == "" {
			t.Errorf("no difference found between %s and %s", c[0], c[1])
		}
	}
}

func goldenPth(t testing.TB, name string) []byte {
	t.Helper()
	b, err := os.ReadFile(goldenE2E(name, "saved", StateFileName))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func dataPkl(t testing.TB, pth []byte) []byte {
	t.Helper()
	zr, err := zip.NewReader(bytes.NewReader(pth), int64(len(pth)))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range zr.File {
		if strings.HasSuffix(f.Name, "/data.pkl") {
			rc, _ := f.Open()
			b, err := io.ReadAll(rc)
			if err != nil {
				t.Fatal(err)
			}
			return b
		}
	}
	t.Fatal("no data.pkl")
	return nil
}

func TestDecodeArchiveCorrupt(t *testing.T) {
	pth := goldenPth(t, "w4a8_awq")
	for _, n := range []int{0, 10, 100, len(pth) / 2, len(pth) - 30, len(pth) - 1} {
		if _, err := DecodeArchive(bytes.NewReader(pth[:n]), int64(n), Limits{}); !errors.Is(err, ErrCorrupt) {
			t.Errorf("truncated to %d bytes: err = %v, want ErrCorrupt", n, err)
		}
	}
	// Flip a byte inside the first storage entry's data: the CRC check must catch it.
	bad := bytes.Clone(pth)
	zr, _ := zip.NewReader(bytes.NewReader(pth), int64(len(pth)))
	for _, f := range zr.File {
		if strings.HasSuffix(f.Name, "/data/0") {
			off, _ := f.DataOffset()
			bad[off] ^= 0xFF
		}
	}
	if _, err := DecodeArchive(bytes.NewReader(bad), int64(len(bad)), Limits{}); !errors.Is(err, ErrCorrupt) {
		t.Errorf("flipped storage byte: err = %v, want ErrCorrupt", err)
	}
	if _, err := DecodeArchive(bytes.NewReader(pth), int64(len(pth)), Limits{MaxPickleBytes: 1000}); !errors.Is(err, ErrLimit) {
		t.Errorf("small MaxPickleBytes: err = %v, want ErrLimit", err)
	}
	if _, err := DecodeArchive(bytes.NewReader(pth), int64(len(pth)), Limits{MaxTensorBytes: 100}); !errors.Is(err, ErrLimit) {
		t.Errorf("small MaxTensorBytes: err = %v, want ErrLimit", err)
	}
}

var fuzzLimits = Limits{MaxPickleBytes: 1 << 20, MaxObjects: 1 << 16, MaxMemo: 1 << 14, MaxVisits: 1 << 16, MaxTensorBytes: 1 << 16, MaxTotalBytes: 1 << 18}

func FuzzUnpickle(f *testing.F) {
	for _, name := range savedCases {
		p := dataPkl(f, goldenPth(f, name))
		f.Add(p)
		for _, n := range []int{1, 2, len(p) / 3, len(p) / 2, len(p) - 1} {
			f.Add(p[:n])
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		load := func(key string, want int64) ([]byte, error) { return make([]byte, want), nil }
		v, err := Unpickle(data, load, fuzzLimits)
		if err != nil {
			return
		}
		if _, err := EncodeJSON(v); err != nil {
			t.Fatalf("decoded but cannot encode: %v", err)
		}
		_, _ = ParseState(v)
	})
}

func FuzzState(f *testing.F) {
	for _, name := range savedCases {
		p := goldenPth(f, name)
		f.Add(p)
		for _, n := range []int{22, len(p) / 2, len(p) - 22} {
			f.Add(p[:n])
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		v, err := DecodeArchive(bytes.NewReader(data), int64(len(data)), fuzzLimits)
		if err != nil {
			return
		}
		s, err := ParseState(v)
		if err != nil {
			return
		}
		_ = s.BufferNames()
	})
}

func BenchmarkDecodeArchive(b *testing.B) {
	pth := goldenPth(b, "w4a8_awq")
	b.SetBytes(int64(len(pth)))
	for b.Loop() {
		if _, err := DecodeArchive(bytes.NewReader(pth), int64(len(pth)), Limits{}); err != nil {
			b.Fatal(err)
		}
	}
}
