package arrowio

import (
	"context"
	"errors"
	"fmt"
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
	// ErrWrite marks a write that does not match the plan: an unplanned tensor, a
	// tensor written twice, a wrong length, or a commit with tensors missing.
	ErrWrite = errors.New("arrowio: write does not match the plan")
	// ErrClosed is returned by a Writer after Commit or Abort.
	ErrClosed = errors.New("arrowio: writer is closed")
)

// WriteOptions configure a Writer.
type WriteOptions struct {
	PlanOptions
	// Overwrite allows Commit to replace an existing, non-empty output directory
	// (atomically where the OS can exchange two directories, see Commit).
	Overwrite bool
}

const (
	pending = iota
	writing
	written
)

// Writer writes a planned, sharded safetensors checkpoint into a temporary
// directory next to the output (<out>.tmp-XXXX) and moves it into place on Commit.
// Tensor data may arrive in any order and from several goroutines: WriteTensor,
// WriteTensorFrom and Write are safe for concurrent use. Commit and Abort are
// not concurrent with writes.
type Writer struct {
	dir, tmp string
	opts     WriteOptions
	plan     *Plan
	files    []*os.File

	mu     sync.Mutex
	state  map[string]int
	closed bool
}

// Create plans tensors (see PlanShards), creates the temporary directory and the
// shard files, and writes every shard's header. It fails early if dir exists, is
// not empty and opts.Overwrite is false.
func Create(dir string, tensors []quantstream.TensorInfo, opts WriteOptions) (*Writer, error) {
	plan, err := PlanShards(tensors, opts.PlanOptions)
	if err != nil {
		return nil, err
	}
	dir = filepath.Clean(dir)
	if b := filepath.Base(dir); b == "." || b == ".." || b == string(filepath.Separator) {
		return nil, fmt.Errorf("arrowio: output %q must name a directory to create or replace", dir)
	}
	if err := checkTarget(dir, opts.Overwrite); err != nil {
		return nil, err
	}
	tmp, err := os.MkdirTemp(filepath.Dir(dir), filepath.Base(dir)+".tmp-")
	if err != nil {
		return nil, fmt.Errorf("arrowio: output %s: %w", dir, err)
	}
	w := &Writer{dir: dir, tmp: tmp, opts: opts, plan: plan, state: make(map[string]int, len(tensors))}
	// MkdirTemp makes the directory private; the output is an ordinary directory.
	if err := os.Chmod(tmp, 0o755); err != nil {
		w.Abort()
		return nil, fmt.Errorf("arrowio: %w", err)
	}
	for _, s := range plan.Shards {
		path := filepath.Join(tmp, s.Name)
		f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o644)
		if err != nil {
			w.Abort()
			return nil, fmt.Errorf("arrowio: %w", err)
		}
		w.files = append(w.files, f)
		if _, err := f.WriteAt(s.Header, 0); err != nil {
			w.Abort()
			return nil, fmt.Errorf("arrowio: %s: writing header: %w", path, err)
		}
		// The file gets its final size now, so that a zero-length tensor at the end
		// needs no write and a reader of an unfinished file sees zeros, not EOF.
		if err := f.Truncate(s.Size()); err != nil {
			w.Abort()
			return nil, fmt.Errorf("arrowio: %s: %w", path, err)
		}
		for _, t := range s.Tensors {
			w.state[t.Name] = pending
		}
	}
	return w, nil
}

// checkTarget refuses an output path that is a file, or a non-empty directory
// unless overwrite is set.
func checkTarget(dir string, overwrite bool) error {
	st, err := os.Stat(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("arrowio: output %s: %w", dir, err)
	}
	if !st.IsDir() {
		return fmt.Errorf("%w: %s is not a directory", ErrExists, dir)
	}
	if overwrite {
		return nil
	}
	f, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("arrowio: output %s: %w", dir, err)
	}
	defer f.Close()
	if names, _ := f.Readdirnames(1); len(names) > 0 {
		return fmt.Errorf("%w: %s", ErrExists, dir)
	}
	return nil
}

// Plan returns the layout being written. The caller must not modify it.
func (w *Writer) Plan() *Plan { return w.plan }

// TempDir is the directory being written; it becomes the output on Commit.
func (w *Writer) TempDir() string { return w.tmp }

// claim marks a planned tensor as being written, so that a second write of the same
// tensor fails even while the first is in flight.
func (w *Writer) claim(name string, n int64) (*os.File, TensorHeader, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return nil, TensorHeader{}, ErrClosed
	}
	k, t, ok := w.plan.Lookup(name)
	if !ok {
		return nil, t, fmt.Errorf("%w: tensor %q is not planned", ErrWrite, name)
	}
	file := filepath.Join(w.tmp, w.plan.Shards[k].Name)
	if n >= 0 && n != t.Size() {
		return nil, t, fmt.Errorf("%w: tensor %q for %s: %d bytes, planned %v %v = %d bytes", ErrWrite, name, file, n, t.DType, t.Shape, t.Size())
	}
	if w.state[name] != pending {
		return nil, t, fmt.Errorf("%w: tensor %q for %s written twice", ErrWrite, name, file)
	}
	w.state[name] = writing
	return w.files[k], t, nil
}

func (w *Writer) finish(name string, err error) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if err != nil {
		w.state[name] = pending // a failed write may be retried
		return err
	}
	w.state[name] = written
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
	}
	return w.finish(name, err)
}

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
	}
	return w.finish(name, err)
}

