package verify_test

import (
	"encoding/binary"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/quantstream/quantstream"
	"github.com/quantstream/quantstream/arrowio"
	"github.com/quantstream/quantstream/quant"
	"github.com/quantstream/quantstream/stages"
	"github.com/quantstream/quantstream/verify"
)

// A corruption is a rule that damages a copy of a checkpoint the way real
// checkpoints go wrong, and names what verify must report. Rules look only at the
// copy's tensor names, dtypes, shapes and configs, so they apply to checkpoints they
// were not written for (the hidden golden sets). apply returns ok false when the
// checkpoint has nothing to damage that way.
type corruption struct {
	name  string
	check string // the check that must report it
	apply func(t *testing.T, ck *ckCopy, g goldenCase) (target string, opt verify.Options, ok bool)
}

var corruptions = []corruption{
	{"nan scale", verify.CheckScales, func(t *testing.T, ck *ckCopy, _ goldenCase) (string, verify.Options, bool) {
		for _, suffix := range []string{"weight_scale_2", "input_scale", "weight_scale"} {
			for _, n := range ck.names() {
				if !strings.HasSuffix(n, suffix) {
					continue
				}
				h := ck.header(n)
				nan := map[quant.DType][]byte{quant.F32: {0, 0, 0xC0, 0x7F}, quant.BF16: {0xC0, 0x7F}, quant.F16: {0x00, 0x7E},
					quant.F8E4M3: {0x7F}, quant.U8: {0xFF}}[h.DType]
				if nan == nil {
					continue
				}
				ck.patch(t, n, 0, nan)
				return n, verify.Options{}, true
			}
		}
		return "", verify.Options{}, false
	}},
	{"missing weight_scale_2", verify.CheckLayout, func(t *testing.T, ck *ckCopy, _ goldenCase) (string, verify.Options, bool) {
		for _, n := range ck.names() {
			if strings.HasSuffix(n, "weight_scale_2") {
				ck.remove(t, n)
				return n, verify.Options{}, true
			}
		}
		return "", verify.Options{}, false
	}},
	{"fused scales unequal", verify.CheckFusion, func(t *testing.T, ck *ckCopy, _ goldenCase) (string, verify.Options, bool) {
		if !ck.archKnown(t) {
			return "", verify.Options{}, false // no fusion rules: verify says so in a note
		}
		// q/k/v of an attention, else gate/up of an expert: the second member's
		// weight_scale_2 doubled (still finite and positive).
		for _, pair := range [][2]string{{".q_proj.weight_scale_2", ".k_proj.weight_scale_2"}, {".gate_proj.weight_scale_2", ".up_proj.weight_scale_2"}, {".w1.weight_scale_2", ".w3.weight_scale_2"}} {
			for _, n := range ck.names() {
				p, ok := strings.CutSuffix(n, pair[0])
				if !ok || !ck.has(p+pair[1]) || ck.header(p+pair[1]).DType != quant.F32 {
					continue
				}
				v := ck.f32(t, p+pair[1])
				ck.patch(t, p+pair[1], 0, binary.LittleEndian.AppendUint32(nil, math.Float32bits(2*v)))
				return p + pair[1], verify.Options{}, true
			}
		}
		return "", verify.Options{}, false
	}},
	{"attention renamed", verify.CheckFusion, func(t *testing.T, ck *ckCopy, _ goldenCase) (string, verify.Options, bool) {
		if !ck.archKnown(t) {
			return "", verify.Options{}, false
		}
		// The first quantized q_proj's parent renamed: self_attn → attention.
		for _, n := range ck.names() {
			p, ok := strings.CutSuffix(n, ".self_attn.q_proj.weight")
			if !ok || ck.header(n).DType == quant.BF16 {
				continue
			}
			from, to := p+".self_attn.", p+".attention."
			shard, _, _ := ck.where(n)
			ck.rewrite(t, shard, func(ts map[string]quant.Tensor) {
				for name, v := range ts {
					if rest, ok := strings.CutPrefix(name, from); ok {
						delete(ts, name)
						ts[to+rest] = v
					}
				}
			})
			if _, err := os.Stat(filepath.Join(ck.dir, arrowio.IndexName)); err == nil {
				ix := ck.index(t)
				for name, s := range ix.WeightMap {
					if rest, ok := strings.CutPrefix(name, from); ok {
						delete(ix.WeightMap, name)
						ix.WeightMap[to+rest] = s
					}
				}
				ck.writeIndex(t, ix)
			}
			return to + "q_proj.weight", verify.Options{}, true
		}
		return "", verify.Options{}, false
	}},
	{"deleted shard", verify.CheckFiles, func(t *testing.T, ck *ckCopy, _ goldenCase) (string, verify.Options, bool) {
		shards := ck.shard(t)
		last := shards[len(shards)-1]
		if err := os.Remove(filepath.Join(ck.dir, last)); err != nil {
			t.Fatal(err)
		}
		return last, verify.Options{}, true
	}},
	{"index names a tensor its shard lacks", verify.CheckFiles, func(t *testing.T, ck *ckCopy, _ goldenCase) (string, verify.Options, bool) {
		shards := ck.shard(t)
		ix := ck.index(t)
		for _, n := range slices.Sorted(mapsKeys(ix.WeightMap)) {
			if ix.WeightMap[n] == shards[0] {
				ix.WeightMap[n] = shards[1]
				ck.writeIndex(t, ix)
				return n, verify.Options{}, true
			}
		}
		t.Fatal("no tensor in the first shard")
		return "", verify.Options{}, false
	}},
	{"unquantized linear dropped from exclude_modules", verify.CheckCoverage, func(t *testing.T, ck *ckCopy, _ goldenCase) (string, verify.Options, bool) {
		// lm_head when it has its own BF16 weight, else any other linear excluded by
		// its exact name (a router).
		excl := ck.excluded(t)
		cands := []string{"lm_head"}
		for _, e := range excl {
			if e != "lm_head" && !strings.Contains(e, "embed") { // embeddings are not linears
				cands = append(cands, e)
			}
		}
		for _, mod := range cands {
			if !slices.Contains(excl, mod) || !ck.has(mod+".weight") || ck.header(mod+".weight").DType != quant.BF16 || len(ck.header(mod+".weight").Shape) != 2 {
				continue
			}
			ck.setExcluded(t, slices.DeleteFunc(slices.Clone(excl), func(e string) bool { return e == mod }))
			return mod + ".weight", verify.Options{}, true
		}
		return "", verify.Options{}, false
	}},
	{"k_scale removed under a KV algorithm", verify.CheckKV, func(t *testing.T, ck *ckCopy, _ goldenCase) (string, verify.Options, bool) {
		for _, n := range ck.names() {
			if strings.HasSuffix(n, ".k_proj.k_scale") {
				ck.remove(t, n)
				return n, verify.Options{}, true
			}
		}
		return "", verify.Options{}, false
	}},
	{"expert rows shuffled", verify.CheckAgainst, func(t *testing.T, ck *ckCopy, g goldenCase) (string, verify.Options, bool) {
		if g.source == "" {
			return "", verify.Options{}, false
		}
		// The source is cut down to the damaged module's weight (or the fused experts
		// tensor holding it), so that only that module is compared: the others would
		// only cost time.
		against := func(weight string) verify.Options {
			return verify.Options{Against: sourceFor(t, g.source, weight), HeadersOnly: true}
		}
		perExpert := regexp.MustCompile(`\.experts\.\d+\.[^.]+\.weight$`)
		for _, n := range ck.names() {
			h := ck.header(n)
			scale := strings.TrimSuffix(n, ".weight") + ".weight_scale"
			if !perExpert.MatchString(n) || !ck.has(scale) || len(h.Shape) != 2 {
				continue
			}
			sh := ck.header(scale)
			if h.DType == quant.U8 && sh.DType == quant.F32 {
				continue // INT4: two rows per byte
			}
			if len(sh.Shape) >= 1 && sh.Shape[0] != h.Shape[0] && len(sh.Shape) != 0 {
				continue // scales not one row per weight row (FP8 blocks)
			}
			ck.reverseRows(t, n, h.Shape[0])
			if len(sh.Shape) >= 1 {
				ck.reverseRows(t, scale, sh.Shape[0])
			}
			return n, against(n), true
		}
		// Batched-matmul experts [E, A, B]: expert 0's rows along A, in the weight and
		// in a scale with rows along A (MXFP4 [E, A, B/32], per-tensor FP8).
		for _, n := range ck.names() {
			h := ck.header(n)
			if len(h.Shape) != 3 || !strings.HasSuffix(n, "experts.gate_up_proj") && !strings.HasSuffix(n, "experts.down_proj") || !ck.has(n+"_weight_scale") {
				continue
			}
			sh := ck.header(n + "_weight_scale")
			switch {
			case len(sh.Shape) == 3 && sh.Shape[1] == h.Shape[1]: // MXFP4
				ck.reverseRows(t, n+"_weight_scale", sh.Shape[1])
			case len(sh.Shape) == 0: // FP8 per tensor
			default:
				continue // NVFP4 packs along A: rows cannot be moved alone
			}
			ck.reverseRows(t, n, h.Shape[1])
			return n + "[expert 0]", against(n), true
		}
		return "", verify.Options{}, false
	}},
}

