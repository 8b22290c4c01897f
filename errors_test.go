package quantstream_test

import (
	"errors"
	"fmt"
	"testing"

	"github.com/quantstream/quantstream"
	"github.com/quantstream/quantstream/pipeline"
	"github.com/quantstream/quantstream/stages"
)

// TestOnePlanMismatch: the pipeline's check and the export stage's own checks return
// one sentinel, so a caller's errors.Is matches whichever package's name it uses.
func TestOnePlanMismatch(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
	}{
		{"pipeline", fmt.Errorf("stage x: layer 3: %w: tensor %q missing", pipeline.ErrPlanMismatch, "w")},
		{"stages", fmt.Errorf("stage export: layer 3: %w: duplicate tensor %q", stages.ErrPlanMismatch, "w")},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, target := range []error{quantstream.ErrPlanMismatch, pipeline.ErrPlanMismatch, stages.ErrPlanMismatch} {
				if !errors.Is(tc.err, target) {
					t.Errorf("errors.Is(%v, %v) = false", tc.err, target)
				}
			}
		})
	}
}
