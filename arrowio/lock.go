package arrowio

import (
	"errors"
	"fmt"
	"os"
)

var (
	// ErrBusy is returned when another process is writing the same output: a
	// convert or a merge holds it alone, or shares of a conversion hold it while
	// a convert or merge asks for it alone.
	ErrBusy = errors.New("arrowio: output is being written by another process")

	errBusy      = errors.New("lock held")
	errNoLocking = errors.New("file locking unsupported")
)

// LockSuffix names the lock file beside an output directory: <out>.lock.
const LockSuffix = ".lock"

// outputLock is a flock on <out>.lock. Every writer of an output holds it from
// before it looks at the output and its work directory until after it is done
// with them: exclusively when it writes the whole output or publishes it
// (convert without a share, merge), shared when it writes one share (the shares
// of one conversion run at once). The lock file is removed by the last holder, so
// nothing stays beside a finished output; lockOutput checks after locking that
// the file it locked is still the one at the path, so a process that opened it
// just before its removal locks the new one instead.
//
// Over NFS, Linux emulates flock with the server's byte-range locks (NFSv4, or
// lockd for v3), which every client sees, unless the file system is mounted with
// nolock or local_lock=flock|all: then the lock only excludes processes of the
// same machine. Lustre locks only when mounted with -o flock. Where locking fails
// outright the writer goes on without it and says so (Warning).
type outputLock struct {
	f         *os.File
	path      string
	exclusive bool
	// Warning is set when the file system does not lock: nothing then stops a
	// second writer.
	Warning string
}

// lockOutput locks <out>.lock, shared or exclusive, without waiting: a
// conflicting holder gives ErrBusy at once.
func lockOutput(out string, exclusive bool) (*outputLock, error) {
	path := out + LockSuffix
	for attempt := 0; ; attempt++ {
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o644)
		if err != nil {
			return nil, fmt.Errorf("arrowio: output %s: lock: %w", out, err)
		}
		err = flock(f, exclusive)
		if errors.Is(err, errNoLocking) {
			return &outputLock{f: f, path: path, exclusive: exclusive,
				Warning: fmt.Sprintf("%s: %v: nothing stops a second process from writing %s at the same time", path, err, out)}, nil
		}
		if errors.Is(err, errBusy) {
			f.Close()
			how := "a convert or merge of it is running"
			if exclusive {
				how = "a convert, a merge or shares (--shard) of a conversion are running"
			}
			return nil, fmt.Errorf("%w: %s is locked (%s); wait for it to end, or write another --out", ErrBusy, path, how)
		}
		if err != nil {
			f.Close()
			return nil, fmt.Errorf("arrowio: output %s: lock: %w", out, err)
		}
		// The last holder removes the file when it is done: the one locked must
		// still be the one there, or a later writer would lock a new file alone.
		held, err1 := f.Stat()
		now, err2 := os.Stat(path)
		if err1 == nil && err2 == nil && os.SameFile(held, now) {
			return &outputLock{f: f, path: path, exclusive: exclusive}, nil
		}
		f.Close()
		if attempt == 100 {
			return nil, fmt.Errorf("arrowio: output %s: lock file %s keeps being replaced", out, path)
		}
	}
}

// release unlocks, removing the lock file when no one else holds it.
func (l *outputLock) release() {
	if l == nil || l.f == nil {
		return
	}
	if l.exclusive || flock(l.f, true) == nil {
		// Alone: remove it while still holding it (see lockOutput).
		os.Remove(l.path)
	}
	l.f.Close()
	l.f = nil
}
