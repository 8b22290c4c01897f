//go:build !unix

package rss

// Peak is the process's peak resident set size so far, in bytes; 0 here, where
// the OS offers no getrusage.
func Peak() int64 { return 0 }
