package parity

import (
	"testing"
)

// runFunction runs every golden case of one function and reports each.
func runFunction(t *testing.T, function string) {
	t.Helper()
	m := loadGolden(t)
	n := 0
	for _, c := range m.Cases {
		if c.Function != function {
			continue
		}
		n++
		t.Run(c.ID, func(t *testing.T) {
			if err := RunCase(c); err != nil {
				t.Fatal(err)
			}
		})
	}
	if n == 0 {
		t.Fatalf("no cases for %s", function)
	}
}

func TestPostprocessStateDict(t *testing.T) { runFunction(t, "quant_utils.postprocess_state_dict") }
