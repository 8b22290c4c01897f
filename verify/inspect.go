package verify

import (
	"cmp"
	"fmt"
	"io"
	"path/filepath"
	"slices"
	"strings"
)

// Inventory is what a checkpoint holds, from headers and configs alone.
type Inventory struct {
	Dir         string        `json:"dir"`
	QuantConfig *ConfigInfo   `json:"quantization,omitempty"`
	Formats     []FormatCount `json:"formats"`
	DTypes      []DTypeCount  `json:"dtypes"`
	Shards      []ShardInfo   `json:"shards"`
	// Unquantized groups the linear-like modules left unquantized by name pattern
	// (layer and expert numbers replaced by *).
	Unquantized []PatternCount `json:"unquantized_modules"`
	Tensors     int            `json:"tensors"`
	Bytes       int64          `json:"bytes"`
	// Problems are the errors found while reading headers and configs (what Verify
	// would report without its data checks); inspect shows them, it does not judge.
	Problems []Finding `json:"problems,omitempty"`
}

// ConfigInfo is the quantization config as read.
type ConfigInfo struct {
	Source          string   `json:"source"`
	QuantAlgo       string   `json:"quant_algo,omitempty"`
	KVAlgo          string   `json:"kv_cache_quant_algo,omitempty"`
	GroupSize       int      `json:"group_size,omitempty"`
	ExcludeModules  []string `json:"exclude_modules,omitempty"`
	QuantizedLayers int      `json:"quantized_layers,omitempty"`
}

// FormatCount is the quantized modules of one format.
type FormatCount struct {
	Format    string `json:"format"`
	QuantAlgo string `json:"quant_algo"`
	Modules   int    `json:"modules"`
	Params    int64  `json:"params"`
}

// DTypeCount is the tensors of one dtype.
type DTypeCount struct {
	DType   string `json:"dtype"`
	Tensors int    `json:"tensors"`
	Params  int64  `json:"elements"`
	Bytes   int64  `json:"bytes"`
}

// ShardInfo is one safetensors file.
type ShardInfo struct {
	Name    string `json:"name"`
	Tensors int    `json:"tensors"`
	Bytes   int64  `json:"bytes"`
}

// PatternCount is a group of module names.
type PatternCount struct {
	Pattern string `json:"pattern"`
	Modules int    `json:"modules"`
	Params  int64  `json:"params"`
}

// Inspect describes the checkpoint in dir from its headers and configs; it reads no
// tensor data.
func Inspect(dir string) (*Inventory, error) {
	var r Report
	c, err := openCheckpoint(dir, &r)
	if err != nil {
		return nil, err
	}
	defer c.close()
	qc := parseQuantConfig(c, &r)
	a := analyze(c, qc, nil, &r)
	inv := &Inventory{Dir: dir, Tensors: len(c.names)}
	if qc != nil {
		inv.QuantConfig = &ConfigInfo{Source: qc.Source, QuantAlgo: qc.Algo, KVAlgo: qc.KV, GroupSize: qc.Group,
			ExcludeModules: qc.Exclude, QuantizedLayers: len(qc.Layers)}
	}
	formats := map[[2]string]*FormatCount{}
	patterns := map[string]*PatternCount{}
	for _, m := range a.mods {
		w := c.tensors[m.Weight]
		if m.Format != "" {
			k := [2]string{m.Format, m.Algo}
			if formats[k] == nil {
				formats[k] = &FormatCount{Format: m.Format, QuantAlgo: m.Algo}
			}
			formats[k].Modules++
			formats[k].Params += numel(m.Logical)
			continue
		}
		if !linearLike(m, w) {
			continue
		}
		p := namePattern(m.ID())
		if patterns[p] == nil {
			patterns[p] = &PatternCount{Pattern: p}
		}
		patterns[p].Modules++
		patterns[p].Params += w.numel()
	}
	for _, f := range formats {
		inv.Formats = append(inv.Formats, *f)
	}
	slices.SortFunc(inv.Formats, func(x, y FormatCount) int { return cmp.Compare(x.Format, y.Format) })
	for _, p := range sortedKeys(patterns) {
		inv.Unquantized = append(inv.Unquantized, *patterns[p])
	}
	dtypes := map[string]*DTypeCount{}
	for _, n := range c.names {
		t := c.tensors[n]
		d := t.DType.String()
		if dtypes[d] == nil {
			dtypes[d] = &DTypeCount{DType: d}
		}
		dtypes[d].Tensors++
		dtypes[d].Params += t.numel()
		dtypes[d].Bytes += t.bytes()
		inv.Bytes += t.bytes()
	}
	for _, d := range sortedKeys(dtypes) {
		inv.DTypes = append(inv.DTypes, *dtypes[d])
	}
	for _, f := range c.files {
		s := ShardInfo{Name: filepath.Base(f.Path), Tensors: len(f.Header.Tensors)}
		for _, t := range f.Header.Tensors {
			s.Bytes += t.Size()
		}
		inv.Shards = append(inv.Shards, s)
	}
	r.finish()
	for _, f := range r.Findings {
		if f.Severity == Error {
			inv.Problems = append(inv.Problems, f)
		}
	}
	return inv, nil
}

