package arch

import (
	"embed"
	"fmt"
	"os"
	"path"
	"sort"
	"strings"
	"sync"
)

//go:embed families/*.json
var builtinFiles embed.FS

// Registry maps config.json model types and class names to families.
type Registry struct {
	byType  map[string]*Family
	byClass map[string]*Family
}

var builtin = sync.OnceValues(func() (*Registry, error) {
	entries, err := builtinFiles.ReadDir("families")
	if err != nil {
		return nil, err
	}
	var fams []*Family
	for _, e := range entries {
		name := path.Join("families", e.Name())
		b, err := builtinFiles.ReadFile(name)
		if err != nil {
			return nil, err
		}
		f, err := Parse("built-in "+name, b)
		if err != nil {
			return nil, err
		}
		fams = append(fams, f)
	}
	return newRegistry(nil, fams)
})

// Builtin is the registry of the families compiled in (families/*.json). A malformed
// built-in file is a build defect, which TestBuiltin catches; Builtin then panics.
func Builtin() *Registry {
	r, err := builtin()
	if err != nil {
		panic(err)
	}
	return r
}

// Load reads a user's family file (convert --arch FILE).
func Load(file string) (*Family, error) {
	b, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrFamily, err)
	}
	return Parse(file, b)
}

// With returns a registry of r's families and fams; a family of fams replaces r's for
// the model types and classes it names (a user's file fixes a built-in rule without a
// rebuild). Two of fams naming one model type is an error.
func (r *Registry) With(fams ...*Family) (*Registry, error) {
	return newRegistry(r, fams)
}

func newRegistry(base *Registry, fams []*Family) (*Registry, error) {
	r := &Registry{byType: map[string]*Family{}, byClass: map[string]*Family{}}
	if base != nil {
		for k, v := range base.byType {
			r.byType[k] = v
		}
		for k, v := range base.byClass {
			r.byClass[k] = v
		}
	}
	seenT, seenC := map[string]*Family{}, map[string]*Family{}
	for _, f := range fams {
		for _, t := range f.ModelTypes {
			if g := seenT[t]; g != nil {
				return nil, fmt.Errorf("%w: model_type %q is in both %s and %s", ErrFamily, t, g.Source, f.Source)
			}
			seenT[t], r.byType[t] = f, f
		}
		for _, c := range f.Architectures {
			if g := seenC[c]; g != nil {
				return nil, fmt.Errorf("%w: architecture %q is in both %s and %s", ErrFamily, c, g.Source, f.Source)
			}
			seenC[c], r.byClass[c] = f, f
		}
	}
	return r, nil
}

// ModelTypes lists the model types the registry knows, sorted.
func (r *Registry) ModelTypes() []string {
	out := make([]string, 0, len(r.byType))
	for k := range r.byType {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// Detect picks the family of a config.json: by model_type (the text config's for a
// multimodal model without one), else by the architectures class names. An unknown
// family is an error, never a guess. The result is a copy the caller may keep.
func (r *Registry) Detect(c *Config) (*Family, error) {
	if c == nil {
		return nil, fmt.Errorf("%w: no config.json; add a family file with --arch, see docs/arch-rules.md", ErrUnknown)
	}
	mt := c.Type()
	f := r.byType[mt]
	if f == nil {
		for _, a := range c.Architectures {
			if f = r.byClass[a]; f != nil {
				break
			}
		}
	}
	if f == nil {
		return nil, fmt.Errorf("%w: model_type %q, architectures %v: no family describes it (known: %s); add a family file with --arch FILE, see docs/arch-rules.md",
			ErrUnknown, c.ModelType, c.Architectures, strings.Join(r.ModelTypes(), ", "))
	}
	cp := *f
	if f.Experts != nil {
		e := *f.Experts
		cp.Experts = &e
	}
	cp.ModelType = mt
	if len(c.Architectures) > 0 {
		cp.Architecture = c.Architectures[0]
	}
	return &cp, nil
}
