package arrowio

import (
	"context"
	"errors"
	"fmt"
	"hash"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sync"

	"github.com/quantstream/quantstream"
)

var (
	// ErrExists is returned when the output directory exists and is not empty and
	// overwriting was not asked for.
	ErrExists = errors.New("arrowio: output directory exists and is not empty")
	// ErrNotDir is returned when the output path names something other than a
	// directory (a regular file, a device): it is neither created nor replaced.
	ErrNotDir = errors.New("arrowio: output is not a directory")
	// ErrComplete is returned by Create when the output directory already holds
	// the complete output of a conversion with the same fingerprint (its
	// provenance file says so and every file it lists is there): there is nothing
	// to do. WriteOptions.Overwrite writes it again.
	ErrComplete = errors.New("arrowio: output already complete")
	// ErrWrite marks a write that does not match the plan: an unplanned tensor, a
	// tensor written twice, a wrong length, or a commit with tensors missing.
	ErrWrite = errors.New("arrowio: write does not match the plan")
	// ErrClosed is returned by a Writer after Commit, Finish, Release or Abort.
	ErrClosed = errors.New("arrowio: writer is closed")
)

// WriteOptions configure a Writer.
type WriteOptions struct {
	PlanOptions
	// Overwrite allows publishing over an existing, non-empty output directory
	// (atomically where the OS can exchange two directories, see Commit).
	Overwrite bool

	// Fingerprint identifies everything that decides the output's bytes (see
	// Provenance). With one, the writer resumes: the shards that a writer of the
	// same fingerprint completed and recorded in the work directory are kept, not
	// written again, and Create reports ErrComplete for an output already
	// published by it. Empty: nothing is ever reused.
	Fingerprint string
	// Share makes the writer one of Share.Count writing the same output, possibly
	// at once and on several machines: it writes only the shards of share
	// Share.Index (SplitShares over ShardCosts), and Finish leaves them in the work
	// directory for Merge. The zero Share writes every shard and Commit publishes.
	Share Share
	// ShardCosts weigh each planned shard for SplitShares (nil: its size). Merge
	// reads them back from the work directory to name a missing share.
	ShardCosts []int64
	// SideFiles are written into the output once per work directory, by the writer
	// that creates it.
	SideFiles []SideFile
	// Provenance, when set, is written as ProvenanceName when the output is
	// published, with Files filled in (the sha256 of each shard computed when it
	// was completed).
	Provenance *Provenance
	// OnShard is called, from the writer's own goroutine (shards are completed
	// one at a time, in the order their last tensor was written), after the shard
	// is complete, synced and recorded in the work directory.
	OnShard func(name string)
}

// SideFile is a non-tensor file of the output: Data, or else a copy of the file at
// Path.
type SideFile struct {
	Name string
	Data []byte
	Path string
}

const (
	pending = iota
	writing
	written
)

// Writer writes a planned, sharded safetensors checkpoint into a work directory
// beside the output (see doc.go, "Writing") and publishes it on Commit (or, for the
// shares of a conversion, Merge publishes what their writers Finish). Tensor data may
// arrive in any order and from several goroutines: WriteTensor, WriteTensorFrom
// and Write are safe for concurrent use. Commit, Finish, Release and Abort are not
// concurrent with writes, and one of them must end every Writer: the goroutine
// that completes shards runs until then.
type Writer struct {
	dir, work, stage string
	opts             WriteOptions
	plan             *Plan
	lock             *outputLock
	status           Status
	hashing          bool // shards get a sha256 (for the provenance and resumption)

	mu     sync.Mutex
	state  map[string]int
	shards []shardState
	closed bool
	err    error // the first failure to complete a shard

	// Shards whose tensors are all written go to a goroutine that completes them
	// (sync, rename, record) while writes go on; drain waits for it.
	complete  chan int
	completed chan struct{}
	draining  bool           // complete is closed (or about to be): no more sends
	pending   sync.WaitGroup // shards handed to the completer and not completed yet
	drainOnce sync.Once

	// The hasher goroutine hashes each shard as its prefix is written (hash.go).
	wake         chan struct{} // cap 1: dirty has something
	dirty        []int         // shards whose written prefix grew (under mu)
	hashStop     chan struct{} // closed to stop the hasher
	hashExit     chan struct{} // closed when it has stopped
	hashStopOnce sync.Once
}

