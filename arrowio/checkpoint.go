package arrowio

import (
	"cmp"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"

	"github.com/quantstream/quantstream"
)

// TensorRef is a tensor header and the open file that holds its data.
type TensorRef struct {
	TensorHeader
	File *File
}

// Info is the tensor's header as the stages see it.
func (t TensorRef) Info() quantstream.TensorInfo {
	return quantstream.TensorInfo{Name: t.Name, DType: t.DType.String(), Shape: slices.Clone(t.Shape)}
}

// LayerInfo is one group of a checkpoint: a decoder block, or the non-decoder group.
type LayerInfo struct {
	Index   int    // decoder block number, or quantstream.NonDecoder
	Prefix  string // e.g. "model.layers.12."; "" for the non-decoder group
	Tensors []TensorRef
}

// DataBytes is the total size of the group's tensors.
func (li LayerInfo) DataBytes() int64 {
	var n int64
	for _, t := range li.Tensors {
		n += t.Size()
	}
	return n
}

// Infos returns the tensors' headers, in the group's order.
func (li LayerInfo) Infos() []quantstream.TensorInfo {
	out := make([]quantstream.TensorInfo, len(li.Tensors))
	for i, t := range li.Tensors {
		out[i] = t.Info()
	}
	return out
}

// Checkpoint is a read-only view over the safetensors files of one or more
// directories overlaid in order. It holds the files open; Close closes them.
// Its methods are safe for concurrent use.
type Checkpoint struct {
	files   []*File
	tensors map[string]TensorRef
	names   []string // sorted
	layers  []LayerInfo
	side    map[string]string
}

// OpenCheckpoint opens the checkpoint formed by dirs, each overlaid on the ones
// before it: a tensor in a later directory replaces the tensor of the same name
// from an earlier one (this is how a calibration directory is applied to a base
// checkpoint), and so does a side file (config.json, tokenizer files, ...) of the
// same name.
//
// In each directory, if model.safetensors.index.json exists, the files it names are
// the directory's tensors (as transformers loads them): a named shard that is missing,
// or a weight_map entry whose tensor is not in its shard, is an error, and other
// *.safetensors files there are ignored. Without an index, every *.safetensors file
// counts. Within one directory a tensor may appear in only one file.
//
// Only headers are read. Every header is validated.
func OpenCheckpoint(dirs ...string) (*Checkpoint, error) {
	if len(dirs) == 0 {
		return nil, fmt.Errorf("%w: no checkpoint directory given", ErrNotFound)
	}
	c := &Checkpoint{tensors: map[string]TensorRef{}, side: map[string]string{}}
	for _, dir := range dirs {
		refs, err := c.openDir(dir)
		if err != nil {
			c.Close()
			return nil, err
		}
		for name, ref := range refs {
			c.tensors[name] = ref
		}
	}
	c.names = sortedKeys(c.tensors)
	layers, err := groupLayers(c.names, c.tensors)
	if err != nil {
		c.Close()
		return nil, err
	}
	c.layers = layers
	return c, nil
}

func (c *Checkpoint) openDir(dir string) (map[string]TensorRef, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("arrowio: %w", err)
	}
	var shards []string
	indexPath := filepath.Join(dir, IndexName)
	ix, err := ReadIndex(indexPath)
	switch {
	case err == nil:
		shards = ix.Shards()
		for _, s := range shards {
			if _, err := os.Stat(filepath.Join(dir, s)); err != nil {
				return nil, fmt.Errorf("%w: %s names shard %s, which is missing: %v", ErrBadIndex, indexPath, s, err)
			}
		}
	case errors.Is(err, os.ErrNotExist):
		ix = nil
	default:
		return nil, err
	}
	for _, e := range entries {
		name := e.Name()
		isTensors := strings.HasSuffix(name, ".safetensors")
		if ix == nil && isTensors && e.Type().IsRegular() {
			shards = append(shards, name)
		}
		if !isTensors && name != IndexName && e.Type().IsRegular() {
			c.side[name] = filepath.Join(dir, name)
		}
	}
	if len(shards) == 0 {
		return nil, fmt.Errorf("%w: no *.safetensors file in %s", ErrNotFound, dir)
	}
	refs := map[string]TensorRef{}
	for _, s := range shards {
		f, err := Open(filepath.Join(dir, s))
		if err != nil {
			return nil, err
		}
		c.files = append(c.files, f)
		for _, t := range f.Header.Tensors {
			if prev, dup := refs[t.Name]; dup {
				return nil, fmt.Errorf("%w: tensor %q is in both %s and %s", ErrCorrupt, t.Name, prev.File.Path, f.Path)
			}
			refs[t.Name] = TensorRef{TensorHeader: t, File: f}
		}
	}
	if ix != nil {
		for _, name := range sortedKeys(ix.WeightMap) {
			shard := ix.WeightMap[name]
			if ref, ok := refs[name]; !ok || filepath.Base(ref.File.Path) != shard {
				return nil, fmt.Errorf("%w: %s maps tensor %q to %s, which does not hold it", ErrBadIndex, indexPath, name, filepath.Join(dir, shard))
			}
		}
	}
	return refs, nil
}

