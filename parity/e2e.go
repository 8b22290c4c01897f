package parity

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/quantstream/quantstream/convert"
)

func init() { SetE2ERunner(ConvertE2E) }

// E2EWorkers is the worker count the e2e runner converts with. The output must not
// depend on it; tests run both 1 and 4.
var E2EWorkers = 2

// ConvertE2E feeds an end-to-end case to convert.Run, the code path of
// `quantstream convert`, as a user would:
//
//	state:    --in <dir of each input shard> --in <input_dir>   (quantizers.json there)
//	saved:    --in <saved_dir>                                  (modelopt_state.pth there)
//	datafree: --in <input_dir> --recipe <recipe>
func ConvertE2E(ctx context.Context, e *E2ECase, v Variant, outDir string) error {
	opt := convert.Options{Out: outDir, Workers: E2EWorkers}
	switch v {
	case VariantState:
		for _, shard := range e.InputShards {
			opt.Inputs = appendDir(opt.Inputs, filepath.Dir(e.Path(shard)))
		}
		opt.Inputs = appendDir(opt.Inputs, e.Path(e.InputDir))
	case VariantSaved:
		opt.Inputs = []string{e.Path(e.SavedDir)}
	case VariantDataFree:
		opt.Inputs = []string{e.Path(e.InputDir)}
		recipe, kv, _ := strings.Cut(e.Recipe, "+")
		opt.Recipe, opt.KVCache = strings.TrimSpace(recipe), strings.TrimSpace(kv)
	default:
		return fmt.Errorf("%w for variant %q", ErrNoHandler, v)
	}
	_, err := convert.Run(ctx, opt)
	return err
}

func appendDir(dirs []string, d string) []string {
	for _, x := range dirs {
		if x == d {
			return dirs
		}
	}
	return append(dirs, d)
}