type shardState struct {
	mine bool     // in this writer's share
	done bool     // complete and recorded (before or by this writer)
	left int      // tensors not written yet (mine && !done)
	f    *os.File // the temporary file it is written to, then renamed

	// Hashing while writing (hash.go); nil written: not hashed.
	written []bool // by tensor in data order (under mu)
	next    int    // the first tensor in data order not written yet (under mu)
	// Owned by the goroutine hashing the shard; read by others after hashDone.
	h         hash.Hash
	hashed    int64 // bytes of the file in h
	hashFinal bool  // sum or hashErr set, hashDone closed
	sum       string
	hashErr   error
	hashDone  chan struct{}
}

// Status is what Create found and decided.
type Status struct {
	Share    Share
	Shards   int // in the plan
	Mine     int // in this share (all of them for the whole output)
	Kept     int // of Mine, complete from an earlier run and not written again
	WorkDir  string
	Created  bool     // the work directory was made by this writer
	Removed  []string // stale work this writer removed, described
	Warnings []string // things a user should know (left-over directories, no locking)
}

// Create plans tensors (see PlanShards) and prepares to write them: it locks the
// output (<out>.lock: exclusively for the whole output, shared for a share, so a
// second writer is refused at once with ErrBusy), checks the output path (ErrNotDir,
// ErrExists, ErrComplete), creates or joins the work directory <out>.partial, and
// creates the shards it writes, their headers written. See doc.go for the work
// directory, what is resumed and what is removed.
func Create(dir string, tensors []quantstream.TensorInfo, opts WriteOptions) (*Writer, error) {
	plan, err := PlanShards(tensors, opts.PlanOptions)
	if err != nil {
		return nil, err
	}
	dir = filepath.Clean(dir)
	if b := filepath.Base(dir); b == "." || b == ".." || b == string(filepath.Separator) {
		return nil, fmt.Errorf("arrowio: output %q must name a directory to create or replace", dir)
	}
	s := opts.Share
	if !s.Whole() && (s.Count < 1 || s.Count > MaxShares || s.Index < 0 || s.Index >= s.Count) {
		return nil, fmt.Errorf("%w: share %d of %d", ErrShare, s.Index, s.Count)
	}
	if opts.ShardCosts != nil && len(opts.ShardCosts) != len(plan.Shards) {
		return nil, fmt.Errorf("arrowio: %d shard costs for %d shards", len(opts.ShardCosts), len(plan.Shards))
	}
	if err := checkSideFiles(opts.SideFiles, plan); err != nil {
		return nil, err
	}
	// Checked before the lock, which is created beside the output.
	if st, err := os.Stat(dir); err == nil && !st.IsDir() {
		return nil, notDir(dir, st)
	}
	lock, err := lockOutput(dir, s.Whole())
	if err != nil {
		return nil, err
	}
	w := &Writer{
		dir: dir, work: dir + PartialSuffix, opts: opts, plan: plan, lock: lock,
		state:   make(map[string]int, len(tensors)),
		shards:  make([]shardState, len(plan.Shards)),
		hashing: opts.Fingerprint != "" || opts.Provenance != nil,
	}
	w.stage = filepath.Join(w.work, stageDir)
	w.status = Status{Share: s, Shards: len(plan.Shards), WorkDir: w.work}
	if lock.Warning != "" {
		w.status.Warnings = append(w.status.Warnings, lock.Warning)
	}
	ok := false
	defer func() {
		if !ok {
			w.closeFiles()
			w.lock.release()
		}
	}()
	if err := w.checkTarget(); err != nil {
		return nil, err
	}
	if err := w.setUp(); err != nil {
		return nil, err
	}
	if err := w.openShards(); err != nil {
		w.removeTemps()
		return nil, err
	}
	w.complete = make(chan int, len(plan.Shards)) // never full: one send per shard
	w.completed = make(chan struct{})
	go w.completer()
	if w.hashing {
		w.wake = make(chan struct{}, 1)
		w.hashStop = make(chan struct{})
		w.hashExit = make(chan struct{})
		w.wake <- struct{}{} // the headers
		go w.hasher()
	}
	ok = true
	return w, nil
}

