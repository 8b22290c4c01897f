package arrowio

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
)

// A shard's sha256 (the journal's and the provenance's) is computed while the shard
// is written, not after: the writer's hasher goroutine reads back, from the page
// cache, the prefix of each shard whose tensors are all written (its frontier) and
// hashes it, so that when the last tensor of a shard arrives little is left to hash,
// and what is left is hashed while the completer syncs the file. Hashing after the
// sync, as a pass of its own over the whole shard, was a serial tail of every
// conversion (a 2 GB shard: about a second of one core with nothing else to do,
// after the disk had finished).
//
// The frontier moves in data order: a tensor is hashed once every tensor before it
// in the shard is written. The hash reads the file, not the caller's buffers, so it
// covers exactly the bytes the file holds, as the read-back after the sync did.

// hashChunk is how many bytes the hasher reads back per call: small enough to
// stay in the core's L2 cache between the read and the hash.
const hashChunk = 256 << 10

// frontier is the end of the prefix of shard k that is written: the header, and
// every tensor up to the first not written yet. w.mu is held.
func (w *Writer) frontier(k int) int64 {
	s, st := &w.plan.Shards[k], &w.shards[k]
	if st.next == len(s.Tensors) {
		return s.Size()
	}
	return int64(len(s.Header)) + s.Tensors[st.next].Begin
}

// markWritten records that tensor i (in data order) of shard k is written and
// moves the shard's frontier, waking the hasher when it moved. w.mu is held.
func (w *Writer) markWritten(k, i int) {
	st := &w.shards[k]
	if st.written == nil {
		return // nothing is hashed (no Fingerprint, no Provenance)
	}
	st.written[i] = true
	moved := false
	for st.next < len(st.written) && st.written[st.next] {
		st.next++
		moved = true
	}
	if !moved {
		return
	}
	w.dirty = append(w.dirty, k)
	select {
	case w.wake <- struct{}{}:
	default: // already awake, or about to be
	}
}

// hasher hashes the written prefixes of the shards (see above) until hashStop.
func (w *Writer) hasher() {
	defer close(w.hashExit)
	buf := make([]byte, hashChunk)
	for {
		select {
		case <-w.hashStop:
			return
		case <-w.wake:
		}
		for {
			w.mu.Lock()
			if len(w.dirty) == 0 {
				w.mu.Unlock()
				break
			}
			k := w.dirty[0]
			w.dirty = w.dirty[1:]
			end := w.frontier(k)
			w.mu.Unlock()
			if !w.hashTo(k, end, buf, w.hashStop) {
				return
			}
		}
	}
}

// hashTo hashes shard k's file up to end; when that is the whole file it sets the
// shard's sum (or hashErr) and closes hashDone. It reports false if stop closed
// first. Only one goroutine hashes a shard at a time: the hasher, or, once it has
// stopped, the writer's own (zero-tensor shards completed by missing).
func (w *Writer) hashTo(k int, end int64, buf []byte, stop <-chan struct{}) bool {
	st := &w.shards[k]
	if st.hashFinal {
		return true
	}
	size := w.plan.Shards[k].Size()
	for st.hashed < end {
		select {
		case <-stop:
			return false
		default:
		}
		b := buf[:min(int64(len(buf)), end-st.hashed)]
		n, err := st.f.ReadAt(b, st.hashed)
		if n < len(b) {
			// ReadAt may report io.EOF with a full read at the end of the file.
			if err == nil || err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			st.hashErr = fmt.Errorf("arrowio: %s: reading back: %w", st.f.Name(), err)
			st.hashFinal = true
			close(st.hashDone)
			return true
		}
		st.h.Write(b)
		st.hashed += int64(n)
	}
	if st.hashed == size {
		st.sum = hex.EncodeToString(st.h.Sum(nil))
		st.hashFinal = true
		close(st.hashDone)
	}
	return true
}

// startHashing prepares shard k to be hashed as it is written. Its header, written
// by openShards, is the first thing hashed.
func (w *Writer) startHashing(k int) {
	st := &w.shards[k]
	st.written = make([]bool, len(w.plan.Shards[k].Tensors))
	st.h = sha256.New()
	st.hashDone = make(chan struct{})
	w.dirty = append(w.dirty, k)
}

// stopHasher stops the hasher (after the completer, which waits for its sums) and
// waits for it to exit. Safe to call more than once.
func (w *Writer) stopHasher() {
	if w.hashStop == nil {
		return
	}
	w.hashStopOnce.Do(func() {
		close(w.hashStop)
		<-w.hashExit
	})
}
