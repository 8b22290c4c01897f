//go:build unix

package rss

import (
	"runtime"
	"syscall"
)

// Peak is the process's peak resident set size so far, in bytes (0 where the
// OS does not say).
func Peak() int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	if runtime.GOOS == "darwin" {
		return ru.Maxrss // bytes on Darwin, KiB elsewhere
	}
	return ru.Maxrss * 1024
}
