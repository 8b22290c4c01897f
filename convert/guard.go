package convert

import (
	"errors"
	"fmt"
	"path/filepath"
	"strings"
)

// ErrOutputOverlapsInput is returned when the output directory is an input, lies
// inside one, or contains one: replacing it would destroy what is being read.
var ErrOutputOverlapsInput = errors.New("convert: output overlaps an input")

// checkOutputApart refuses an output path that is, contains or lies inside any input.
// Paths are compared after making them absolute and resolving symbolic links of the
// parts that exist.
func checkOutputApart(inputs []string, out string) error {
	o, err := canonical(out)
	if err != nil {
		return err
	}
	for _, in := range inputs {
		i, err := canonical(in)
		if err != nil {
			return err
		}
		if within(o, i) || within(i, o) {
			return fmt.Errorf("%w: --out %s and --in %s", ErrOutputOverlapsInput, out, in)
		}
	}
	return nil
}

// canonical is the absolute path with symbolic links resolved as far as the path
// exists (the output usually does not exist yet).
func canonical(p string) (string, error) {
	abs, err := filepath.Abs(p)
	if err != nil {
		return "", err
	}
	rest := ""
	for dir := abs; ; dir = filepath.Dir(dir) {
		if r, err := filepath.EvalSymlinks(dir); err == nil {
			return filepath.Join(r, rest), nil
		}
		if dir == filepath.Dir(dir) {
			return abs, nil
		}
		rest = filepath.Join(filepath.Base(dir), rest)
	}
}

// within reports whether p is dir or lies below it.
func within(p, dir string) bool {
	if p == dir {
		return true
	}
	return strings.HasPrefix(p, strings.TrimSuffix(dir, string(filepath.Separator))+string(filepath.Separator))
}
