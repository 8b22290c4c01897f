// Package arrowio is quantstream's format code: safetensors files and checkpoints
// in, Arrow layer records in between, sharded safetensors checkpoints out, and an
// Arrow IPC dump of layers for inspection. It knows nothing about quantization.
//
// # The safetensors file
//
//	┌──────────────┬───────────────────────────────┬──────────────────────────┐
//	│ N: uint64 LE │ JSON header, N bytes          │ data section             │
//	│ (8 bytes)    │ {"__metadata__":{…},          │ tensors back to back,    │
//	│              │  "name":{"dtype":"BF16",      │ row-major little-endian; │
//	│              │   "shape":[…],                │ data_offsets are         │
//	│              │   "data_offsets":[b,e]},…}    │ relative to its start    │
//	│              │ space-padded to N % 8 == 0    │                          │
//	└──────────────┴───────────────────────────────┴──────────────────────────┘
//
// Reading is bounded and validated before any data is touched: N ≤ MaxHeaderSize
// and inside the file, the header valid UTF-8 JSON with nothing after it but
// whitespace, every dtype known (quant.ParseDType), every byte length equal to
// elements × dtype width (with overflow checks), tensors contiguous,
// non-overlapping and covering the data section exactly, no duplicate names.
// Failures wrap ErrCorrupt (or ErrHeaderTooLarge) and name the file and tensor.
// Tensor data is read with pread (io.ReaderAt) into buffers the caller or its
// allocator owns; a file is never loaded whole.
//
// # Checkpoints and layers
//
// OpenCheckpoint overlays one or more directories (a base checkpoint, then a
// calibration directory whose tensors replace or add to it), reads only headers,
// and groups tensors into layers: every tensor named <prefix>layers.N.… is in
// decoder layer N, everything else in the non-decoder group
// (quantstream.NonDecoder), which is split per top-level module (embeddings, final
// norm, lm_head) when it would be larger than every decoder layer. Layers() lists
// decoder layers by ascending N and the non-decoder groups last; tensors within a
// layer are sorted by name. Grouping does
// not depend on how tensors are spread over shards.
//
// Layers are quantstream.LayerInfo values (the headers; TensorRef and Lookup say
// where each tensor's bytes lie). ReadLayer turns a layer, or any other group of the
// checkpoint's tensors, into a quantstream.Layer (one Arrow record: name, dtype,
// shape, data large_binary). The data column's buffer is allocated once from the
// caller's memory.Allocator and the tensors are pread straight into it.
// Checkpoint.Source streams layers as a quantstream.Source.
//
// Checkpoint.Derive makes a view in which stored tensors may be hidden and derived
// tensors appear, computed from stored ones when a layer is read (a quantized
// weight decoded to BF16, a buffer under another name): everything that works on
// headers sees the derived headers, and the bytes are computed into the layer's
// buffer by the derivation's Fill, which reads its sources in pieces.
//
// # Writing
//
// The writer plans first: from the full ordered list of output headers
// (quantstream.TensorInfo) PlanShards assigns tensors to shards as save_pretrained
// does and lays each shard out as safetensors' own writer does (descending dtype
// alignment, then name), so output is byte-identical to transformers' for the
// same tensors and order. Create writes every header, then WriteTensor /
// WriteTensorFrom / Write (a whole layer: a Writer is a quantstream.Sink) put data
// at planned offsets in any order, from any goroutine. Commit checks that every
// planned tensor was written exactly once and publishes the output atomically
// (exchanging it with an existing one on Linux); Abort removes what was written.
// An existing non-empty output is refused (ErrExists) unless
// WriteOptions.Overwrite is set; a path that is not a directory always is
// (ErrNotDir).
//
// # Work directory, resumption, shares
//
// Everything is assembled beside the output, in a work directory whose name
// derives from it, so that a rerun finds it:
//
//	<out>.lock      flock: exclusive for a writer of the whole output or Merge,
//	                shared for the writers of shares; removed by the last holder
//	<out>.partial/  job.json    fingerprint, shards (name, size, cost), provenance
//	                out/        side files and the index from the start; each shard,
//	                            written as out/.<shard>.tmp-*, its sha256 read back
//	                            as its prefix is written, synced, renamed to
//	                            out/<shard> when complete
//	                journal/    <shard>.json per complete shard: fingerprint, size,
//	                            sha256; written under a temporary name, synced,
//	                            renamed, directory synced — after the shard itself
//	                shares/     <i>-of-<n> for each share whose writer started
//
// A crash at any point leaves complete shards with their records, and files
// under temporary names that never count: a record appears only after its shard
// is durable, so a torn or missing record only costs that shard being redone.
// A writer with WriteOptions.Fingerprint joins a work directory of the same
// fingerprint and writes only the shards without a valid record (of its
// fingerprint, its planned size, the file there with that size). A writer of the
// whole output holds the lock alone, so it removes a work directory of another
// fingerprint (Status.Removed says what it held) and the temporary files
// interrupted writers left; a share's writer refuses one (ErrForeignWork), since
// that conversion's writers may be running on other machines. A directory named
// <out>.partial without a job.json is never touched. Directories <out>.tmp-* of
// earlier versions are reported in Status.Warnings, not removed.
//
// WriteOptions.Share makes a writer one of N: it writes the shards of its share
// (SplitShares: contiguous runs of whole shards of about equal cost, the same for
// every writer since it depends on the plan alone), and Finish leaves them for
// Merge, which takes the lock alone, checks that every shard is recorded (else
// ErrIncomplete naming each missing share) and publishes like Commit. On
// publication the work directory's out/ becomes the output, with the provenance
// file (ProvenanceName, see Provenance) when WriteOptions.Provenance is set, and
// the work directory and lock are removed: nothing is left beside the output.
// Create over an output already published with the same fingerprint returns
// ErrComplete; Merge run again returns AlreadyDone.
//
// Over NFS the lock works as the mount allows (see outputLock); journal records
// are renamed into place, which NFS does atomically, and the directory is opened
// before it is read so that records written on other machines are seen.
//
// Sizes: ParseSize reads decimal units (KB, MB, GB, TB: powers of 1000, as
// transformers' "5GB" default) and binary units (KiB, MiB, GiB, TiB: powers of
// 1024). Shards are split on the sum of tensor bytes, headers excluded.
//
// # Ownership and concurrency
//
// A File, a Checkpoint and its TensorRefs are read-only after opening and safe for
// concurrent use; Close them when done. ReadLayer returns a Layer the caller owns
// and must Release; on error nothing stays allocated. Writer and DumpWriter never
// retain the slices or Layers they are given. A Writer's data methods are safe for
// concurrent use; Commit, Finish, Release and Abort must not race with them. Two
// goroutines of the Writer work beside the writes: the hasher hashes each shard's
// written prefix (read back from the page cache) as it grows, and the completer
// completes each shard whose last tensor is written (sync, waiting for its sha256,
// rename, record); Flush waits for the completer.
//
// # Arrow IPC dump
//
// DumpWriter (a quantstream.Sink) writes layers as one Arrow IPC stream (one record
// batch per layer);
// the schema carries "quantstream.dump" metadata and each batch carries its layer
// index and prefix as custom metadata. DumpReader reads it back into Layers.
package arrowio