// completer completes the shards whose tensors are all written, in the order
// they were, one at a time, until drain. After a failure it completes no more.
func (w *Writer) completer() {
	defer close(w.completed)
	for k := range w.complete {
		if w.failed() != nil {
			w.pending.Done()
			continue
		}
		if err := w.completeShard(k); err != nil {
			w.mu.Lock()
			w.err = err
			w.mu.Unlock()
		}
		w.pending.Done()
	}
}

// Flush waits until every shard whose tensors are all written is complete and
// recorded, and returns the first failure to complete one. A caller that must
// notice a cancellation before publishing checks it after Flush.
func (w *Writer) Flush() error {
	w.pending.Wait()
	return w.failed()
}

func (w *Writer) failed() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

// drain waits until every shard handed to the completer is completed and stops
// it, then the hasher; it returns the first failure. Safe to call more than once.
func (w *Writer) drain() error {
	w.drainOnce.Do(func() {
		w.mu.Lock()
		w.draining = true
		close(w.complete)
		w.mu.Unlock()
		<-w.completed
		w.stopHasher()
	})
	return w.failed()
}

// CheckOutputPath refuses (ErrNotDir) an output path that exists and is not a
// directory, before anything else is done: Create refuses it too.
func CheckOutputPath(dir string) error {
	if st, err := os.Stat(dir); err == nil && !st.IsDir() {
		return notDir(filepath.Clean(dir), st)
	}
	return nil
}

func notDir(dir string, st os.FileInfo) error {
	what := "a regular file"
	if !st.Mode().IsRegular() {
		what = "not a directory (" + st.Mode().Type().String() + ")"
	}
	return fmt.Errorf("%w: %s is %s; the output must name a directory (a new one, or one to replace)", ErrNotDir, dir, what)
}

func checkSideFiles(files []SideFile, plan *Plan) error {
	seen := map[string]bool{IndexName: plan.Index != nil, ProvenanceName: true}
	for _, s := range plan.Shards {
		seen[s.Name] = true
	}
	for _, f := range files {
		if !validShardName(f.Name) || isWorkName(f.Name) {
			return fmt.Errorf("arrowio: side file name %q is not a file name", f.Name)
		}
		if seen[f.Name] {
			return fmt.Errorf("arrowio: side file %q would replace a file the writer writes", f.Name)
		}
		seen[f.Name] = true
	}
	return nil
}

// checkTarget refuses an output path that is not a directory, or a non-empty
// directory unless overwrite is set or it holds this conversion's complete output
// (ErrComplete; also when overwrite is not set).
func (w *Writer) checkTarget() error {
	err := w.checkTargetReadOnly()
	if !errors.Is(err, ErrComplete) {
		return err
	}
	fp := w.opts.Fingerprint
	if w.opts.Share.Whole() {
		// A publication interrupted before the work directory was removed.
		if job, err := readJob(w.work); err == nil && job.Fingerprint == fp {
			os.RemoveAll(w.work)
		}
	}
	return fmt.Errorf("%w: %s holds the complete output of this conversion (fingerprint %s)", ErrComplete, w.dir, fp)
}

func isEmptyDir(dir string) (bool, error) {
	f, err := os.Open(dir)
	if err != nil {
		return false, fmt.Errorf("arrowio: output %s: %w", dir, err)
	}
	defer f.Close()
	names, _ := f.Readdirnames(1)
	return len(names) == 0, nil
}