// sourceFor copies into a temporary directory the tensors of src that can be the
// source of weight: itself, or the fused experts tensors of its container.
func sourceFor(t *testing.T, src, weight string) string {
	t.Helper()
	var container string
	if m := regexp.MustCompile(`^(.*\.experts)\.\d+\.`).FindStringSubmatch(weight); m != nil {
		container = m[1] + "."
	}
	in := &ckCopy{dir: src}
	keep := map[string]quant.Tensor{}
	for _, n := range in.names() {
		if n != weight && (container == "" || !strings.HasPrefix(n, container) || strings.Count(n[len(container):], ".") > 0) {
			continue
		}
		h := in.header(n)
		keep[n] = quant.Tensor{DType: h.DType, Shape: h.Shape, Data: in.read(t, n)}
	}
	if len(keep) == 0 {
		t.Fatalf("no source tensor for %s in %s", weight, src)
	}
	dir := t.TempDir()
	writeShard(t, filepath.Join(dir, "model.safetensors"), keep, map[string]string{"format": "pt"})
	return dir
}

// TestCorruptionsAreCaught damages copies of every golden export by every rule and
// requires verify to exit unsound with an error naming the damaged tensor (or shard).
func TestCorruptionsAreCaught(t *testing.T) {
	if testing.Short() {
		t.Skip("copies every golden export several times")
	}
	applied := map[string]int{}
	for _, g := range goldenCases(t) {
		for _, c := range corruptions {
			t.Run(c.name+"/"+g.name(), func(t *testing.T) {
				ck := copyCheckpoint(t, g.dir)
				target, opt, ok := c.apply(t, ck, g)
				if !ok {
					t.Skip("not applicable")
				}
				applied[c.name]++
				r, err := verify.Verify(t.Context(), ck.dir, opt)
				if err != nil {
					t.Fatal(err)
				}
				if r.OK {
					t.Fatalf("verify found the %s corruption of %s sound", c.name, target)
				}
				for _, f := range r.Findings {
					if f.Severity == verify.Error && f.Check == c.check && (f.Tensor == target || f.File == target || strings.Contains(f.Message, target)) {
						return
					}
				}
				t.Errorf("no %s error names %s; findings:", c.check, target)
				for _, f := range r.Findings {
					t.Logf("  %s", f)
				}
			})
		}
	}
	for _, c := range corruptions {
		if applied[c.name] == 0 {
			t.Errorf("corruption %q applied to no golden checkpoint", c.name)
		}
		t.Logf("%-50s applied to %d checkpoints", c.name, applied[c.name])
	}
}

