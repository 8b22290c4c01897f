package arrowio

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/quantstream/quantstream"
	"github.com/quantstream/quantstream/arch"
)

// TensorRef is a tensor's header, where its bytes lie, and the open file that
// holds them; or, for a tensor of a derived view, how its bytes are computed.
type TensorRef struct {
	TensorHeader
	File *File // nil for a derived tensor (Checkpoint.Derive)

	derived *derivation
}

// Info is the tensor's header (a copy: its Shape is the caller's).
func (t TensorRef) Info() quantstream.TensorInfo {
	return quantstream.TensorInfo{Name: t.Name, DType: t.DType, Shape: slices.Clone(t.Shape)}
}

// Checkpoint is a read-only view over the safetensors files of one or more
// directories overlaid in order. It holds the files open; Close closes them.
// Its methods are safe for concurrent use.
type Checkpoint struct {
	files   []*File
	fileDir []int // the position in dirs of each file's directory
	tensors map[string]TensorRef
	// stored holds every tensor of the files, including those a derived view hides
	// (nil: tensors); only Derive reads it.
	stored  map[string]TensorRef
	names   []string // sorted
	layers  []quantstream.LayerInfo
	side    map[string]string
	sideDir map[string]int // the position in dirs of each side file's directory
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
	c := &Checkpoint{tensors: map[string]TensorRef{}, side: map[string]string{}, sideDir: map[string]int{}}
	for k, dir := range dirs {
		refs, err := c.openDir(dir, k)
		if err != nil {
			c.Close()
			return nil, err
		}
		for name, ref := range refs {
			c.tensors[name] = ref
		}
	}
	c.names = sortedKeys(c.tensors)
	layers, err := groupLayers(c.names, c.tensors, untiedEmbeddings(c.side["config.json"]))
	if err != nil {
		c.Close()
		return nil, err
	}
	c.layers = layers
	return c, nil
}

