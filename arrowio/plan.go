package arrowio

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/quantstream/quantstream"
	"github.com/quantstream/quantstream/quant"
)

// DefaultMaxShardSize is save_pretrained's default max_shard_size, "5GB" (decimal).
const DefaultMaxShardSize = 5_000_000_000

// ErrBadPlan marks a list of output tensors that cannot be laid out (duplicate or
// empty names, unknown dtypes, impossible shapes).
var ErrBadPlan = errors.New("arrowio: bad output plan")

// ParseSize parses a shard size as transformers' max_shard_size does: an integer
// number of bytes, or an integer followed by a unit, case-insensitive. Decimal units
// KB, MB, GB, TB are powers of 1000 ("5GB" = 5_000_000_000, save_pretrained's
// default); binary units KiB, MiB, GiB, TiB are powers of 1024 ("256MiB" =
// 268_435_456). "B" alone means bytes.
func ParseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	u := strings.ToUpper(t)
	mult := int64(1)
	for _, unit := range []struct {
		suffix string
		mult   int64
	}{
		{"KIB", 1 << 10}, {"MIB", 1 << 20}, {"GIB", 1 << 30}, {"TIB", 1 << 40},
		{"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12}, {"B", 1},
	} {
		if strings.HasSuffix(u, unit.suffix) {
			mult = unit.mult
			t = strings.TrimSpace(t[:len(t)-len(unit.suffix)])
			break
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n <= 0 || n > (1<<62)/mult {
		return 0, fmt.Errorf("arrowio: size %q: want a positive integer with an optional unit (5GB, 256MiB)", s)
	}
	return n * mult, nil
}

// ShardPlan is one planned output file: its name, its tensors in data order with
// their offsets, and its encoded header.
type ShardPlan struct {
	Name    string
	Tensors []TensorHeader // in data order; Begin/End relative to the data section
	Header  []byte         // the 8-byte length, the JSON and its padding
}

// Size is the planned file size.
func (s ShardPlan) Size() int64 {
	return int64(len(s.Header)) + s.DataSize()
}

// DataSize is the size of the data section.
func (s ShardPlan) DataSize() int64 {
	if len(s.Tensors) == 0 {
		return 0
	}
	return s.Tensors[len(s.Tensors)-1].End
}

// Plan is the layout of a sharded checkpoint, computed from headers alone.
type Plan struct {
	Shards []ShardPlan
	Index  *Index // nil when there is a single shard
	loc    map[string]tensorLoc
}

type tensorLoc struct{ shard, i int }

// PlanOptions shape a plan.
type PlanOptions struct {
	// MaxShardSize splits the shards (sum of tensor bytes, as save_pretrained counts);
	// 0 means DefaultMaxShardSize. A tensor larger than it gets a shard of its own.
	MaxShardSize int64
	// Metadata is each shard's __metadata__; nil means {"format": "pt"}.
	Metadata map[string]string
	// ShardOf, when set, places every tensor in the shard it names (a file name
	// ending in .safetensors) instead of cutting shards by size, keeping a
	// checkpoint's own layout (a dequantized copy of a sharded source has the
	// source's files). MaxShardSize is then ignored. Shards are ordered by name.
	ShardOf func(tensor string) string
	// IndexMetadata is added to the index's metadata besides total_size (e.g.
	// "total_parameters", which transformers 5 writes and which counts parameters
	// only, so it cannot be derived from the tensors).
	IndexMetadata map[string]int64
}

// PlanShards lays out tensors (in state-dict order) as save_pretrained does:
// tensors are taken in the given order and a new shard is started when the next
// tensor would take the current one over MaxShardSize (a tensor larger than that
// gets a shard of its own, placed before the shard being filled, as
// huggingface_hub does). Within a shard, data is ordered by descending dtype
// alignment and then by name, as safetensors' writer does. One shard is named
// model.safetensors; several are model-0000K-of-0000N.safetensors with an index.
// With opts.ShardOf the shards are the ones it names instead.
func PlanShards(tensors []quantstream.TensorInfo, opts PlanOptions) (*Plan, error) {
	max := opts.MaxShardSize
	if max == 0 {
		max = DefaultMaxShardSize
	}
	if max < 0 {
		return nil, fmt.Errorf("%w: max shard size %d", ErrBadPlan, max)
	}
	meta := opts.Metadata
	if meta == nil {
		meta = map[string]string{"format": "pt"}
	}
	hdrs := make([]TensorHeader, len(tensors))
	seen := make(map[string]bool, len(tensors))
	var total int64
	for i, t := range tensors {
		if t.Name == "" {
			return nil, fmt.Errorf("%w: tensor %d has no name", ErrBadPlan, i)
		}
		if seen[t.Name] {
			return nil, fmt.Errorf("%w: duplicate tensor %q", ErrBadPlan, t.Name)
		}
		seen[t.Name] = true
		dt := t.DType
		if dt.Bits() == 0 {
			return nil, fmt.Errorf("%w: tensor %q: %w %v", ErrBadPlan, t.Name, quant.ErrUnknownDType, dt)
		}
		n, ok := byteLen(dt, t.Shape)
		if !ok {
			return nil, fmt.Errorf("%w: tensor %q: shape %v of %v is negative, overflows or is not a whole number of bytes", ErrBadPlan, t.Name, t.Shape, dt)
		}
		if total > 1<<62-n {
			return nil, fmt.Errorf("%w: tensor %q: checkpoint larger than 2^62 bytes", ErrBadPlan, t.Name)
		}
		total += n
		hdrs[i] = TensorHeader{TensorInfo: quantstream.TensorInfo{Name: t.Name, DType: dt, Shape: slices.Clone(t.Shape)}, End: n}
	}

	var groups [][]TensorHeader
	var names []string
	if opts.ShardOf != nil {
		g, n, err := groupByShard(hdrs, opts.ShardOf)
		if err != nil {
			return nil, err
		}
		return layOut(g, n, total, meta, opts), nil
	}
	var cur []TensorHeader
	var curSize int64
	for _, h := range hdrs {
		size := h.End
		if size > max {
			groups = append(groups, []TensorHeader{h})
			continue
		}
		if curSize+size > max {
			groups = append(groups, cur)
			cur, curSize = nil, 0
		}
		cur = append(cur, h)
		curSize += size
	}
	if len(cur) > 0 || len(groups) == 0 {
		groups = append(groups, cur)
	}
	for k := range groups {
		name := "model.safetensors"
		if len(groups) > 1 {
			name = fmt.Sprintf("model-%05d-of-%05d.safetensors", k+1, len(groups))
		}
		names = append(names, name)
	}
	return layOut(groups, names, total, meta, opts), nil
}

// groupByShard puts each tensor into the shard shardOf names, shards sorted by name.
func groupByShard(hdrs []TensorHeader, shardOf func(string) string) ([][]TensorHeader, []string, error) {
	byName := map[string][]TensorHeader{}
	for _, h := range hdrs {
		s := shardOf(h.Name)
		if !strings.HasSuffix(s, ".safetensors") || strings.ContainsAny(s, `/\`) {
			return nil, nil, fmt.Errorf("%w: tensor %q goes to shard %q, not a *.safetensors file name", ErrBadPlan, h.Name, s)
		}
		byName[s] = append(byName[s], h)
	}
	names := slices.Sorted(maps.Keys(byName))
	if len(names) == 0 {
		names = []string{"model.safetensors"}
	}
	groups := make([][]TensorHeader, len(names))
	for k, n := range names {
		groups[k] = byName[n]
	}
	return groups, names, nil
}

// layOut places each group's tensors (descending alignment, then name) into the
// shard of the same position in names, with an index when there are several.
func layOut(groups [][]TensorHeader, names []string, total int64, meta map[string]string, opts PlanOptions) *Plan {
	p := &Plan{loc: map[string]tensorLoc{}}
	for k, g := range groups {
		slices.SortFunc(g, layoutOrder)
		var pos int64
		for i := range g {
			size := g[i].End
			g[i].Begin, g[i].End = pos, pos+size
			pos += size
			p.loc[g[i].Name] = tensorLoc{shard: k, i: i}
		}
		p.Shards = append(p.Shards, ShardPlan{Name: names[k], Tensors: g, Header: EncodeHeader(g, meta)})
	}
	if len(groups) > 1 {
		ix := &Index{Metadata: maps.Clone(opts.IndexMetadata), WeightMap: make(map[string]string, len(p.loc))}
		if ix.Metadata == nil {
			ix.Metadata = map[string]int64{}
		}
		ix.Metadata["total_size"] = total
		for _, s := range p.Shards {
			for _, t := range s.Tensors {
				ix.WeightMap[t.Name] = s.Name
			}
		}
		p.Index = ix
	}
	return p
}

// Lookup finds where a tensor is planned: its shard's index in Shards and its header.
func (p *Plan) Lookup(name string) (shard int, t TensorHeader, ok bool) {
	l, ok := p.loc[name]
	if !ok {
		return 0, TensorHeader{}, false
	}
	return l.shard, p.Shards[l.shard].Tensors[l.i], true
}
