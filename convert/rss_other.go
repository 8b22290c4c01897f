//go:build !unix

package convert

// PeakRSS is the process's peak resident set size so far, in bytes; 0 here, where
// the OS offers no getrusage.
func PeakRSS() int64 { return 0 }