// openShards creates the temporary file of every shard this writer writes, with
// its header and its final size.
func (w *Writer) openShards() error {
	lo, hi := 0, len(w.plan.Shards)
	if !w.opts.Share.Whole() {
		lo, hi = w.opts.Share.shards(SplitShares(w.costs(), w.opts.Share.Count))
	}
	for k, s := range w.plan.Shards {
		st := &w.shards[k]
		st.mine = k >= lo && k < hi
		if st.mine {
			w.status.Mine++
		}
		if st.done {
			if st.mine {
				w.status.Kept++
			}
			continue
		}
		for _, t := range s.Tensors {
			w.state[t.Name] = pending
		}
		if !st.mine {
			continue
		}
		st.left = len(s.Tensors)
		f, err := os.CreateTemp(w.stage, "."+s.Name+tempMark)
		if err != nil {
			return fmt.Errorf("arrowio: %w", err)
		}
		st.f = f
		if err := f.Chmod(0o644); err != nil {
			return fmt.Errorf("arrowio: %w", err)
		}
		if _, err := f.WriteAt(s.Header, 0); err != nil {
			return fmt.Errorf("arrowio: %s: writing header: %w", f.Name(), err)
		}
		// The file gets its final size now, so that a zero-length tensor at the end
		// needs no write and a reader of an unfinished file sees zeros, not EOF.
		if err := f.Truncate(s.Size()); err != nil {
			return fmt.Errorf("arrowio: %s: %w", f.Name(), err)
		}
		if w.hashing {
			w.startHashing(k)
		}
	}
	return nil
}

// costs are the shard weights of the split: ShardCosts, or the shard sizes.
func (w *Writer) costs() []int64 {
	if w.opts.ShardCosts != nil {
		return w.opts.ShardCosts
	}
	c := make([]int64, len(w.plan.Shards))
	for i, s := range w.plan.Shards {
		c[i] = s.Size()
	}
	return c
}

// Plan returns the layout being written. The caller must not modify it.
func (w *Writer) Plan() *Plan { return w.plan }

// Status says what Create found: the share, the shards kept from an earlier run,
// what it removed and what a user should know.
func (w *Writer) Status() Status { return w.status }

// TempDir is the directory the output is assembled in (<out>.partial/out); it
// becomes the output when it is published.
func (w *Writer) TempDir() string { return w.stage }

// Wants reports whether this writer writes tensor name: it is planned in a shard
// of its share that is not complete yet.
func (w *Writer) Wants(name string) bool {
	k, _, ok := w.plan.Lookup(name)
	if !ok {
		return false
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.shards[k].mine && !w.shards[k].done
}

// claim marks a planned tensor as being written, so that a second write of the same
// tensor fails even while the first is in flight.
func (w *Writer) claim(name string, n int64) (*os.File, TensorHeader, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return nil, TensorHeader{}, ErrClosed
	}
	if w.err != nil {
		return nil, TensorHeader{}, w.err
	}
	k, t, ok := w.plan.Lookup(name)
	if !ok {
		return nil, t, fmt.Errorf("%w: tensor %q is not planned", ErrWrite, name)
	}
	file := filepath.Join(w.dir, w.plan.Shards[k].Name)
	if st := &w.shards[k]; !st.mine || st.done {
		why := "kept complete from an earlier run"
		if !st.mine {
			why = "not in share " + w.opts.Share.String()
		}
		return nil, t, fmt.Errorf("%w: tensor %q for %s: this writer does not write that shard (%s)", ErrWrite, name, file, why)
	}
	if n >= 0 && n != t.Size() {
		return nil, t, fmt.Errorf("%w: tensor %q for %s: %d bytes, planned %v %v = %d bytes", ErrWrite, name, file, n, t.DType, t.Shape, t.Size())
	}
	if w.state[name] != pending {
		return nil, t, fmt.Errorf("%w: tensor %q for %s written twice", ErrWrite, name, file)
	}
	w.state[name] = writing
	return w.shards[k].f, t, nil
}

// finish records the end of a tensor's write; the last tensor of a shard hands
// the shard to the completer.
func (w *Writer) finish(name string, err error) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err != nil {
		w.state[name] = pending // a failed write may be retried
		return err
	}
	w.state[name] = written
	loc := w.plan.loc[name]
	k := loc.shard
	w.markWritten(k, loc.i)
	w.shards[k].left--
	if w.shards[k].left == 0 && !w.draining {
		w.pending.Add(1)
		w.complete <- k // never blocks: room for every shard
	}
	return nil
}