// layerRE finds the first "layers.N." component of a tensor name.
var layerRE = regexp.MustCompile(`(?:^|\.)layers\.(\d{1,9})\.`)

// groupLayers puts every tensor named <base>layers.N.… into decoder layer N and the
// rest into the non-decoder group. When names carry "layers.N." under several bases
// (a vision tower beside the language model), the base with the most tensors is the
// decoder; the others go to the non-decoder group.
func groupLayers(names []string, refs map[string]TensorRef) ([]LayerInfo, error) {
	type match struct{ base, prefix string }
	matches := make([]match, len(names))
	count := map[string]int{}
	for i, n := range names {
		m := layerRE.FindStringSubmatchIndex(n)
		if m == nil {
			continue
		}
		base := n[:m[0]]
		if m[0] > 0 {
			base += "."
		}
		matches[i] = match{base: base, prefix: n[:m[1]]}
		count[base]++
	}
	decoder := ""
	best := -1
	for _, b := range sortedKeys(count) {
		if c := count[b]; c > best || (c == best && len(b) < len(decoder)) {
			decoder, best = b, c
		}
	}
	byIndex := map[int]*LayerInfo{}
	nonDecoder := &LayerInfo{Index: quantstream.NonDecoder}
	for i, n := range names {
		m := matches[i]
		if m.prefix == "" || m.base != decoder {
			nonDecoder.Tensors = append(nonDecoder.Tensors, refs[n])
			continue
		}
		idx, _ := strconv.Atoi(m.prefix[len(m.base)+len("layers.") : len(m.prefix)-1]) // at most 9 digits
		li := byIndex[idx]
		if li == nil {
			li = &LayerInfo{Index: idx, Prefix: m.prefix}
			byIndex[idx] = li
		} else if li.Prefix != m.prefix {
			return nil, fmt.Errorf("arrowio: tensors %q and %q give layer %d two prefixes", li.Tensors[0].Name, n, idx)
		}
		li.Tensors = append(li.Tensors, refs[n])
	}
	out := make([]LayerInfo, 0, len(byIndex)+1)
	for _, li := range byIndex {
		out = append(out, *li)
	}
	slices.SortFunc(out, func(a, b LayerInfo) int { return cmp.Compare(a.Index, b.Index) })
	if len(nonDecoder.Tensors) > 0 {
		out = append(out, *nonDecoder)
	}
	return out, nil
}

// Layers returns the checkpoint's groups: decoder layers by ascending index, then
// the non-decoder group (if any tensor is outside the decoder) last. Tensors in a
// group are sorted by name. The order is deterministic whatever the sharding.
// The caller must not modify the result.
func (c *Checkpoint) Layers() []LayerInfo { return c.layers }

// Tensors returns every tensor of the overlaid view, sorted by name.
func (c *Checkpoint) Tensors() []TensorRef {
	out := make([]TensorRef, len(c.names))
	for i, n := range c.names {
		out[i] = c.tensors[n]
	}
	return out
}

// Lookup finds a tensor by name.
func (c *Checkpoint) Lookup(name string) (TensorRef, bool) {
	t, ok := c.tensors[name]
	return t, ok
}

// SideFiles maps the base name of every regular file that is neither a
// *.safetensors file nor the index (config.json, tokenizer files, ...) to its path,
// the last directory's copy winning.
func (c *Checkpoint) SideFiles() map[string]string { return c.side }

// Close closes every file. The checkpoint's TensorRefs must not be read afterwards.
func (c *Checkpoint) Close() error {
	var errs []error
	for _, f := range c.files {
		errs = append(errs, f.Close())
	}
	c.files = nil
	return errors.Join(errs...)
}