// copyBufs are WriteTensorFrom's copy buffers: large enough that a multi-GB
// tensor is written in few syscalls, pooled so that concurrent writers share them.
var copyBufs = sync.Pool{New: func() any { b := make([]byte, 1<<20); return &b }}

var _ quantstream.Sink = (*Writer)(nil)

// Write writes every tensor of l at its planned place, checking dtype and shape
// against the plan: a Writer is the Sink of a conversion whose output it was
// created from. The caller keeps ownership of l. Like WriteTensor it is safe for
// concurrent use; a pipeline calls it from one goroutine.
func (w *Writer) Write(ctx context.Context, l *quantstream.Layer) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	for i := range l.Len() {
		t := l.Tensor(i)
		if _, p, ok := w.plan.Lookup(t.Name); ok && (p.DType != t.DType || !slices.Equal(p.Shape, t.Shape)) {
			return fmt.Errorf("%w: tensor %q is %v %v, planned %v %v", ErrWrite, t.Name, t.DType, t.Shape, p.DType, p.Shape)
		}
		if err := w.WriteTensor(t.Name, t.Data); err != nil {
			return err
		}
	}
	return nil
}

func (w *Writer) shardOf(name string) int { return w.plan.loc[name].shard }

// WriteSideFile writes a non-tensor file (config.json, hf_quant_config.json, ...)
// into the output. name must be a plain file name.
func (w *Writer) WriteSideFile(name string, data []byte) error {
	if !validShardName(name) {
		return fmt.Errorf("arrowio: side file name %q is not a file name", name)
	}
	if w.isClosed() {
		return ErrClosed
	}
	// Synced like the shards: Commit's rename must not publish an empty config.json
	// after a crash.
	return writeFileSync(filepath.Join(w.tmp, name), data)
}

// CopySideFiles copies files (output base name → source path, e.g. from
// Checkpoint.SideFiles) into the output, streaming each one.
func (w *Writer) CopySideFiles(files map[string]string) error {
	for _, name := range sortedKeys(files) {
		if err := w.copySideFile(name, files[name]); err != nil {
			return err
		}
	}
	return nil
}

func (w *Writer) copySideFile(name, src string) error {
	if !validShardName(name) {
		return fmt.Errorf("arrowio: side file name %q is not a file name", name)
	}
	if w.isClosed() {
		return ErrClosed
	}
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("arrowio: %w", err)
	}
	defer in.Close()
	out, err := os.OpenFile(filepath.Join(w.tmp, name), os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("arrowio: %w", err)
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return fmt.Errorf("arrowio: copying %s: %w", src, err)
	}
	if err := out.Sync(); err != nil {
		out.Close()
		return fmt.Errorf("arrowio: copying %s: %w", src, err)
	}
	if err := out.Close(); err != nil {
		return fmt.Errorf("arrowio: copying %s: %w", src, err)
	}
	return nil
}

func (w *Writer) isClosed() bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.closed
}

// Commit checks that every planned tensor was written, syncs the shards, writes the
// index (last, when there are several shards), and moves the temporary directory
// into place. If the output exists (empty, or with WriteOptions.Overwrite) it is
// replaced: on Linux by exchanging the two directories atomically, elsewhere by two
// renames. On failure the temporary directory is removed and the output is left as
// it was. The Writer is closed either way.
func (w *Writer) Commit() (err error) {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return ErrClosed
	}
	w.closed = true
	w.mu.Unlock()
	defer func() {
		if err != nil {
			w.closeFiles()
			os.RemoveAll(w.tmp)
		}
	}()

	var missing []string
	for _, s := range w.plan.Shards {
		for _, t := range s.Tensors {
			if w.state[t.Name] != written {
				missing = append(missing, t.Name)
			}
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("%w: %d planned tensors not written, first %q for %s", ErrWrite, len(missing), missing[0], filepath.Join(w.dir, w.plan.Shards[w.shardOf(missing[0])].Name))
	}
	for _, f := range w.files {
		if err := f.Sync(); err != nil {
			return fmt.Errorf("arrowio: %s: %w", f.Name(), err)
		}
	}
	if err := w.closeFiles(); err != nil {
		return err
	}
	if w.plan.Index != nil {
		if err := writeFileSync(filepath.Join(w.tmp, IndexName), w.plan.Index.Marshal()); err != nil {
			return err
		}
	}
	if err := syncDir(w.tmp); err != nil {
		return err
	}
	if err := checkTarget(w.dir, w.opts.Overwrite); err != nil {
		return err
	}
	if err := replaceDir(w.tmp, w.dir); err != nil {
		return err
	}
	return syncDir(filepath.Dir(w.dir))
}

// Abort removes the temporary directory. It is a no-op after Commit.
func (w *Writer) Abort() error {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return nil
	}
	w.closed = true
	w.mu.Unlock()
	err := w.closeFiles()
	return errors.Join(err, os.RemoveAll(w.tmp))
}

func (w *Writer) closeFiles() error {
	var errs []error
	for _, f := range w.files {
		if err := f.Close(); err != nil && !errors.Is(err, os.ErrClosed) {
			errs = append(errs, fmt.Errorf("arrowio: %w", err))
		}
	}
	return errors.Join(errs...)
}

func writeFileSync(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return fmt.Errorf("arrowio: %w", err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("arrowio: %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("arrowio: %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("arrowio: %s: %w", path, err)
	}
	return nil
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