// WriteTensor writes a planned tensor's bytes at its planned offset. data must have
// the planned length; it is not retained.
func (w *Writer) WriteTensor(name string, data []byte) error {
	f, t, err := w.claim(name, int64(len(data)))
	if err != nil {
		return err
	}
	off := int64(len(w.plan.Shards[w.shardOf(name)].Header)) + t.Begin
	if _, err = f.WriteAt(data, off); err != nil {
		err = fmt.Errorf("arrowio: %s: tensor %q: %w", f.Name(), name, err)
	} else {
		startWriteback(f, off, int64(len(data)))
	}
	return w.finish(name, err)
}

// writebackMin is the smallest run of whole pages startWriteback starts writing:
// smaller tensors (norms, scales) are left to the shard's fsync, not sent to the
// disk as many small writes.
const writebackMin = 1 << 20

// WriteTensorFrom copies a planned tensor's bytes from r, which must yield at least
// the planned length; only that many bytes are read. For tensors too large to hold.
func (w *Writer) WriteTensorFrom(name string, r io.Reader) error {
	f, t, err := w.claim(name, -1)
	if err != nil {
		return err
	}
	off := int64(len(w.plan.Shards[w.shardOf(name)].Header)) + t.Begin
	buf := copyBufs.Get().(*[]byte)
	n, err := io.CopyBuffer(io.NewOffsetWriter(f, off), io.LimitReader(r, t.Size()), *buf)
	copyBufs.Put(buf)
	if err == nil && n != t.Size() {
		err = fmt.Errorf("%w: tensor %q for %s: source gave %d of %d bytes", ErrWrite, name, f.Name(), n, t.Size())
	} else if err != nil {
		err = fmt.Errorf("arrowio: %s: tensor %q: %w", f.Name(), name, err)
	} else {
		startWriteback(f, off, n)
	}
	return w.finish(name, err)
}

// copyBufs are WriteTensorFrom's copy buffers: large enough that a multi-GB
// tensor is written in few syscalls, pooled so that concurrent writers share them.
var copyBufs = sync.Pool{New: func() any { b := make([]byte, 1<<20); return &b }}

var _ quantstream.Sink = (*Writer)(nil)

// Write writes every tensor of l that this writer writes (Wants) at its planned
// place, checking dtype and shape against the plan, and skips the tensors of
// shards of other shares or kept from an earlier run: a Writer is the Sink of a
// conversion whose output it was created from. The caller keeps ownership of l.
// Like WriteTensor it is safe for concurrent use; a pipeline calls it from one
// goroutine.
func (w *Writer) Write(ctx context.Context, l *quantstream.Layer) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	for i := range l.Len() {
		t := l.Tensor(i)
		_, p, ok := w.plan.Lookup(t.Name)
		if ok && (p.DType != t.DType || !slices.Equal(p.Shape, t.Shape)) {
			return fmt.Errorf("%w: tensor %q is %v %v, planned %v %v", ErrWrite, t.Name, t.DType, t.Shape, p.DType, p.Shape)
		}
		if ok && !w.Wants(t.Name) {
			continue
		}
		if err := w.WriteTensor(t.Name, t.Data); err != nil {
			return err
		}
	}
	return nil
}

func (w *Writer) shardOf(name string) int { return w.plan.loc[name].shard }

// completeShard finishes shard k, whose tensors are all written: it syncs the
// file, waits for its sha256 (the hasher reads the rest of it back meanwhile),
// moves it to its name and records it in the journal, in that order, so that a
// record is only ever of a complete shard.
func (w *Writer) completeShard(k int) error {
	s := w.plan.Shards[k]
	st := &w.shards[k]
	f := st.f
	if err := f.Sync(); err != nil {
		return fmt.Errorf("arrowio: %s: %w", f.Name(), err)
	}
	sum := ""
	if w.hashing {
		<-st.hashDone
		if st.hashErr != nil {
			return st.hashErr
		}
		sum = st.sum
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("arrowio: %s: %w", f.Name(), err)
	}
	final := filepath.Join(w.stage, s.Name)
	if err := os.Rename(f.Name(), final); err != nil {
		return fmt.Errorf("arrowio: %w", err)
	}
	if err := syncDir(w.stage); err != nil {
		return err
	}
	rec := shardRecord{Fingerprint: w.opts.Fingerprint, Name: s.Name, Size: s.Size(), SHA256: sum}
	if err := writeRecord(w.work, rec); err != nil {
		return err
	}
	w.mu.Lock()
	w.shards[k].done = true
	w.mu.Unlock()
	if w.opts.OnShard != nil {
		w.opts.OnShard(s.Name)
	}
	return nil
}

