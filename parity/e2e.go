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
	case VariantCLI, VariantCLIDequantize:
		if err := cliOptions(e, v == VariantCLIDequantize, &opt); err != nil {
			return err
		}
	default:
		return fmt.Errorf("%w for variant %q", ErrNoHandler, v)
	}
	_, err := convert.Run(ctx, opt)
	return err
}

// cliOptions reads a case's CLI arguments (paths relative to the manifest) into
// opt: --in (repeatable), --recipe, --kv-cache, --dequantize and
// --cast-mxfp4-to-nvfp4. dequantize drops --recipe / --kv-cache and adds
// --dequantize. Any other argument is ErrNoHandler: the runner must not guess.
func cliOptions(e *E2ECase, dequantize bool, opt *convert.Options) error {
	args := e.CLI
	if len(args) == 0 {
		return fmt.Errorf("%w: case %s has no cli arguments", ErrNoHandler, e.ID)
	}
	for i := 0; i < len(args); i++ {
		val := func() (string, error) {
			if i+1 >= len(args) {
				return "", fmt.Errorf("%w: case %s: %s without a value", ErrNoHandler, e.ID, args[i])
			}
			i++
			return args[i], nil
		}
		switch a := args[i]; a {
		case "--in", "--recipe", "--kv-cache":
			v, err := val()
			if err != nil {
				return err
			}
			switch a {
			case "--in":
				opt.Inputs = append(opt.Inputs, e.Path(v))
			case "--recipe":
				opt.Recipe = v
			default:
				opt.KVCache = v
			}
		case "--dequantize":
			opt.Dequantize = true
		case "--cast-mxfp4-to-nvfp4":
			opt.CastMXFP4ToNVFP4 = true
		default:
			return fmt.Errorf("%w: case %s: cli argument %q", ErrNoHandler, e.ID, a)
		}
	}
	if dequantize {
		opt.Recipe, opt.KVCache, opt.Dequantize = "", "", true
	}
	return nil
}

func appendDir(dirs []string, d string) []string {
	for _, x := range dirs {
		if x == d {
			return dirs
		}
	}
	return append(dirs, d)
}
