package convert

import (
	"errors"
	"fmt"
	"strings"

	"github.com/quantstream/quantstream/arrowio"
	"github.com/quantstream/quantstream/modelopt"
)

// ErrRecipeWithState: a data-free recipe was asked for on an input that already
// carries calibration state (its amax buffers would be calibrated a second time).
var ErrRecipeWithState = errors.New("convert: --recipe / --kv-cache on an input with calibration state")

// checkDataFreeInput refuses a recipe on calibrated input: a quantizers.json or
// modelopt_state.pth among the side files, or quantizer buffers among the tensors.
func checkDataFreeInput(ck *arrowio.Checkpoint, side map[string]string) error {
	var found []string
	for _, f := range []string{"quantizers.json", modelopt.StateFileName} {
		if p := side[f]; p != "" {
			found = append(found, p)
		}
	}
	n, first := 0, ""
	for _, t := range ck.Tensors() {
		if strings.Contains(t.Name, "_quantizer.") || strings.Contains(t.Name, "_quantizers.") {
			if n == 0 {
				first = t.Name
			}
			n++
		}
	}
	if n > 0 {
		found = append(found, fmt.Sprintf("%d quantizer buffers (%s, …)", n, first))
	}
	if len(found) == 0 {
		return nil
	}
	return fmt.Errorf("%w: the input has %s; convert calibrated state without --recipe, or give --recipe only the unquantized checkpoint", ErrRecipeWithState, strings.Join(found, ", "))
}
