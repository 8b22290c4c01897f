//go:build race

package verify_test

// raceEnabled: the race detector multiplies the cost of the byte loops; tests that
// measure memory, not concurrency, skip under it.
const raceEnabled = true