// WriteSideFile writes a non-tensor file (config.json, hf_quant_config.json, ...)
// into the output. name must be a plain file name. Only a writer of the whole
// output writes side files this way; shares get theirs from WriteOptions.SideFiles.
func (w *Writer) WriteSideFile(name string, data []byte) error {
	if err := w.sideFileAllowed(name); err != nil {
		return err
	}
	// Synced like the shards: the publication must not give an empty config.json
	// after a crash.
	return writeFileAtomic(filepath.Join(w.stage, name), data)
}

// CopySideFiles copies files (output base name → source path, e.g. from
// Checkpoint.SideFiles) into the output, streaming each one. Like WriteSideFile,
// for a writer of the whole output.
func (w *Writer) CopySideFiles(files map[string]string) error {
	for _, name := range sortedKeys(files) {
		if err := w.sideFileAllowed(name); err != nil {
			return err
		}
		if err := copyFileAtomic(filepath.Join(w.stage, name), files[name]); err != nil {
			return err
		}
	}
	return nil
}

func (w *Writer) sideFileAllowed(name string) error {
	if !validShardName(name) || isWorkName(name) {
		return fmt.Errorf("arrowio: side file name %q is not a file name", name)
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return ErrClosed
	}
	if !w.opts.Share.Whole() {
		return fmt.Errorf("arrowio: side file %s: a writer of share %s takes side files from WriteOptions.SideFiles", name, w.opts.Share)
	}
	if _, _, ok := w.plan.Lookup(name); ok || name == IndexName || name == ProvenanceName || slices.ContainsFunc(w.plan.Shards, func(s ShardPlan) bool { return s.Name == name }) {
		return fmt.Errorf("arrowio: side file %q would replace a file the writer writes", name)
	}
	return nil
}

// close marks the writer closed; it reports false if it was already.
func (w *Writer) close() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return false
	}
	w.closed = true
	return true
}

