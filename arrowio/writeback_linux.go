//go:build linux

package arrowio

import (
	"os"

	"golang.org/x/sys/unix"
)

// startWriteback asks the kernel to start writing the whole pages of f's bytes
// [off, off+n) to disk now, without waiting (sync_file_range WRITE). Without it a
// shard's pages stay dirty in the page cache until its fsync at completion (the
// kernel's own writeback starts only past a tenth of memory), so the disk would
// idle while the shard is computed and then hold up the end of the run; with it the
// disk writes while the next layers are computed, and the fsync finds little left.
// It is advice: an error is ignored here and reported by the fsync, which sees every
// writeback error on the file since it was opened. The partial pages at either end
// are left to a neighbour or to the fsync, so that no page is written twice.
func startWriteback(f *os.File, off, n int64) {
	const page = 4096
	lo, hi := (off+page-1)&^(page-1), (off+n)&^(page-1)
	if hi-lo < writebackMin {
		return
	}
	rc, err := f.SyscallConn()
	if err != nil {
		return
	}
	_ = rc.Control(func(fd uintptr) {
		_ = unix.SyncFileRange(int(fd), lo, hi-lo, unix.SYNC_FILE_RANGE_WRITE)
	})
}
