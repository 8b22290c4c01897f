package pipeline

import (
	"strconv"
	"syscall"
)

// mapBytes maps n zeroed bytes outside the Go heap (page aligned, so 64-byte
// aligned as Arrow wants); the garbage collector neither scans nor counts them.
// Transparent huge pages are requested: a layer buffer touched for the first time
// then costs one fault per 2 MiB instead of one per 4 KiB, which is most of the
// system time of a conversion otherwise.
func mapBytes(n int) []byte {
	b, err := syscall.Mmap(-1, 0, n, syscall.PROT_READ|syscall.PROT_WRITE, syscall.MAP_ANON|syscall.MAP_PRIVATE)
	if err != nil {
		// As make does when memory is exhausted.
		panic("convert: mmap of " + strconv.Itoa(n) + " bytes: " + err.Error())
	}
	_ = syscall.Madvise(b, syscall.MADV_HUGEPAGE) // only advice: without THP, small pages
	return b
}

func unmapBytes(b []byte) {
	if err := syscall.Munmap(b[:cap(b)]); err != nil {
		panic("convert: munmap: " + err.Error())
	}
}

// releaseTail gives the pages of b past its first keep bytes back to the kernel
// (they read as zero when touched again), so that a larger idle buffer reused for
// a smaller request is resident only for what the request can touch.
func releaseTail(b []byte, keep int) {
	const page = 4096
	start := (keep + page - 1) &^ (page - 1)
	if start >= cap(b) {
		return
	}
	_ = syscall.Madvise(b[start:cap(b)], syscall.MADV_DONTNEED) // advice: on failure the pages stay resident
}