// ckCopy is a copy of a checkpoint in a test's temporary directory.
type ckCopy struct {
	dir string
}

func copyCheckpoint(t *testing.T, src string) *ckCopy {
	t.Helper()
	dst := t.TempDir()
	entries, err := os.ReadDir(src)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range entries {
		if !e.Type().IsRegular() {
			continue
		}
		b, err := os.ReadFile(filepath.Join(src, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dst, e.Name()), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return &ckCopy{dir: dst}
}

// shards lists the copy's safetensors files.
func (c *ckCopy) shards() []string {
	m, _ := filepath.Glob(filepath.Join(c.dir, "*.safetensors"))
	for i := range m {
		m[i] = filepath.Base(m[i])
	}
	slices.Sort(m)
	return m
}

// where finds the file holding a tensor.
func (c *ckCopy) where(name string) (string, arrowio.TensorHeader, int64) {
	for _, s := range c.shards() {
		f, err := arrowio.Open(filepath.Join(c.dir, s))
		if err != nil {
			continue
		}
		h, ok := f.Header.Lookup(name)
		off := f.Header.DataOff
		f.Close()
		if ok {
			return s, h, off
		}
	}
	return "", arrowio.TensorHeader{}, 0
}

func (c *ckCopy) names() []string {
	var out []string
	for _, s := range c.shards() {
		f, err := arrowio.Open(filepath.Join(c.dir, s))
		if err != nil {
			continue
		}
		for _, h := range f.Header.Tensors {
			out = append(out, h.Name)
		}
		f.Close()
	}
	slices.Sort(out)
	return out
}

func (c *ckCopy) has(name string) bool { s, _, _ := c.where(name); return s != "" }

func (c *ckCopy) header(name string) arrowio.TensorHeader { _, h, _ := c.where(name); return h }

// patch overwrites bytes of a tensor's data in place.
func (c *ckCopy) patch(t *testing.T, name string, off int64, b []byte) {
	t.Helper()
	s, h, dataOff := c.where(name)
	f, err := os.OpenFile(filepath.Join(c.dir, s), os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteAt(b, dataOff+h.Begin+off); err != nil {
		t.Fatal(err)
	}
}

func (c *ckCopy) read(t *testing.T, name string) []byte {
	t.Helper()
	s, h, dataOff := c.where(name)
	f, err := os.Open(filepath.Join(c.dir, s))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, h.Size())
	if _, err := f.ReadAt(b, dataOff+h.Begin); err != nil {
		t.Fatal(err)
	}
	return b
}

func (c *ckCopy) f32(t *testing.T, name string) float32 {
	return math.Float32frombits(binary.LittleEndian.Uint32(c.read(t, name)))
}

// reverseRows reverses dim 1 of expert 0 for a 3-D tensor, dim 0 otherwise.
func (c *ckCopy) reverseRows(t *testing.T, name string, rows int64) {
	t.Helper()
	b := c.read(t, name)
	h := c.header(name)
	span := int64(len(b))
	if len(h.Shape) == 3 {
		span /= h.Shape[0]
	}
	row := span / rows
	out := slices.Clone(b[:span])
	for r := range rows {
		copy(out[r*row:(r+1)*row], b[(rows-1-r)*row:(rows-r)*row])
	}
	c.patch(t, name, 0, out)
}

// rewrite rewrites one shard with fn applied to its tensors, keeping the index in step.
func (c *ckCopy) rewrite(t *testing.T, shard string, fn func(map[string]quant.Tensor)) {
	t.Helper()
	p := filepath.Join(c.dir, shard)
	f, err := arrowio.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	ts := map[string]quant.Tensor{}
	for _, h := range f.Header.Tensors {
		if ts[h.Name], err = f.ReadTensor(h.Name); err != nil {
			t.Fatal(err)
		}
	}
	md := f.Header.Metadata
	f.Close()
	fn(ts)
	writeShard(t, p, ts, md)
	if _, err := os.Stat(filepath.Join(c.dir, arrowio.IndexName)); err == nil {
		ix := c.index(t)
		for n, s := range ix.WeightMap {
			if s == shard {
				if _, ok := ts[n]; !ok {
					delete(ix.WeightMap, n)
				}
			}
		}
		c.writeIndex(t, ix)
	}
}

func (c *ckCopy) remove(t *testing.T, name string) {
	s, _, _ := c.where(name)
	c.rewrite(t, s, func(ts map[string]quant.Tensor) { delete(ts, name) })
}

// shard makes the copy a two-shard checkpoint with an index (as save_pretrained
// writes a large one), when it is not sharded yet, and returns its shards.
func (c *ckCopy) shard(t *testing.T) []string {
	t.Helper()
	if s := c.shards(); len(s) > 1 {
		return s
	}
	p := filepath.Join(c.dir, c.shards()[0])
	f, err := arrowio.Open(p)
	if err != nil {
		t.Fatal(err)
	}
	ts := map[string]quant.Tensor{}
	for _, h := range f.Header.Tensors {
		if ts[h.Name], err = f.ReadTensor(h.Name); err != nil {
			t.Fatal(err)
		}
	}
	f.Close()
	if err := os.Remove(p); err != nil {
		t.Fatal(err)
	}
	names := slices.Sorted(mapsKeys(ts))
	parts := []string{"model-00001-of-00002.safetensors", "model-00002-of-00002.safetensors"}
	ix := &arrowio.Index{Metadata: map[string]int64{}, WeightMap: map[string]string{}}
	for i, part := range parts {
		sub := map[string]quant.Tensor{}
		for _, n := range names[i*len(names)/2 : (i+1)*len(names)/2] {
			sub[n] = ts[n]
			ix.WeightMap[n] = part
			ix.Metadata["total_size"] += int64(len(ts[n].Data))
		}
		writeShard(t, filepath.Join(c.dir, part), sub, map[string]string{"format": "pt"})
	}
	c.writeIndex(t, ix)
	return parts
}

func (c *ckCopy) index(t *testing.T) *arrowio.Index {
	t.Helper()
	ix, err := arrowio.ReadIndex(filepath.Join(c.dir, arrowio.IndexName))
	if err != nil {
		t.Fatal(err)
	}
	return ix
}

func (c *ckCopy) writeIndex(t *testing.T, ix *arrowio.Index) {
	t.Helper()
	var total int64
	for n, s := range ix.WeightMap {
		if _, h, _ := c.where(n); s != "" {
			total += h.Size()
		}
	}
	if _, ok := ix.Metadata["total_size"]; ok {
		ix.Metadata["total_size"] = total
	}
	if err := os.WriteFile(filepath.Join(c.dir, arrowio.IndexName), ix.Marshal(), 0o644); err != nil {
		t.Fatal(err)
	}
}

// excludeFiles are where the excluded modules are listed: hf_quant_config.json's
// quantization.exclude_modules and config.json's quantization_config.ignore.
var excludeFiles = []struct{ file, obj, key string }{{"hf_quant_config.json", "quantization", "exclude_modules"}, {"config.json", "quantization_config", "ignore"}}

// excluded is the copy's exclude_modules list (nil without one).
func (c *ckCopy) excluded(t *testing.T) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(c.dir, "hf_quant_config.json"))
	if err != nil {
		return nil
	}
	var m struct {
		Q struct {
			Exclude []string `json:"exclude_modules"`
		} `json:"quantization"`
	}
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m.Q.Exclude
}

