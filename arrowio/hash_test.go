package arrowio

import (
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"sync"
	"testing"

	"github.com/quantstream/quantstream"
	"github.com/quantstream/quantstream/quant"
)

// TestHashWhileWriting writes shards whose tensors span several of the hasher's
// read-backs (hashChunk), in a shuffled order from several goroutines, with one
// write refused and retried, and checks that the sha256 every shard was recorded
// with (the provenance's) is that of the file published: the hasher follows each
// shard's written prefix, so a tensor hashed before it is written, or hashed twice,
// or skipped, gives another sum.
func TestHashWhileWriting(t *testing.T) {
	rng := rand.New(rand.NewPCG(13, 0))
	var infos []quantstream.TensorInfo
	data := map[string][]byte{}
	for i := range 24 {
		// Sizes from a few bytes to 2.5 hashChunks, not multiples of a page.
		n := 1 + rng.IntN(5*hashChunk/2)
		if i%5 == 0 {
			n = rng.IntN(9) // small, and zero-length ones
		}
		name := fmt.Sprintf("m.%02d.weight", i)
		b := make([]byte, n)
		for j := range b {
			b[j] = byte(rng.Uint32())
		}
		infos = append(infos, quantstream.TensorInfo{Name: name, DType: quant.U8, Shape: []int64{int64(n)}})
		data[name] = b
	}
	prov := NewProvenance("test", "1", "b", map[string]string{"k": "hash"}, []InputFile{{Name: "in.safetensors", Size: 1}})
	opts := WriteOptions{
		PlanOptions: PlanOptions{MaxShardSize: 4 * hashChunk},
		Fingerprint: prov.Fingerprint,
		Provenance:  prov,
	}
	out := filepath.Join(t.TempDir(), "out")
	w, err := Create(out, infos, opts)
	if err != nil {
		t.Fatal(err)
	}
	if len(w.Plan().Shards) < 3 {
		t.Fatalf("%d shards: the test wants several", len(w.Plan().Shards))
	}
	order := rng.Perm(len(infos))
	// A write of the wrong length is refused and leaves the tensor to be written.
	first := infos[order[0]].Name
	if err := w.WriteTensor(first, append(data[first], 0)); err == nil {
		t.Fatal("a write of the wrong length was accepted")
	}
	var wg sync.WaitGroup
	errs := make(chan error, len(infos))
	for g := range 3 {
		wg.Go(func() {
			for k := g; k < len(order); k += 3 {
				name := infos[order[k]].Name
				if err := w.WriteTensor(name, data[name]); err != nil {
					errs <- err
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
	p, err := ReadProvenance(out)
	if err != nil {
		t.Fatal(err)
	}
	shards := 0
	for _, f := range p.Files {
		sum, n, err := fileSHA256(filepath.Join(out, f.Name))
		if err != nil || sum != f.SHA256 || n != f.Size {
			t.Errorf("%s: recorded %d bytes sha256 %s, the file has %d bytes sha256 %s (%v)", f.Name, f.Size, f.SHA256, n, sum, err)
		}
		if filepath.Ext(f.Name) == ".safetensors" {
			shards++
		}
	}
	if shards != len(w.Plan().Shards) {
		t.Errorf("provenance lists %d shards, planned %d", shards, len(w.Plan().Shards))
	}
	got, err := ReadAllTensors(out)
	if err != nil {
		t.Fatal(err)
	}
	for name, b := range data {
		if string(got[name].Data) != string(b) {
			t.Errorf("tensor %s differs", name)
		}
	}
}
