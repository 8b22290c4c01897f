package parallel

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
)

func TestRunLowestErrorAndPanics(t *testing.T) {
	errA, errB := errors.New("a"), errors.New("b")
	tasks := make([]Task, 50)
	for i := range tasks {
		tasks[i] = func() error { return nil }
	}
	tasks[30] = func() error { return errB }
	tasks[7] = func() error { return errA }
	if err := Run(t.Context(), tasks); err != errA {
		t.Fatalf("got %v, want the lowest task's error", err)
	}
	tasks[3] = func() error { panic("boom") }
	if err := Run(t.Context(), tasks); !errors.Is(err, ErrPanic) || !strings.Contains(err.Error(), "boom") {
		t.Fatalf("panic gave %v, want ErrPanic naming it", err)
	}
	// One task: Run works on the caller's goroutine, and still recovers.
	if err := Run(t.Context(), tasks[3:4]); !errors.Is(err, ErrPanic) {
		t.Fatalf("panic of a lone task gave %v", err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if err := Run(ctx, tasks[:2]); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled run gave %v", err)
	}
}

func TestRowsAndCopyCoverEverything(t *testing.T) {
	defer func(n int) { ChunkBytes = n }(ChunkBytes)
	ChunkBytes = 10
	seen := make([]int, 37)
	if err := Run(t.Context(), Rows(len(seen), 3, func(r0, r1 int) error {
		for r := r0; r < r1; r++ {
			seen[r]++
		}
		return nil
	})); err != nil {
		t.Fatal(err)
	}
	for r, n := range seen {
		if n != 1 {
			t.Fatalf("row %d done %d times", r, n)
		}
	}
	src := bytes.Repeat([]byte("0123456789abcdef"), 7)
	dst := make([]byte, len(src))
	if err := Run(t.Context(), Copy(dst, src)); err != nil || !bytes.Equal(dst, src) {
		t.Fatalf("copy: %v", err)
	}
}
