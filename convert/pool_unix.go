//go:build unix

package convert

import (
	"strconv"
	"syscall"
)

// mapBytes maps n zeroed bytes outside the Go heap (page aligned, so 64-byte
// aligned as Arrow wants); the garbage collector neither scans nor counts them.
func mapBytes(n int) []byte {
	b, err := syscall.Mmap(-1, 0, n, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_ANON|syscall.MAP_PRIVATE)
	if err != nil {
		// As make does when memory is exhausted.
		panic("convert: mmap of " + strconv.Itoa(n) + " bytes: " + err.Error())
	}
	return b
}

func unmapBytes(b []byte) {
	if err := syscall.Munmap(b[:cap(b)]); err != nil {
		panic("convert: munmap: " + err.Error())
	}
}
