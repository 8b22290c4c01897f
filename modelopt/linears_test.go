package modelopt

import (
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/quantstream/quantstream/arrowio"
)

// archBases are the base checkpoints of the model-family golden set, one per family
// and name style (hub names, in-memory names).
func archBases(t *testing.T) []string {
	t.Helper()
	dirs, err := filepath.Glob(filepath.Join("..", "testdata", "golden-arch", "e2e", "base_*"))
	if err != nil || len(dirs) == 0 {
		t.Fatalf("no golden-arch base checkpoints: %v", err)
	}
	return dirs
}

func headerShapes(t *testing.T, dir string) map[string][]int64 {
	t.Helper()
	tensors, err := arrowio.ReadAllTensors(dir)
	if err != nil {
		t.Fatal(err)
	}
	shapes := map[string][]int64{}
	for n, tt := range tensors {
		shapes[n] = tt.Shape
	}
	return shapes
}

var expertIndex = regexp.MustCompile(`\.experts\.(\d+)\.([A-Za-z0-9_]+)\.weight$`)

// TestUndescribedModulesRefused: the data-free route derives quantizers from names,
// so a weight of a module the family does not list (an extra projection, a
// top-level head, experts under other names) is refused, naming the tensor, in every
// family; the checkpoints as they are still derive.
func TestUndescribedModulesRefused(t *testing.T) {
	for _, dir := range archBases(t) {
		t.Run(filepath.Base(dir), func(t *testing.T) {
			cfg, err := os.ReadFile(filepath.Join(dir, "config.json"))
			if err != nil {
				t.Fatal(err)
			}
			shapes := headerShapes(t, dir)
			if _, err := NewModel(cfg, shapes); err != nil {
				t.Fatalf("the golden checkpoint itself: %v", err)
			}
			names := slices.Sorted(func(yield func(string) bool) {
				for n := range shapes {
					if !yield(n) {
						return
					}
				}
			})
			// A sibling of the first decoder-layer projection, with its shape.
			var sibling string
			var siblingShape []int64
			for _, n := range names {
				if strings.Contains(n, ".layers.") && strings.HasSuffix(n, "_proj.weight") && len(shapes[n]) == 2 {
					i := strings.LastIndex(strings.TrimSuffix(n, ".weight"), ".")
					sibling, siblingShape = n[:i]+".foo_proj.weight", shapes[n]
					break
				}
			}
			if sibling == "" {
				t.Fatal("no decoder-layer projection to copy")
			}
			// Per-expert modules renamed.
			renamed := map[string][]int64{}
			var renamedOne string
			for _, n := range names {
				if m := expertIndex.FindStringSubmatch(n); m != nil {
					r := strings.TrimSuffix(n, m[2]+".weight") + m[2] + "_renamed.weight"
					renamed[r] = shapes[n]
					if renamedOne == "" || r < renamedOne {
						renamedOne = r
					}
				} else {
					renamed[n] = shapes[n]
				}
			}
			cases := []struct {
				name   string
				shapes map[string][]int64
				want   string
			}{
				{"extra projection", with(shapes, sibling, siblingShape), sibling},
				{"top-level head", with(shapes, "extra.head.weight", []int64{4, 8}), "extra.head.weight"},
			}
			if renamedOne != "" {
				cases = append(cases, struct {
					name   string
					shapes map[string][]int64
					want   string
				}{"experts renamed", renamed, renamedOne})
			}
			for _, c := range cases {
				_, err := NewModel(cfg, c.shapes)
				if !errors.Is(err, ErrModel) || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), `"linears"`) {
					t.Errorf("%s: err = %v, want ErrModel naming %s and the linears key", c.name, err, c.want)
				}
			}
		})
	}
}

func with(shapes map[string][]int64, name string, shape []int64) map[string][]int64 {
	out := make(map[string][]int64, len(shapes)+1)
	for n, s := range shapes {
		out[n] = s
	}
	out[name] = shape
	return out
}