// missing checks that every shard of the writer's share is complete, completing
// those that have no tensors.
func (w *Writer) missing() error {
	if err := w.drain(); err != nil {
		return err
	}
	var missing []string
	for k, s := range w.plan.Shards {
		st := &w.shards[k]
		if !st.mine || st.done {
			continue
		}
		if st.left == 0 {
			// No tensors (an empty plan): nothing was ever written to complete it.
			// The hasher has stopped: its header is hashed here, if it was not.
			if w.hashing {
				w.hashTo(k, s.Size(), make([]byte, len(s.Header)), nil)
			}
			if err := w.completeShard(k); err != nil {
				return err
			}
			continue
		}
		for _, t := range s.Tensors {
			if w.state[t.Name] != written {
				missing = append(missing, t.Name)
			}
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("%w: %d planned tensors not written, first %q for %s", ErrWrite, len(missing), missing[0], filepath.Join(w.dir, w.plan.Shards[w.shardOf(missing[0])].Name))
	}
	return nil
}

// Commit completes a writer of the whole output: it checks that every planned
// tensor was written (and every shard recorded), writes the provenance file when
// WriteOptions.Provenance is set, and publishes the output: the work directory's
// out/ becomes the output directory and the work directory is removed. If the
// output exists (empty, or with WriteOptions.Overwrite) it is replaced: on Linux by
// exchanging the two directories atomically, elsewhere by two renames. On failure
// the output is left as it was and the writer is released as by Release (the
// complete shards stay for a rerun when there is a Fingerprint). The Writer is
// closed either way. A writer of one share must call Finish instead.
func (w *Writer) Commit() (err error) {
	if !w.opts.Share.Whole() {
		return fmt.Errorf("arrowio: share %s: a share's writer ends with Finish; Merge publishes the output", w.opts.Share)
	}
	if !w.close() {
		return ErrClosed
	}
	defer func() {
		if err != nil {
			w.release()
		}
	}()
	if err := w.missing(); err != nil {
		return err
	}
	job, err := readJob(w.work)
	if err != nil {
		return err
	}
	// Ours, so the overwrite asked for now, not the one of the writer that made it.
	job.Overwrite = w.opts.Overwrite
	if err := publish(w.dir, w.work, job); err != nil {
		return err
	}
	w.lock.release()
	return nil
}

// Finish completes a writer of one share: it checks that every shard of the share
// was written and recorded, and unlocks. The shards stay in the work directory
// until Merge publishes the output. The Writer is closed either way.
func (w *Writer) Finish() (err error) {
	if w.opts.Share.Whole() {
		return errors.New("arrowio: a writer of the whole output ends with Commit")
	}
	if !w.close() {
		return ErrClosed
	}
	defer func() {
		if err != nil {
			w.release()
		}
	}()
	if err := w.missing(); err != nil {
		return err
	}
	w.lock.release()
	return nil
}

// Release stops the writer without publishing and keeps what a rerun can resume:
// the shards completed and recorded stay in the work directory (with a
// Fingerprint), the shards being written are removed. A writer of the whole output
// with no Fingerprint, or with no complete shard at all, removes the work directory
// instead. It returns how many shards of the work directory are complete. It is a
// no-op (0) after Commit, Finish or Abort.
func (w *Writer) Release() int {
	if !w.close() {
		return 0
	}
	return w.release()
}

func (w *Writer) release() int {
	w.drain()
	w.closeFiles()
	w.removeTemps()
	done := 0
	for i := range w.shards {
		s := &w.shards[i]
		if s.done {
			done++
		}
	}
	if w.opts.Share.Whole() && (done == 0 || w.opts.Fingerprint == "") {
		os.RemoveAll(w.work)
		done = 0
	}
	w.lock.release()
	return done
}

// Abort removes what the writer wrote: the whole work directory for a writer of the
// whole output (also the shards kept from an earlier run), the shards being written
// for a share's. It is a no-op after Commit, Finish or Release.
func (w *Writer) Abort() error {
	if !w.close() {
		return nil
	}
	w.drain()
	err := w.closeFiles()
	w.removeTemps()
	if w.opts.Share.Whole() {
		err = errors.Join(err, os.RemoveAll(w.work))
	}
	w.lock.release()
	return err
}

func (w *Writer) closeFiles() error {
	var errs []error
	for i := range w.shards {
		s := &w.shards[i]
		if s.f == nil {
			continue
		}
		if err := s.f.Close(); err != nil && !errors.Is(err, os.ErrClosed) {
			errs = append(errs, fmt.Errorf("arrowio: %w", err))
		}
	}
	return errors.Join(errs...)
}

// removeTemps removes the temporary files of the shards this writer was writing.
func (w *Writer) removeTemps() {
	for i := range w.shards {
		s := &w.shards[i]
		if s.f != nil && !s.done {
			os.Remove(s.f.Name())
		}
	}
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("arrowio: %w", err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("arrowio: sync %s: %w", dir, err)
	}
	return nil
}

// replaceDir moves tmp to dir. If dir exists (checkTarget has allowed it), the two
// are exchanged, then the old contents (now at tmp) are removed.
func replaceDir(tmp, dir string) error {
	if _, err := os.Lstat(dir); errors.Is(err, os.ErrNotExist) {
		if err := os.Rename(tmp, dir); err != nil {
			return fmt.Errorf("arrowio: %w", err)
		}
		return nil
	}
	if err := exchange(tmp, dir); err == nil {
		return os.RemoveAll(tmp)
	}
	old := tmp + ".old"
	if err := os.Rename(dir, old); err != nil {
		return fmt.Errorf("arrowio: %w", err)
	}
	if err := os.Rename(tmp, dir); err != nil {
		os.Rename(old, dir) // put the old output back
		return fmt.Errorf("arrowio: %w", err)
	}
	return os.RemoveAll(old)
}
