// Package parallel runs the pieces of one layer's work on all cores: the task
// runner the export and calibration stages share, and the one place where a
// panic becomes an error (pipeline re-exports ErrPanic).
//
// Workers in package pipeline bound how many layers a stage works on at once;
// within one layer, Run spreads the layer's tasks over up to GOMAXPROCS
// goroutines. Tasks write disjoint memory and errors are reported by task
// index, so results never depend on how the tasks were scheduled.
package parallel

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"runtime/debug"
	"sync"
	"sync/atomic"
)

// ErrPanic is wrapped by the error a recovered panic becomes. pipeline.ErrPanic is
// the same value; its text names the package users see.
var ErrPanic = errors.New("pipeline: panic")

// Protect calls fn, turning a panic into an error wrapping ErrPanic. A panic is a
// bug, so the stack goes into the message for whoever reads the error.
func Protect(fn func() error) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%w: %v\n%s", ErrPanic, r, debug.Stack())
		}
	}()
	return fn()
}

// Task is one piece of work of Run; tasks write disjoint memory.
type Task func() error

// Run runs tasks on up to GOMAXPROCS goroutines and returns the error of the
// lowest-numbered failing task (so the error does not depend on scheduling), or
// ctx's cause if it is done before every task started. A panicking task becomes
// its error, wrapping ErrPanic: a task may run on a goroutine of its own, where
// the recovery at a pipeline's stage boundary cannot see it. Run returns after
// every goroutine it started has exited.
func Run(ctx context.Context, tasks []Task) error {
	workers := min(runtime.GOMAXPROCS(0), len(tasks))
	if workers <= 1 {
		for _, t := range tasks {
			if err := context.Cause(ctx); err != nil {
				return err
			}
			if err := Protect(t); err != nil {
				return err
			}
		}
		return nil
	}
	errs := make([]error, len(tasks))
	var next atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= len(tasks) || ctx.Err() != nil {
					return
				}
				errs[i] = Protect(tasks[i])
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return context.Cause(ctx)
}

// ChunkBytes is about how much input one Task should process: large enough that
// scheduling costs nothing, small enough that the cores share a layer evenly.
// A variable so that tests can show the output does not depend on it.
var ChunkBytes = 4 << 20

// Copy returns tasks that copy src into dst (equal lengths) in ChunkBytes pieces.
func Copy(dst, src []byte) []Task {
	var out []Task
	for lo := 0; lo < len(src); lo += ChunkBytes {
		hi := min(lo+ChunkBytes, len(src))
		out = append(out, func() error { copy(dst[lo:hi], src[lo:hi]); return nil })
	}
	return out
}

// Rows splits rows [0, rows) into ranges of about ChunkBytes of input (rowBytes
// each) and returns one task per range running fn(r0, r1).
func Rows(rows int, rowBytes int64, fn func(r0, r1 int) error) []Task {
	return RowsAligned(rows, rowBytes, 1, fn)
}

// RowsAligned is Rows with every range but the last a multiple of align rows
// (at least align), for kernels that pay a cost per band of align rows a range
// touches.
func RowsAligned(rows int, rowBytes int64, align int, fn func(r0, r1 int) error) []Task {
	align = max(align, 1)
	per := max(1, int(int64(ChunkBytes)/max(rowBytes, 1)))
	per = max(align, per/align*align)
	var out []Task
	for r0 := 0; r0 < rows; r0 += per {
		r1 := min(r0+per, rows)
		out = append(out, func() error { return fn(r0, r1) })
	}
	return out
}
