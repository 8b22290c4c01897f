package verify

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/quantstream/quantstream"
	"github.com/quantstream/quantstream/arrowio"
	"github.com/quantstream/quantstream/quant"
)

// maxJSONSize bounds the side files verify reads whole (config.json, the quantization
// config, tokenizer files); real ones are a few MB at most.
const maxJSONSize = 256 << 20

// tensor is one tensor of the checkpoint, with the file that holds its data (nil when
// only its header is known, as for a planned conversion).
type tensor struct {
	quantstream.TensorInfo
	file *arrowio.File
	th   arrowio.TensorHeader
}

func (t *tensor) numel() int64 { return quant.Numel(t.Shape) }

func (t *tensor) bytes() int64 {
	n, _ := t.DType.ByteLen(t.numel())
	return n
}

// base is the file name holding the tensor, for messages.
func (t *tensor) base() string {
	if t.file == nil {
		return ""
	}
	return filepath.Base(t.file.Path)
}

// checkpoint is the loader's view of a checkpoint directory: the tensors an engine
// would load (the index's, when there is one) and the configs.
type checkpoint struct {
	dir        string
	tensors    map[string]*tensor
	names      []string // sorted
	files      []*arrowio.File
	configJSON []byte // nil when absent
	hfQuant    []byte // hf_quant_config.json, nil when absent
}

func (c *checkpoint) close() {
	for _, f := range c.files {
		f.Close()
	}
	c.files = nil
}

// fromHeaders is a checkpoint known from headers only (a conversion's plan).
func fromHeaders(tensors []quantstream.TensorInfo, configJSON, hfQuant []byte) *checkpoint {
	c := &checkpoint{tensors: map[string]*tensor{}, configJSON: configJSON, hfQuant: hfQuant}
	for _, h := range tensors {
		c.tensors[h.Name] = &tensor{TensorInfo: h}
	}
	c.names = sortedKeys(c.tensors)
	return c
}

// openCheckpoint reads every header and config of dir, adding a finding for each
// problem of the files themselves. It fails only when dir cannot be listed.
func openCheckpoint(dir string, r *Report) (*checkpoint, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("verify: %w", err)
	}
	c := &checkpoint{dir: dir, tensors: map[string]*tensor{}}
	var shards, jsons []string
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		switch n := e.Name(); {
		case strings.HasSuffix(n, ".safetensors"):
			shards = append(shards, n)
		case strings.HasSuffix(n, ".json") && n != arrowio.IndexName:
			jsons = append(jsons, n)
		}
	}
	slices.Sort(shards)
	fileErr := func(file, format string, a ...any) {
		r.add(Finding{Severity: Error, Check: CheckFiles, File: file, Message: fmt.Sprintf(format, a...)})
	}

	var ix *arrowio.Index
	if b, err := readBounded(filepath.Join(dir, arrowio.IndexName)); err == nil {
		if ix, err = arrowio.ParseIndex(b, arrowio.IndexName); err != nil {
			fileErr(arrowio.IndexName, "%v", err)
			ix = nil
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		fileErr(arrowio.IndexName, "%v", err)
	}

	opened := map[string]*arrowio.File{}
	for _, s := range shards {
		f, err := arrowio.Open(filepath.Join(dir, s))
		if err != nil {
			fileErr(s, "%v", err)
			continue
		}
		c.files = append(c.files, f)
		opened[s] = f
	}
	if len(shards) == 0 {
		fileErr("", "no *.safetensors file in %s", dir)
	}

	if ix == nil {
		if len(shards) > 1 && !slices.Contains(shards, "model.safetensors") {
			r.add(Finding{Severity: Warning, Check: CheckFiles, File: arrowio.IndexName,
				Message: fmt.Sprintf("%d shards and no index: transformers and vLLM look for %s to find them", len(shards), arrowio.IndexName)})
		}
		for _, s := range shards {
			if f := opened[s]; f != nil {
				c.addShard(f, r)
			}
		}
	} else {
		c.checkIndex(ix, shards, opened, r)
	}
	c.names = sortedKeys(c.tensors)

	for _, n := range jsons {
		b, err := readBounded(filepath.Join(dir, n))
		if err != nil {
			fileErr(n, "%v", err)
			continue
		}
		if !json.Valid(b) {
			fileErr(n, "not valid JSON")
			continue
		}
		switch n {
		case "config.json":
			c.configJSON = b
		case "hf_quant_config.json":
			c.hfQuant = b
		}
	}
	if c.configJSON == nil && !slices.Contains(jsons, "config.json") {
		fileErr("config.json", "missing: engines build the model from it")
	}
	return c, nil
}

