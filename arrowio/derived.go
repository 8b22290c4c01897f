package arrowio

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"slices"

	"github.com/quantstream/quantstream"
)

// Derived is a tensor of a checkpoint view that is computed when it is read, from
// tensors stored in the checkpoint (Checkpoint.Derive): a weight decoded from the
// format it is stored in, a buffer under another name. Everything that reads only
// headers (Layers, Tensors, Lookup) sees its header as if it were stored.
type Derived struct {
	quantstream.TensorInfo
	// From names the stored tensors it is computed from, in the order Fill gets
	// them. The first one says which shard the tensor comes from (Checkpoint.ShardOf).
	From []string
	// Fill writes the tensor's data into dst (exactly its DataBytes), reading its
	// sources through from (TensorRef.Section or File.ReadInto), in any order and in
	// pieces, so that it holds no more than it needs at a time. It is called once
	// per read, possibly concurrently for different tensors, and must not retain dst
	// or from. It must watch ctx when it works long.
	Fill func(ctx context.Context, dst []byte, from []TensorRef) error
}

// Derive returns a view of c in which the stored tensors named in hide are gone
// and the derived tensors appear (a derived tensor may take a hidden tensor's
// name), grouped into layers from the new names as OpenCheckpoint groups stored
// ones. c may be a view itself: its derived tensors carry over. Only headers are
// touched: a derived tensor's sources are tensors stored in the checkpoint's files
// (hidden by an earlier view or not, never derived ones), and its header must have
// a valid size. The view takes over c's open files:
// c and its TensorRefs stay readable until the view is closed, and c.Close does
// nothing any more.
func (c *Checkpoint) Derive(derived []Derived, hide []string) (*Checkpoint, error) {
	v := &Checkpoint{files: c.files, fileDir: c.fileDir, tensors: make(map[string]TensorRef, len(c.tensors)+len(derived)), side: c.side, sideDir: c.sideDir, stored: c.stored}
	if v.stored == nil {
		v.stored = c.tensors
	}
	for n, t := range c.tensors {
		v.tensors[n] = t
	}
	for _, n := range hide {
		if _, ok := c.tensors[n]; !ok {
			return nil, fmt.Errorf("%w: hiding tensor %q, which is not in the checkpoint", ErrNotFound, n)
		}
		delete(v.tensors, n)
	}
	for i := range derived {
		d := &derived[i]
		if d.Fill == nil || len(d.From) == 0 {
			return nil, fmt.Errorf("arrowio: derived tensor %q has no sources or no Fill", d.Name)
		}
		n, err := d.DataBytes()
		if err != nil {
			return nil, fmt.Errorf("arrowio: derived %w", err)
		}
		if t, dup := v.tensors[d.Name]; dup {
			if t.derived != nil {
				return nil, fmt.Errorf("%w: tensor %q derived twice", ErrBadPlan, d.Name)
			}
			return nil, fmt.Errorf("%w: derived tensor %q hides a stored one that is not hidden", ErrBadPlan, d.Name)
		}
		from := make([]TensorRef, len(d.From))
		for k, s := range d.From {
			ref, ok := v.stored[s]
			if !ok {
				return nil, fmt.Errorf("%w: tensor %q is derived from %q, which is not stored in the checkpoint", ErrNotFound, d.Name, s)
			}
			from[k] = ref
		}
		info := d.TensorInfo
		info.Shape = slices.Clone(info.Shape)
		v.tensors[d.Name] = TensorRef{TensorHeader: TensorHeader{TensorInfo: info, End: n}, derived: &derivation{fill: d.Fill, from: from}}
	}
	v.names = sortedKeys(v.tensors)
	layers, err := groupLayers(v.names, v.tensors, untiedEmbeddings(v.side["config.json"]))
	if err != nil {
		return nil, err
	}
	v.layers = layers
	c.files = nil
	return v, nil
}

// derivation is how a derived tensor's bytes are made.
type derivation struct {
	fill func(ctx context.Context, dst []byte, from []TensorRef) error
	from []TensorRef
}

// IsDerived reports whether the tensor is computed when read (Checkpoint.Derive)
// rather than stored.
func (t TensorRef) IsDerived() bool { return t.derived != nil }

// read puts t's bytes into dst: a pread for a stored tensor, Fill for a derived one.
func (t TensorRef) read(ctx context.Context, dst []byte) error {
	if t.derived == nil {
		return t.File.ReadInto(t.TensorHeader, dst)
	}
	if int64(len(dst)) != t.Size() {
		return fmt.Errorf("arrowio: derived tensor %q: buffer of %d bytes for %d", t.Name, len(dst), t.Size())
	}
	if err := t.derived.fill(ctx, dst, t.derived.from); err != nil {
		return fmt.Errorf("tensor %q: %w", t.Name, err)
	}
	return nil
}

// Section returns a reader over a stored tensor's bytes (nil for a derived one).
func (t TensorRef) Section() *io.SectionReader {
	if t.File == nil {
		return nil
	}
	return t.File.Section(t.TensorHeader)
}

// ShardOf is the base name of the file a tensor is stored in, or for a derived
// tensor the file of its first source; ok is false for an unknown name.
func (c *Checkpoint) ShardOf(name string) (file string, ok bool) {
	t, ok := c.tensors[name]
	if !ok {
		return "", false
	}
	if t.derived != nil {
		t = t.derived.from[0]
	}
	return filepath.Base(t.File.Path), true
}
