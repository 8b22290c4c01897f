package arrowio

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/quantstream/quantstream/internal/pyjson"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"unicode/utf8"
)

// IndexName is the file that maps tensor names to shards in a sharded checkpoint.
const IndexName = "model.safetensors.index.json"

// MaxIndexSize bounds the index file we read; real ones are a few MB at most.
const MaxIndexSize = 100_000_000

// ErrBadIndex marks an index file that is malformed or disagrees with the shards.
var ErrBadIndex = errors.New("arrowio: bad safetensors index")

// Index is the content of model.safetensors.index.json.
type Index struct {
	// Metadata holds the integer entries of "metadata" ("total_size", and
	// "total_parameters" as transformers 5 writes it). Entries of other types are
	// dropped when reading; nothing reads them.
	Metadata map[string]int64
	// WeightMap maps each tensor name to the base name of its shard file.
	WeightMap map[string]string
}

// TotalSize is metadata.total_size, the sum of the tensors' byte lengths.
func (ix *Index) TotalSize() int64 { return ix.Metadata["total_size"] }

// Shards returns the distinct shard file names, sorted.
func (ix *Index) Shards() []string {
	var out []string
	for _, s := range ix.WeightMap {
		out = append(out, s)
	}
	slices.Sort(out)
	return slices.Compact(out)
}

// ReadIndex reads and validates an index file.
func ReadIndex(path string) (*Index, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("arrowio: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxIndexSize+1))
	if err != nil {
		return nil, fmt.Errorf("arrowio: %s: %w", path, err)
	}
	if len(data) > MaxIndexSize {
		return nil, fmt.Errorf("%w: %s: larger than %d bytes", ErrBadIndex, path, MaxIndexSize)
	}
	return ParseIndex(data, path)
}

// ParseIndex validates an index: a JSON object with a "weight_map" object of
// tensor name → shard base name (no directories, so an index cannot point outside
// its checkpoint), no duplicate names, and an optional "metadata" object.
// file names the file in errors. It never panics.
func ParseIndex(data []byte, file string) (*Index, error) {
	if !utf8.Valid(data) {
		return nil, fmt.Errorf("%w: %s: not valid UTF-8", ErrBadIndex, file)
	}
	var raw struct {
		Metadata  map[string]json.RawMessage `json:"metadata"`
		WeightMap json.RawMessage            `json:"weight_map"`
	}
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrBadIndex, file, err)
	}
	if raw.WeightMap == nil {
		return nil, fmt.Errorf("%w: %s: no weight_map", ErrBadIndex, file)
	}
	ix := &Index{Metadata: map[string]int64{}, WeightMap: map[string]string{}}
	for k, v := range raw.Metadata {
		if n, err := strconv.ParseInt(string(v), 10, 64); err == nil {
			ix.Metadata[k] = n
		}
	}
	dec := json.NewDecoder(bytes.NewReader(raw.WeightMap))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, fmt.Errorf("%w: %s: weight_map is not an object", ErrBadIndex, file)
	}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, fmt.Errorf("%w: %s: weight_map: %v", ErrBadIndex, file, err)
		}
		name, _ := tok.(string)
		var shard string
		if err := dec.Decode(&shard); err != nil {
			return nil, fmt.Errorf("%w: %s: tensor %q: shard is not a string: %v", ErrBadIndex, file, name, err)
		}
		if _, dup := ix.WeightMap[name]; dup {
			return nil, fmt.Errorf("%w: %s: duplicate tensor %q", ErrBadIndex, file, name)
		}
		if !validShardName(shard) {
			return nil, fmt.Errorf("%w: %s: tensor %q: shard %q is not a file name", ErrBadIndex, file, name, shard)
		}
		ix.WeightMap[name] = shard
	}
	return ix, nil
}

func validShardName(s string) bool {
	return s != "" && s != "." && s != ".." && !strings.ContainsAny(s, "/\\\x00")
}

// Marshal encodes the index exactly as transformers' save_pretrained does
// (Python json.dumps(indent=2, sort_keys=True) plus a newline), so that our output
// is byte-identical to a checkpoint saved by transformers.
func (ix *Index) Marshal() []byte {
	b, _ := pyjson.Indent(pyjson.Sorted(map[string]any{ // int64 and string values always encode
		"metadata":   pyjson.Sorted(ix.Metadata),
		"weight_map": pyjson.Sorted(ix.WeightMap),
	}), "  ")
	return append(b, '\n')
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys) // byte order of UTF-8 is code point order, as Python sorts
	return keys
}
