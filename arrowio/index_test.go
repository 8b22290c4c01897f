package arrowio

import (
	"bytes"
	"errors"
	"maps"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParseIndexErrors(t *testing.T) {
	cases := []struct {
		name, data, tensor string
	}{
		{"not JSON", `{"weight_map":`, ""},
		{"not an object", `[]`, ""},
		{"no weight_map", `{"metadata":{"total_size":1}}`, ""},
		{"weight_map not an object", `{"weight_map":[1]}`, ""},
		{"shard not a string", `{"weight_map":{"a":1}}`, "a"},
		{"duplicate tensor", `{"weight_map":{"a":"x.safetensors","a":"y.safetensors"}}`, "a"},
		{"shard with a directory", `{"weight_map":{"a":"../x.safetensors"}}`, "a"},
		{"shard absolute", `{"weight_map":{"a":"/etc/passwd"}}`, "a"},
		{"shard empty", `{"weight_map":{"a":""}}`, "a"},
		{"invalid UTF-8", "{\"weight_map\":{\"\xff\":\"x\"}}", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ParseIndex([]byte(tc.data), "idx.json")
			if !errors.Is(err, ErrBadIndex) || !strings.Contains(err.Error(), "idx.json") {
				t.Fatalf("err = %v, want ErrBadIndex naming the file", err)
			}
			if tc.tensor != "" && !strings.Contains(err.Error(), `"`+tc.tensor+`"`) {
				t.Fatalf("err = %v does not name tensor %q", err, tc.tensor)
			}
		})
	}
}

// TestIndexMarshalGolden: the index transformers wrote is reproduced byte for byte.
func TestIndexMarshalGolden(t *testing.T) {
	path := filepath.Join("..", "testdata", "golden", "e2e", "int4_awq", "saved", IndexName)
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	ix, err := ReadIndex(path)
	if err != nil {
		t.Fatal(err)
	}
	if ix.TotalSize() != 2669056 || len(ix.Shards()) != 3 {
		t.Fatalf("total_size %d, shards %v", ix.TotalSize(), ix.Shards())
	}
	if got := ix.Marshal(); !bytes.Equal(got, want) {
		t.Fatalf("Marshal differs:\n%s\nwant\n%s", got, want)
	}
}

func TestIndexMarshalEscapes(t *testing.T) {
	ix := &Index{Metadata: map[string]int64{}, WeightMap: map[string]string{"a\"\\\n\x01é😀": "s.safetensors"}}
	got := string(ix.Marshal())
	want := "{\n  \"metadata\": {},\n  \"weight_map\": {\n    \"a\\\"\\\\\\n\\u0001\\u00e9\\ud83d\\ude00\": \"s.safetensors\"\n  }\n}\n"
	if got != want {
		t.Fatalf("got %q\nwant %q", got, want)
	}
	back, err := ParseIndex([]byte(got), "x")
	if err != nil || !maps.Equal(back.WeightMap, ix.WeightMap) {
		t.Fatalf("round trip: %v %v", back, err)
	}
}

func FuzzIndex(f *testing.F) {
	for _, s := range []string{
		`{"metadata":{"total_size":10,"total_parameters":5},"weight_map":{"a":"model-00001-of-00002.safetensors","b":"model-00002-of-00002.safetensors"}}`,
		`{"weight_map":{}}`,
		`{"metadata":{"total_size":"x","other":[1]},"weight_map":{"é":"s"}}`,
		`{"weight_map":{"a":"x","a":"y"}}`,
		`{"weight_map":{"a":"../x"}}`,
		`{"weight_map":`,
	} {
		f.Add([]byte(s))
	}
	if golden, err := os.ReadFile(filepath.Join("..", "testdata", "golden", "e2e", "int4_awq", "saved", IndexName)); err == nil {
		f.Add(golden)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		ix, err := ParseIndex(data, "fuzz")
		if err != nil {
			if !errors.Is(err, ErrBadIndex) {
				t.Fatalf("error %v does not wrap ErrBadIndex", err)
			}
			return
		}
		enc := ix.Marshal()
		back, err := ParseIndex(enc, "fuzz-reencoded")
		if err != nil {
			t.Fatalf("re-encoded index rejected: %v\n%s", err, enc)
		}
		if !maps.Equal(back.WeightMap, ix.WeightMap) || !maps.Equal(back.Metadata, ix.Metadata) {
			t.Fatalf("round trip changed the index")
		}
		if !bytes.Equal(back.Marshal(), enc) {
			t.Fatalf("Marshal is not stable")
		}
	})
}
