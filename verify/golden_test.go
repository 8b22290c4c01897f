package verify_test

import (
	"cmp"
	"context"
	"encoding/json"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/quantstream/quantstream/verify"
)

// goldenSets are the ModelOpt golden sets copied into testdata.
var goldenSets = []string{"../testdata/golden", "../testdata/golden-arch", "../testdata/golden-qsrc"}

// goldenCase is one expected/ (or expected_reload/) directory of a golden set and the
// unquantized checkpoint it was exported from, when the manifest says ("" otherwise).
type goldenCase struct {
	dir, source string
}

func (g goldenCase) name() string {
	return strings.TrimPrefix(filepath.ToSlash(g.dir), "../testdata/")
}

// goldenCases lists every expected directory of every golden set, with its source:
// the BF16 base for the architecture sets (hub names, as the export writes them), the
// dequantized checkpoint for the quantized-source set.
func goldenCases(t testing.TB) []goldenCase {
	t.Helper()
	sources := map[string]string{}
	for _, set := range goldenSets {
		b, err := os.ReadFile(filepath.Join(set, "manifest.json"))
		if err != nil {
			t.Fatal(err)
		}
		var m struct {
			E2E []struct {
				ExpectedDir string   `json:"expected_dir"`
				InputShards []string `json:"input_shards"`
				Arch        string   `json:"arch"`
				Source      string   `json:"source"`
			} `json:"e2e"`
		}
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatal(err)
		}
		for _, e := range m.E2E {
			var src string
			switch {
			case e.Source != "":
				src = filepath.Join(set, "e2e", e.Source+"-dequant", "expected")
			case e.Arch != "":
				src = filepath.Join(set, "e2e", "base_"+e.Arch)
			case len(e.InputShards) > 0:
				src = filepath.Join(set, filepath.Dir(e.InputShards[0]))
			}
			sources[filepath.Join(set, e.ExpectedDir)] = src
		}
	}
	var out []goldenCase
	for _, set := range goldenSets {
		err := filepath.WalkDir(set, func(p string, d os.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.IsDir() && strings.HasPrefix(d.Name(), "expected") {
				out = append(out, goldenCase{dir: p, source: sources[p]})
				return filepath.SkipDir
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	if len(out) < 100 {
		t.Fatalf("found %d golden expected directories, want the 120-odd of the three sets", len(out))
	}
	return out
}

// documentedQuirk reports whether a warning is one of ModelOpt's documented quirks.
func documentedQuirk(f verify.Finding) bool {
	return strings.Contains(f.Message, "ModelOpt's export of an all-zero weight")
}

func assertSound(t *testing.T, r *verify.Report) {
	t.Helper()
	for _, f := range r.Findings {
		switch {
		case f.Severity == verify.Error:
			t.Errorf("%s", f)
		case f.Severity == verify.Warning && !documentedQuirk(f):
			t.Errorf("undocumented warning: %s", f)
		}
	}
	if !r.OK {
		t.Errorf("not sound: %d errors", r.Errors)
	}
}

// TestGoldenExpectedSound: every checkpoint ModelOpt exported in the golden sets
// verifies clean, data checks included.
func TestGoldenExpectedSound(t *testing.T) {
	for _, g := range goldenCases(t) {
		t.Run(g.name(), func(t *testing.T) {
			r, err := verify.Verify(t.Context(), g.dir, verify.Options{})
			if err != nil {
				t.Fatal(err)
			}
			if !r.DataChecked {
				t.Fatal("data checks did not run")
			}
			assertSound(t, r)
		})
	}
}

// TestGoldenAgainstSource: every golden export dequantizes to within its format's
// SNR floor of the model it came from. With -v it prints the lowest SNR per format,
// the measurement the floors (snrFloors) derive from.
func TestGoldenAgainstSource(t *testing.T) {
	lowest := map[string]verify.ModuleSNR{}
	compared := 0
	for _, g := range goldenCases(t) {
		if g.source == "" {
			continue
		}
		t.Run(g.name(), func(t *testing.T) {
			r, err := verify.Verify(t.Context(), g.dir, verify.Options{Against: g.source, HeadersOnly: true})
			if err != nil {
				t.Fatal(err)
			}
			assertSound(t, r)
			for _, s := range r.SNR {
				compared++
				if l, ok := lowest[s.Format]; !ok || s.DB < l.DB {
					s.Module = g.name() + ": " + s.Module
					lowest[s.Format] = s
				}
			}
		})
	}
	if compared == 0 {
		t.Fatal("no module was compared")
	}
	for _, f := range slices.Sorted(maps.Keys(lowest)) {
		l := lowest[f]
		t.Logf("%-16s lowest %6.2f dB (floor %4.1f) %s", f, l.DB, l.Floor, l.Module)
	}
}

var _ = cmp.Compare[int]
var _ = context.Background
