//go:build linux

package arrowio

import (
	"context"
	"errors"
	"io"
	"os"

	"golang.org/x/sys/unix"
)

// copyFileRange copies up to n bytes in the kernel (copy_file_range) and returns
// how many it copied: fewer, with no error, when the kernel cannot copy between
// these files (another file system on an old kernel, a file system without
// support), for the caller to copy the rest itself.
func copyFileRange(ctx context.Context, dst *os.File, at int64, src *os.File, from, n int64) (int64, error) {
	dc, err := dst.SyscallConn()
	if err != nil {
		return 0, nil
	}
	sc, err := src.SyscallConn()
	if err != nil {
		return 0, nil
	}
	var done int64
	for done < n {
		if err := ctx.Err(); err != nil {
			return done, err
		}
		var k int
		var cerr, derr error
		serr := sc.Control(func(sfd uintptr) {
			derr = dc.Control(func(dfd uintptr) {
				in, out := from+done, at+done
				k, cerr = unix.CopyFileRange(int(sfd), &in, int(dfd), &out, int(min(n-done, copyChunk)), 0)
			})
		})
		if serr != nil || derr != nil {
			return done, nil
		}
		switch {
		case errors.Is(cerr, unix.EINTR):
			continue
		case errors.Is(cerr, unix.EXDEV), errors.Is(cerr, unix.EINVAL), errors.Is(cerr, unix.ENOSYS),
			errors.Is(cerr, unix.EOPNOTSUPP), errors.Is(cerr, unix.EPERM):
			return done, nil // not between these files: the caller copies the rest
		case cerr != nil:
			return done, cerr
		case k <= 0:
			return done, io.ErrUnexpectedEOF // the input is shorter than its header says
		}
		startWriteback(dst, at+done, int64(k))
		done += int64(k)
	}
	return done, nil
}