// setExcluded writes the excluded-modules list into both configs, so they agree.
func (c *ckCopy) setExcluded(t *testing.T, list []string) {
	t.Helper()
	for _, e := range excludeFiles {
		p := filepath.Join(c.dir, e.file)
		b, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatal(err)
		}
		q, ok := m[e.obj].(map[string]any)
		if !ok {
			continue
		}
		q[e.key] = list
		if b, err = json.MarshalIndent(m, "", "    "); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func (c *ckCopy) archKnown(t *testing.T) bool {
	b, err := os.ReadFile(filepath.Join(c.dir, "config.json"))
	if err != nil {
		return false
	}
	cfg, err := stages.ParseModelConfig(b)
	if err != nil {
		return false
	}
	_, err = stages.DetectArch(cfg)
	return err == nil
}

// writeShard writes tensors as one safetensors file, laid out by name.
func writeShard(t *testing.T, path string, ts map[string]quant.Tensor, md map[string]string) {
	t.Helper()
	var hdrs []arrowio.TensorHeader
	var off int64
	for _, n := range slices.Sorted(mapsKeys(ts)) {
		tt := ts[n]
		hdrs = append(hdrs, arrowio.TensorHeader{TensorInfo: quantstream.TensorInfo{Name: n, DType: tt.DType, Shape: tt.Shape}, Begin: off, End: off + int64(len(tt.Data))})
		off += int64(len(tt.Data))
	}
	out := arrowio.EncodeHeader(hdrs, md)
	for _, h := range hdrs {
		out = append(out, ts[h.Name].Data...)
	}
	if err := os.WriteFile(path, out, 0o644); err != nil {
		t.Fatal(err)
	}
}

func mapsKeys[V any](m map[string]V) func(func(string) bool) {
	return func(yield func(string) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}
