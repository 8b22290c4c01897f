package arrowio

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// TestCopyTensor rewrites a sharded checkpoint by CopyTensor alone, in the kernel
// and through user space (a reader that is not a file), and expects the bytes of
// writing every tensor from memory.
func TestCopyTensor(t *testing.T) {
	infos, data := randomTensors(11)
	in := filepath.Join(t.TempDir(), "in")
	w, err := Create(in, infos, WriteOptions{PlanOptions: PlanOptions{MaxShardSize: 40}})
	if err != nil {
		t.Fatal(err)
	}
	for _, ti := range infos {
		if err := w.WriteTensor(ti.Name, data[ti.Name]); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
	// Another file system than the input's, where there is one (copy_file_range
	// refuses EXDEV on some: the copy goes on through user space).
	outDirs := []string{t.TempDir()}
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		d, err := os.MkdirTemp("/dev/shm", "copytensor-")
		if err == nil {
			t.Cleanup(func() { os.RemoveAll(d) })
			outDirs = append(outDirs, d)
		}
	}
	for i, viaUser := range []bool{false, true, false} {
		if i >= len(outDirs)+1 {
			break
		}
		outDir := t.TempDir()
		if i == 2 {
			outDir = outDirs[1]
		}
		ck, err := OpenCheckpoint(in)
		if err != nil {
			t.Fatal(err)
		}
		defer ck.Close()
		if viaUser {
			for _, f := range ck.files {
				raw, err := os.ReadFile(f.Path)
				if err != nil {
					t.Fatal(err)
				}
				f.r = bytes.NewReader(raw) // not an *os.File: no copy_file_range
			}
		}
		out := filepath.Join(outDir, "out")
		w, err := Create(out, infos, WriteOptions{PlanOptions: PlanOptions{MaxShardSize: 40}})
		if err != nil {
			t.Fatal(err)
		}
		for _, ti := range infos {
			if !ck.Stored(ti.Name) {
				t.Fatalf("%s not stored", ti.Name)
			}
			if err := ck.CopyTensor(t.Context(), w, ti.Name); err != nil {
				t.Fatal(err)
			}
		}
		if err := ck.CopyTensor(t.Context(), w, infos[0].Name); !errors.Is(err, ErrWrite) {
			t.Errorf("second copy of %s: %v, want ErrWrite", infos[0].Name, err)
		}
		if err := w.Commit(); err != nil {
			t.Fatal(err)
		}
		names, _ := filepath.Glob(filepath.Join(in, "*"))
		for i := range names {
			names[i] = filepath.Base(names[i])
		}
		sameFiles(t, out, in, names...)
	}
}

// TestCopyTensorCancelled stops at a cancelled context and leaves the tensor to
// write again.
func TestCopyTensorCancelled(t *testing.T) {
	infos, data := randomTensors(12)
	in := filepath.Join(t.TempDir(), "in")
	w, err := Create(in, infos, WriteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, ti := range infos {
		if err := w.WriteTensor(ti.Name, data[ti.Name]); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
	ck, err := OpenCheckpoint(in)
	if err != nil {
		t.Fatal(err)
	}
	defer ck.Close()
	out, err := Create(filepath.Join(t.TempDir(), "out"), infos, WriteOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer out.Abort()
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	big := infos[0]
	for _, ti := range infos {
		if len(data[ti.Name]) > len(data[big.Name]) {
			big = ti
		}
	}
	if err := ck.CopyTensor(ctx, out, big.Name); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled copy: %v", err)
	}
	if err := ck.CopyTensor(t.Context(), out, big.Name); err != nil {
		t.Fatalf("copy after a cancelled one: %v", err)
	}
}