// addShard adds every tensor of f; a tensor already seen in another file is an error.
func (c *checkpoint) addShard(f *arrowio.File, r *Report) {
	for _, th := range f.Header.Tensors {
		if prev, dup := c.tensors[th.Name]; dup {
			r.add(Finding{Severity: Error, Check: CheckFiles, Tensor: th.Name, File: filepath.Base(f.Path),
				Message: fmt.Sprintf("also in %s: every tensor must be stored once", prev.base())})
			continue
		}
		c.tensors[th.Name] = &tensor{TensorInfo: th.TensorInfo, file: f, th: th}
	}
}

// checkIndex compares the index with the shard headers: every mapped tensor is in the
// shard the index names, every tensor of those shards is mapped, every shard the
// index names exists, no shard is left out of the index, and total_size is the sum
// of the tensors' bytes. The loader's view is the index's tensors.
func (c *checkpoint) checkIndex(ix *arrowio.Index, shards []string, opened map[string]*arrowio.File, r *Report) {
	named := map[string]bool{}
	for _, s := range ix.Shards() {
		named[s] = true
		if !slices.Contains(shards, s) {
			var mapped []string
			for _, n := range sortedKeys(ix.WeightMap) {
				if ix.WeightMap[n] == s {
					mapped = append(mapped, n)
				}
			}
			r.add(Finding{Severity: Error, Check: CheckFiles, File: s,
				Message: fmt.Sprintf("shard named by %s is missing (%d tensors, e.g. %s)", arrowio.IndexName, len(mapped), mapped[0])})
		}
	}
	for _, s := range shards {
		if !named[s] {
			r.add(Finding{Severity: Error, Check: CheckFiles, File: s,
				Message: fmt.Sprintf("stray shard: not named by %s, so loaders that follow the index never read its %d tensors", arrowio.IndexName, tensorCount(opened[s]))})
		}
	}
	// where each tensor is stored, over the shards the index names
	stored := map[string][]string{}
	for _, s := range shards {
		f := opened[s]
		if f == nil || !named[s] {
			continue
		}
		for _, th := range f.Header.Tensors {
			stored[th.Name] = append(stored[th.Name], s)
		}
	}
	var total int64
	for _, name := range sortedKeys(ix.WeightMap) {
		s := ix.WeightMap[name]
		f := opened[s]
		if f == nil {
			continue // missing or unreadable shard, reported once above
		}
		th, ok := f.Header.Lookup(name)
		if !ok {
			msg := fmt.Sprintf("%s maps it to %s, which does not hold it", arrowio.IndexName, s)
			if where := stored[name]; len(where) > 0 {
				msg += fmt.Sprintf(" (it is in %s)", strings.Join(where, ", "))
			}
			r.add(Finding{Severity: Error, Check: CheckFiles, Tensor: name, File: s, Message: msg})
			continue
		}
		total += th.Size()
		c.tensors[name] = &tensor{TensorInfo: th.TensorInfo, file: f, th: th}
	}
	for _, name := range sortedKeys(stored) {
		where := stored[name]
		if len(where) > 1 {
			r.add(Finding{Severity: Error, Check: CheckFiles, Tensor: name, File: strings.Join(where, ", "),
				Message: "stored in several shards: every tensor must be stored once"})
		}
		if _, ok := ix.WeightMap[name]; !ok {
			r.add(Finding{Severity: Error, Check: CheckFiles, Tensor: name, File: where[0],
				Message: fmt.Sprintf("stray tensor: in the shard but not in %s, so loaders that follow the index never read it", arrowio.IndexName)})
		}
	}
	switch ts, ok := ix.Metadata["total_size"]; {
	case !ok:
		r.add(Finding{Severity: Note, Check: CheckFiles, File: arrowio.IndexName, Message: "no metadata.total_size"})
	case ts != total:
		r.add(Finding{Severity: Error, Check: CheckFiles, File: arrowio.IndexName,
			Message: fmt.Sprintf("metadata.total_size is %d, the indexed tensors hold %d bytes", ts, total)})
	}
}

func tensorCount(f *arrowio.File) int {
	if f == nil {
		return 0
	}
	return len(f.Header.Tensors)
}

// readBounded reads a whole side file of at most maxJSONSize bytes.
func readBounded(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxJSONSize+1))
	if err != nil {
		return nil, err
	}
	if len(b) > maxJSONSize {
		return nil, fmt.Errorf("larger than %d bytes", maxJSONSize)
	}
	return b, nil
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