func (c *Checkpoint) openDir(dir string, k int) (map[string]TensorRef, error) {
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
			c.sideDir[name] = k
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
		c.fileDir = append(c.fileDir, k)
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

// group is a layer being formed from tensor refs.
type group struct {
	index   int
	prefix  string
	tensors []TensorRef
}

func (g *group) bytes() int64 {
	var n int64
	for _, t := range g.tensors {
		n += t.Size()
	}
	return n
}

func (g *group) info() quantstream.LayerInfo {
	li := quantstream.LayerInfo{Index: g.index, Prefix: g.prefix, Tensors: make([]quantstream.TensorInfo, len(g.tensors))}
	for i, t := range g.tensors {
		li.Tensors[i] = t.Info()
	}
	return li
}

// groupLayers puts every tensor named <base>layers.N.… into decoder layer N and the
// rest outside the decoder. When names carry "layers.N." under several bases (a vision
// tower beside the language model), the base with the most tensors is the decoder;
// the others are grouped like any non-decoder tensor.
//
// The tensors outside the decoder are one group (all of them, sorted by name) unless
// together they hold more bytes than the largest decoder layer: then the memory a
// conversion needs would be theirs, and grouping by top-level module (<base>embed_tokens,
// <base>norm, lm_head, …; a name outside <base> by its first component) keeps it down (an
// embedding of a large vocabulary becomes a layer of its own, not one with lm_head
// as well). The embeddings and lm_head stay one group unless untied says the model does
// not tie them and lm_head has its own weight: a tied lm_head's quantizer is
// calibrated on the embedding weight, so it must travel with it.
func groupLayers(names []string, refs map[string]TensorRef, untied bool) ([]quantstream.LayerInfo, error) {
	type match struct {
		base, prefix string
		index        int
	}
	matches := make([]match, len(names))
	count := map[string]int{}
	for i, n := range names {
		idx, prefix := arch.LayerOf(n)
		if idx < 0 {
			continue
		}
		base := arch.LayerBase(idx, prefix)
		matches[i] = match{base: base, prefix: prefix, index: idx}
		count[base]++
	}
	decoder := ""
	best := -1
	for _, b := range sortedKeys(count) {
		if c := count[b]; c > best || (c == best && len(b) < len(decoder)) {
			decoder, best = b, c
		}
	}
	byIndex := map[int]*group{}
	byModule := map[string]*group{}
	for i, n := range names {
		m := matches[i]
		if m.prefix == "" || m.base != decoder {
			k := moduleKey(n, decoder)
			g := byModule[k]
			if g == nil {
				g = &group{index: quantstream.NonDecoder}
				byModule[k] = g
			}
			g.tensors = append(g.tensors, refs[n])
			continue
		}
		idx := m.index
		g := byIndex[idx]
		if g == nil {
			g = &group{index: idx, prefix: m.prefix}
			byIndex[idx] = g
		} else if g.prefix != m.prefix {
			return nil, fmt.Errorf("arrowio: tensors %q and %q give layer %d two prefixes", g.tensors[0].Name, n, idx)
		}
		g.tensors = append(g.tensors, refs[n])
	}
	decoders := make([]*group, 0, len(byIndex))
	var largest int64
	for _, g := range byIndex {
		decoders = append(decoders, g)
		largest = max(largest, g.bytes())
	}
	slices.SortFunc(decoders, func(a, b *group) int { return cmp.Compare(a.index, b.index) })
	out := make([]quantstream.LayerInfo, 0, len(byIndex)+len(byModule))
	for _, g := range decoders {
		out = append(out, g.info())
	}
	all := &group{index: quantstream.NonDecoder}
	for _, k := range sortedKeys(byModule) {
		all.tensors = append(all.tensors, byModule[k].tensors...)
	}
	if len(all.tensors) == 0 {
		return out, nil
	}
	if all.bytes() <= largest {
		// The decoder layers set the memory a conversion needs; one group is as good.
		return append(out, all.info()), nil
	}
	mergeTiedEmbeddings(byModule, decoder, untied)
	for _, k := range sortedKeys(byModule) {
		g := byModule[k]
		slices.SortFunc(g.tensors, func(a, b TensorRef) int { return cmp.Compare(a.Name, b.Name) })
		out = append(out, g.info())
	}
	return out, nil
}

// moduleKey is the top-level module of a non-decoder tensor: the component after
// the decoder's base when the name is under it, else the first component.
func moduleKey(name, decoder string) string {
	rest, base := name, ""
	if decoder != "" && strings.HasPrefix(name, decoder) {
		rest, base = name[len(decoder):], decoder
	}
	if i := strings.IndexByte(rest, '.'); i >= 0 {
		rest = rest[:i]
	}
	return base + rest
}

// mergeTiedEmbeddings joins the lm_head group to the embeddings group unless the
// model is known to be untied and lm_head has a weight of its own.
func mergeTiedEmbeddings(byModule map[string]*group, decoder string, untied bool) {
	head, embed := "lm_head", decoder+"embed_tokens"
	h, e := byModule[head], byModule[embed]
	if h == nil || e == nil {
		return
	}
	if untied && slices.ContainsFunc(h.tensors, func(t TensorRef) bool { return t.Name == head+".weight" }) {
		return
	}
	e.tensors = append(e.tensors, h.tensors...)
	delete(byModule, head)
}

// untiedEmbeddings reports whether config.json (at path, "" for none) says
// tie_word_embeddings is false, at the top or in text_config, and nowhere true.
// Anything else (no file, no key, a parse error) counts as possibly tied, which
// only makes a group larger.
func untiedEmbeddings(path string) bool {
	if path == "" {
		return false
	}
	b, err := os.ReadFile(path)
	if err != nil || len(b) > 64<<20 {
		return false
	}
	var cfg struct {
		Tie  *bool `json:"tie_word_embeddings"`
		Text *struct {
			Tie *bool `json:"tie_word_embeddings"`
		} `json:"text_config"`
	}
	if json.Unmarshal(b, &cfg) != nil {
		return false
	}
	flags := []*bool{cfg.Tie}
	if cfg.Text != nil {
		flags = append(flags, cfg.Text.Tie)
	}
	seen := false
	for _, t := range flags {
		if t != nil {
			if *t {
				return false
			}
			seen = true
		}
	}
	return seen
}

// Layers returns the checkpoint's groups: decoder layers by ascending index, then
// the tensors outside the decoder (index quantstream.NonDecoder): one group, or,
// when that group would be larger than any decoder layer, one group per top-level
// module (the embeddings with lm_head unless config.json unties them), by name.
// Tensors in a group are sorted by name. The order is deterministic whatever the sharding.
// The caller must not modify the result.
func (c *Checkpoint) Layers() []quantstream.LayerInfo { return c.layers }

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
