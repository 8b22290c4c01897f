//go:build unix

package arrowio

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// flock takes (or converts to) a shared or exclusive lock on f without waiting. It
// reports errBusy when another open file holds a conflicting lock, and
// errNoLocking when the file system does not lock at all (an NFS mount with
// nolock, Lustre without -o flock).
func flock(f *os.File, exclusive bool) error {
	how := unix.LOCK_SH
	if exclusive {
		how = unix.LOCK_EX
	}
	for {
		err := unix.Flock(int(f.Fd()), how|unix.LOCK_NB)
		switch {
		case err == nil:
			return nil
		case errors.Is(err, unix.EINTR):
			continue
		case errors.Is(err, unix.EWOULDBLOCK):
			return errBusy
		case errors.Is(err, unix.ENOLCK), errors.Is(err, unix.ENOSYS), errors.Is(err, unix.EOPNOTSUPP), errors.Is(err, unix.ENOTSUP):
			return fmt.Errorf("%w: %v", errNoLocking, err)
		default:
			return err
		}
	}
}
