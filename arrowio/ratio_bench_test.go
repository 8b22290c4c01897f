package arrowio_test

import (
	"io"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/quantstream/quantstream"
	"github.com/quantstream/quantstream/arrowio"
	"github.com/quantstream/quantstream/pipeline"
)

// BenchmarkRatioToSequentialRead reports what the issue asks of the I/O layer: the
// throughput of reading every layer into Arrow records (with the allocator the
// converter uses) and of writing them back as a sharded checkpoint, each as a ratio
// to a plain sequential read of the same files (warm page cache). Metrics:
// read/seq and write/seq (1.0 = as fast as io.Copy of the shards to io.Discard;
// writes land in the page cache), and the seconds Commit spends making the output
// durable (fsync of every shard, then the rename), which is the disk's speed, not ours.
func BenchmarkRatioToSequentialRead(b *testing.B) {
	c := benchCheckpoint(b)
	total := checkpointBytes(c)
	shards, _ := filepath.Glob(filepath.Join(benchDir, "ck", "*.safetensors"))
	mem := pipeline.NewPoolAllocator()
	var seq, read, write, commit time.Duration
	var infos []quantstream.TensorInfo
	for _, li := range c.Layers() {
		infos = append(infos, li.Tensors...)
	}
	b.SetBytes(total)
	for b.Loop() {
		t0 := time.Now()
		for _, s := range shards {
			f, err := os.Open(s)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := io.Copy(io.Discard, f); err != nil {
				b.Fatal(err)
			}
			f.Close()
		}
		t1 := time.Now()
		out := filepath.Join(b.TempDir(), "out")
		w, err := arrowio.Create(out, infos, arrowio.WriteOptions{PlanOptions: arrowio.PlanOptions{MaxShardSize: 1_000_000_000}})
		if err != nil {
			b.Fatal(err)
		}
		var tw time.Duration
		for _, li := range c.Layers() {
			l, err := c.ReadLayer(b.Context(), mem, li)
			if err != nil {
				b.Fatal(err)
			}
			t := time.Now()
			if err := w.Write(b.Context(), l); err != nil {
				b.Fatal(err)
			}
			tw += time.Since(t)
			l.Release()
		}
		read += time.Since(t1) - tw
		t := time.Now()
		if err := w.Commit(); err != nil {
			b.Fatal(err)
		}
		commit += time.Since(t)
		seq += t1.Sub(t0)
		write += tw
	}
	b.ReportMetric(seq.Seconds()/read.Seconds(), "read/seq")
	b.ReportMetric(seq.Seconds()/write.Seconds(), "write/seq")
	b.ReportMetric(commit.Seconds()/float64(b.N), "commit-fsync-s/op")
}
