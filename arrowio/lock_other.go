//go:build !unix

package arrowio

import (
	"fmt"
	"os"
)

// flock is not available: the writer runs unlocked (see lockOutput).
func flock(f *os.File, exclusive bool) error {
	return fmt.Errorf("%w: no flock on this system", errNoLocking)
}