// namePattern replaces every all-digit name component by "*".
func namePattern(name string) string {
	parts := strings.Split(name, ".")
	for i, p := range parts {
		if p != "" && strings.Trim(p, "0123456789") == "" {
			parts[i] = "*"
		}
	}
	return strings.Join(parts, ".")
}

// WriteText prints the inventory as tables.
func (inv *Inventory) WriteText(w io.Writer) {
	fmt.Fprintf(w, "%s: %d tensors, %s in %d shard(s)\n", inv.Dir, inv.Tensors, humanBytes(inv.Bytes), len(inv.Shards))
	if q := inv.QuantConfig; q != nil {
		fmt.Fprintf(w, "\nquantization (%s): quant_algo %s, kv_cache_quant_algo %s", q.Source, cmp.Or(q.QuantAlgo, "none"), cmp.Or(q.KVAlgo, "none"))
		if q.GroupSize > 0 {
			fmt.Fprintf(w, ", group_size %d", q.GroupSize)
		}
		if q.QuantizedLayers > 0 {
			fmt.Fprintf(w, ", %d quantized_layers", q.QuantizedLayers)
		}
		fmt.Fprintln(w)
		if len(q.ExcludeModules) > 0 {
			fmt.Fprintf(w, "exclude_modules: %s\n", strings.Join(q.ExcludeModules, ", "))
		}
	} else {
		fmt.Fprintln(w, "\nnot quantized (no hf_quant_config.json, no quantization_config)")
	}
	if len(inv.Formats) > 0 {
		fmt.Fprintf(w, "\n%-16s %-28s %8s %16s\n", "format", "quant_algo", "modules", "parameters")
		for _, f := range inv.Formats {
			fmt.Fprintf(w, "%-16s %-28s %8d %16d\n", f.Format, f.QuantAlgo, f.Modules, f.Params)
		}
	}
	fmt.Fprintf(w, "\n%-10s %8s %16s %14s\n", "dtype", "tensors", "elements", "bytes")
	for _, d := range inv.DTypes {
		fmt.Fprintf(w, "%-10s %8d %16d %14s\n", d.DType, d.Tensors, d.Params, humanBytes(d.Bytes))
	}
	fmt.Fprintf(w, "\n%-40s %8s %14s\n", "shard", "tensors", "bytes")
	for _, s := range inv.Shards {
		fmt.Fprintf(w, "%-40s %8d %14s\n", s.Name, s.Tensors, humanBytes(s.Bytes))
	}
	if len(inv.Unquantized) > 0 {
		fmt.Fprintf(w, "\n%-52s %8s %14s\n", "unquantized linear modules", "count", "parameters")
		for _, p := range inv.Unquantized {
			fmt.Fprintf(w, "%-52s %8d %14d\n", p.Pattern, p.Modules, p.Params)
		}
	}
	if len(inv.Problems) > 0 {
		fmt.Fprintf(w, "\n%d problem(s) in the headers and configs (quantstream verify checks everything):\n", len(inv.Problems))
		for _, f := range inv.Problems {
			fmt.Fprintf(w, "  %s\n", f.String())
		}
	}
}
