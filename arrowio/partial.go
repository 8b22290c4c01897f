package arrowio

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/quantstream/quantstream"
)

// The work directory of an output <out> is <out>.partial:
//
//	<out>.partial/
//	  job.json        what is being written: fingerprint, shards (name, size, cost),
//	                  the provenance to publish; written once, before the directory
//	                  gets its name, so a work directory always has a whole one
//	  out/            the output being assembled: side files and the index from the
//	                  start, each shard once it is complete; becomes <out>
//	  journal/        one record per complete shard: <shard>.json with the
//	                  fingerprint, size and sha256 of out/<shard>
//	  shares/         one empty file <i>-of-<n> per share whose writer has started
//
// These names are part of the on-disk format: a later version must read them or
// refuse the directory.
const (
	// PartialSuffix names the work directory beside an output: <out>.partial.
	PartialSuffix = ".partial"

	jobFile    = "job.json"
	stageDir   = "out"
	journalDir = "journal"
	sharesDir  = "shares"
	jobFormat  = "quantstream-partial/1"
	// tempMark is in the name of every file written under a temporary name
	// (".<name>.tmp-<random>") before it is renamed into place.
	tempMark = ".tmp-"
	// newMark is in the name of a work directory being created
	// (<out>.partial.new-<random>) before it is renamed to <out>.partial.
	newMark = ".new-"
)

var (
	// ErrForeignWork is returned when the work directory <out>.partial belongs to
	// another conversion (another fingerprint) that a share cannot join, or is not
	// a quantstream work directory at all.
	ErrForeignWork = errors.New("arrowio: the work directory belongs to another conversion")
	// ErrIncomplete is returned by Merge when a shard of the output is not
	// complete: a share has not run, or has not finished.
	ErrIncomplete = errors.New("arrowio: output incomplete")

	errNoWork = errors.New("no work directory")
)

// jobRecord is job.json.
type jobRecord struct {
	Format      string      `json:"format"`
	Fingerprint string      `json:"fingerprint"`
	Overwrite   bool        `json:"overwrite"`
	Shards      []jobShard  `json:"shards"`
	Provenance  *Provenance `json:"provenance,omitempty"`
}

type jobShard struct {
	Name string `json:"name"`
	Size int64  `json:"size"`
	Cost int64  `json:"cost"`
}

// shardRecord is a journal record: shard Name, of Size bytes and content SHA256
// ("" when the writer computes no sums), is complete in out/, written by a writer
// of Fingerprint.
type shardRecord struct {
	Fingerprint string `json:"fingerprint"`
	Name        string `json:"name"`
	Size        int64  `json:"size"`
	SHA256      string `json:"sha256"`
}

// isWorkName reports whether a file name is one of a file being written under a
// temporary name.
func isWorkName(name string) bool {
	return strings.HasPrefix(name, ".") && strings.Contains(name, tempMark)
}

// readJob reads job.json of the work directory work: errNoWork when work does not
// exist, ErrForeignWork when it exists but is not one (no readable job.json of a
// known format).
func readJob(work string) (*jobRecord, error) {
	if _, err := os.Lstat(work); errors.Is(err, os.ErrNotExist) {
		return nil, errNoWork
	}
	b, err := readSmall(filepath.Join(work, jobFile), maxProvenanceSize)
	if err != nil {
		return nil, fmt.Errorf("%w: %s exists and is not a quantstream work directory (%v): remove or rename it", ErrForeignWork, work, err)
	}
	var j jobRecord
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&j); err != nil || j.Format != jobFormat {
		return nil, fmt.Errorf("%w: %s exists and is not a quantstream work directory of this version (%s: format %q, %v): remove or rename it", ErrForeignWork, work, jobFile, j.Format, err)
	}
	for _, s := range j.Shards {
		if !validShardName(s.Name) {
			return nil, fmt.Errorf("%w: %s: shard %q is not a file name", ErrForeignWork, filepath.Join(work, jobFile), s.Name)
		}
	}
	return &j, nil
}

func readSmall(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > limit {
		return nil, fmt.Errorf("%s is larger than %d bytes", path, limit)
	}
	return b, nil
}

// describe says, for a message, what an existing work directory holds.
func (j *jobRecord) describe(work string) string {
	done := len(readRecords(work, j))
	fp := j.Fingerprint
	if fp == "" {
		fp = "none: not resumable"
	}
	return fmt.Sprintf("%s: an unfinished conversion with fingerprint %s, %d of %d shards complete", work, fp, done, len(j.Shards))
}

// matches checks that a work directory of the same fingerprint plans the same
// shards (it cannot differ unless the fingerprint misses something that decides
// the bytes: then nothing is reused).
func (j *jobRecord) matches(p *Plan, work string) error {
	ok := len(j.Shards) == len(p.Shards)
	for i := 0; ok && i < len(p.Shards); i++ {
		ok = j.Shards[i].Name == p.Shards[i].Name && j.Shards[i].Size == p.Shards[i].Size()
	}
	if !ok {
		return fmt.Errorf("%w: %s has the same fingerprint %s but other shards than this conversion plans: remove it", ErrForeignWork, work, j.Fingerprint)
	}
	return nil
}

func (j *jobRecord) costs() []int64 {
	c := make([]int64, len(j.Shards))
	for i, s := range j.Shards {
		c[i] = s.Cost
	}
	return c
}

// setUp creates or joins the work directory (the lock is held): a missing one is
// created; one of the same fingerprint is joined; one of another is removed by a
// writer of the whole output (it holds the lock alone, so no writer uses it) and
// refused to a share's (ErrForeignWork: other writers of it may be running
// elsewhere). A writer of the whole output also removes what interrupted writers
// left (files being written, work directories being created) and every writer
// reports the temporary directories of earlier versions (<out>.tmp-*). Then the
// journal says which shards are complete.
func (w *Writer) setUp() error {
	fp := w.opts.Fingerprint
	whole := w.opts.Share.Whole()
	job, err := readJob(w.work)
	switch {
	case errors.Is(err, errNoWork):
		if job, err = w.create(); err != nil {
			return err
		}
	case err != nil:
		return err
	case fp != "" && job.Fingerprint == fp:
		if err := job.matches(w.plan, w.work); err != nil {
			return err
		}
	case !whole:
		return fmt.Errorf("%w: %s; this share's fingerprint is %s. A share cannot join it: finish that conversion, or remove %s (when none of its writers runs), or run convert without a share, which replaces it", ErrForeignWork, job.describe(w.work), fp, w.work)
	default:
		w.status.Removed = append(w.status.Removed, job.describe(w.work))
		if err := os.RemoveAll(w.work); err != nil {
			return fmt.Errorf("arrowio: removing %s: %w", w.work, err)
		}
		if job, err = w.create(); err != nil {
			return err
		}
	}
	if whole {
		w.removeStale()
	}
	if old, _ := filepath.Glob(w.dir + ".tmp-*"); len(old) > 0 {
		w.status.Warnings = append(w.status.Warnings, fmt.Sprintf("left by an interrupted run of an earlier quantstream, not used, safe to remove when no such run is going on: %s", strings.Join(old, ", ")))
	}
	recs := readRecords(w.work, job)
	for k, s := range w.plan.Shards {
		_, w.shards[k].done = recs[s.Name]
	}
	if !whole {
		marker := filepath.Join(w.work, sharesDir, fmt.Sprintf("%d-of-%d", w.opts.Share.Index, w.opts.Share.Count))
		if err := writeFileAtomic(marker, nil); err != nil {
			return err
		}
	}
	return nil
}

// removeStale removes (a writer of the whole output holds the lock alone) the
// files interrupted writers were writing under temporary names and the work
// directories they were creating, reporting the directories.
func (w *Writer) removeStale() {
	news, _ := filepath.Glob(w.work + newMark + "*")
	for _, d := range news {
		if os.RemoveAll(d) == nil {
			w.status.Removed = append(w.status.Removed, d+": a work directory an interrupted writer was creating")
		}
	}
	n := 0
	for _, dir := range []string{w.stage, filepath.Join(w.work, journalDir)} {
		ents, _ := os.ReadDir(dir)
		for _, e := range ents {
			if isWorkName(e.Name()) && os.Remove(filepath.Join(dir, e.Name())) == nil {
				n++
			}
		}
	}
	if n > 0 {
		w.status.Removed = append(w.status.Removed, fmt.Sprintf("%s: %d files interrupted writers left unfinished", w.work, n))
	}
}

// create makes the work directory: job.json, out/ with the side files and the
// index, journal/ and shares/, all under a temporary name first, then renamed. A
// share whose sibling won the race to create it joins the sibling's.
func (w *Writer) create() (*jobRecord, error) {
	parent := filepath.Dir(w.dir)
	tmp, err := os.MkdirTemp(parent, filepath.Base(w.work)+newMark)
	if err != nil {
		return nil, fmt.Errorf("arrowio: output %s: %w", w.dir, err)
	}
	ok := false
	defer func() {
		if !ok {
			os.RemoveAll(tmp)
		}
	}()
	// MkdirTemp makes the directory private; the output is an ordinary directory.
	if err := os.Chmod(tmp, 0o755); err != nil {
		return nil, fmt.Errorf("arrowio: %w", err)
	}
	for _, d := range []string{stageDir, journalDir, sharesDir} {
		if err := os.Mkdir(filepath.Join(tmp, d), 0o755); err != nil {
			return nil, fmt.Errorf("arrowio: %w", err)
		}
	}
	stage := filepath.Join(tmp, stageDir)
	for _, f := range w.opts.SideFiles {
		var err error
		if f.Path != "" && f.Data == nil {
			err = copyFileAtomic(filepath.Join(stage, f.Name), f.Path)
		} else {
			err = writeFileAtomic(filepath.Join(stage, f.Name), f.Data)
		}
		if err != nil {
			return nil, err
		}
	}
	if w.plan.Index != nil {
		if err := writeFileAtomic(filepath.Join(stage, IndexName), w.plan.Index.Marshal()); err != nil {
			return nil, err
		}
	}
	job := &jobRecord{Format: jobFormat, Fingerprint: w.opts.Fingerprint, Overwrite: w.opts.Overwrite, Provenance: w.opts.Provenance}
	costs := w.costs()
	for i, s := range w.plan.Shards {
		job.Shards = append(job.Shards, jobShard{Name: s.Name, Size: s.Size(), Cost: costs[i]})
	}
	b, _ := json.MarshalIndent(job, "", "  ")
	if err := writeFileAtomic(filepath.Join(tmp, jobFile), append(b, '\n')); err != nil {
		return nil, err
	}
	if err := syncDir(tmp); err != nil {
		return nil, err
	}
	if err := os.Rename(tmp, w.work); err != nil {
		if _, serr := os.Lstat(w.work); serr == nil && !w.opts.Share.Whole() {
			// Another share created it first: join it if it is of this conversion.
			os.RemoveAll(tmp)
			ok = true
			other, err := readJob(w.work)
			if err != nil {
				return nil, err
			}
			if other.Fingerprint != w.opts.Fingerprint || w.opts.Fingerprint == "" {
				return nil, fmt.Errorf("%w: %s; this share's fingerprint is %s", ErrForeignWork, other.describe(w.work), w.opts.Fingerprint)
			}
			return other, other.matches(w.plan, w.work)
		}
		return nil, fmt.Errorf("arrowio: %w", err)
	}
	ok = true
	w.status.Created = true
	return job, syncDir(parent)
}

// readRecords returns the valid journal records of work: for a shard of job, of
// its fingerprint and size, whose file in out/ has that size. Anything else (a
// record being written, of another run, of a shard since lost) does not count.
func readRecords(work string, job *jobRecord) map[string]shardRecord {
	dir := filepath.Join(work, journalDir)
	// Opening the directory makes an NFS client revalidate it, so records that
	// writers on other machines have just renamed into it are seen.
	if d, err := os.Open(dir); err == nil {
		d.Readdirnames(-1)
		d.Close()
	}
	out := map[string]shardRecord{}
	for _, s := range job.Shards {
		b, err := readSmall(filepath.Join(dir, s.Name+".json"), 1<<16)
		if err != nil {
			continue
		}
		var r shardRecord
		if json.Unmarshal(b, &r) != nil || r.Fingerprint != job.Fingerprint || r.Name != s.Name || r.Size != s.Size {
			continue
		}
		if st, err := os.Stat(filepath.Join(work, stageDir, s.Name)); err != nil || !st.Mode().IsRegular() || st.Size() != s.Size {
			continue
		}
		out[s.Name] = r
	}
	return out
}

// writeRecord adds rec to the journal of work, durably: written under a temporary
// name, synced, renamed, and the directory synced. A crash at any point leaves
// either no record or a whole one.
func writeRecord(work string, rec shardRecord) error {
	b, _ := json.Marshal(rec)
	return writeFileAtomic(filepath.Join(work, journalDir, rec.Name+".json"), append(b, '\n'))
}

// publish makes the work directory's out/ the output (the lock is held alone):
// every shard must be recorded; the provenance, if any, gets the size and sha256
// of every file; then out/ replaces dir (see replaceDir) and the work directory is
// removed.
func publish(dir, work string, job *jobRecord) error {
	stage := filepath.Join(work, stageDir)
	recs := readRecords(work, job)
	for _, s := range job.Shards {
		if _, ok := recs[s.Name]; !ok {
			return fmt.Errorf("%w: %s: shard %s is not complete", ErrIncomplete, work, s.Name)
		}
	}
	ents, err := os.ReadDir(stage)
	if err != nil {
		return fmt.Errorf("arrowio: %w", err)
	}
	var files []FileSum
	for _, e := range ents {
		name, path := e.Name(), filepath.Join(stage, e.Name())
		if isWorkName(name) || name == ProvenanceName {
			os.Remove(path) // left by an interrupted writer, or a provenance to redo
			continue
		}
		if !e.Type().IsRegular() {
			return fmt.Errorf("arrowio: %s is not a regular file", path)
		}
		if job.Provenance == nil {
			continue
		}
		if r, ok := recs[name]; ok && r.SHA256 != "" {
			files = append(files, FileSum{Name: name, Size: r.Size, SHA256: r.SHA256})
			continue
		}
		sum, n, err := fileSHA256(path)
		if err != nil {
			return err
		}
		files = append(files, FileSum{Name: name, Size: n, SHA256: sum})
	}
	if job.Provenance != nil {
		p := *job.Provenance
		p.Files = files
		if err := writeFileAtomic(filepath.Join(stage, ProvenanceName), p.Marshal()); err != nil {
			return err
		}
	}
	if err := syncDir(stage); err != nil {
		return err
	}
	if st, err := os.Stat(dir); err == nil {
		if !st.IsDir() {
			return notDir(dir, st)
		}
		if empty, err := isEmptyDir(dir); err != nil {
			return err
		} else if !empty && !job.Overwrite {
			return fmt.Errorf("%w: %s", ErrExists, dir)
		}
	}
	if err := replaceDir(stage, dir); err != nil {
		return err
	}
	if err := os.RemoveAll(work); err != nil {
		return fmt.Errorf("arrowio: removing %s: %w", work, err)
	}
	return syncDir(filepath.Dir(dir))
}

// MergeStatus is what Merge did.
type MergeStatus struct {
	Fingerprint string
	Shards      int
	// AlreadyDone: the output was published before (by an earlier Merge, or a
	// writer of the whole output); nothing changed.
	AlreadyDone bool
}

// Merge publishes the output that the writers of its shares (WriteOptions.Share)
// left in dir's work directory: it takes the lock alone (ErrBusy while a share's
// writer runs), checks that every shard is complete and of the work directory's
// fingerprint (ErrIncomplete naming each share that is missing, by the shares
// whose writers started), writes the provenance and publishes as Commit does. It is
// idempotent: run again after a success, it finds the output published and
// changes nothing (AlreadyDone).
func Merge(dir string) (*MergeStatus, error) {
	dir = filepath.Clean(dir)
	if st, err := os.Stat(dir); err == nil && !st.IsDir() {
		return nil, notDir(dir, st)
	}
	work := dir + PartialSuffix
	lock, err := lockOutput(dir, true)
	if err != nil {
		return nil, err
	}
	defer lock.release()
	job, err := readJob(work)
	published, perr := ReadProvenance(dir)
	done := perr == nil && published.complete(dir)
	switch {
	case errors.Is(err, errNoWork) && done:
		return &MergeStatus{Fingerprint: published.Fingerprint, Shards: countShards(published), AlreadyDone: true}, nil
	case errors.Is(err, errNoWork):
		return nil, fmt.Errorf("%w: nothing to merge: no work directory %s (convert --shard I/N --out %s writes it, one share per worker)", ErrIncomplete, work, dir)
	case err != nil:
		return nil, err
	case done && job.Fingerprint != "" && published.Fingerprint == job.Fingerprint:
		// Published, but interrupted before the work directory was removed.
		os.RemoveAll(work)
		return &MergeStatus{Fingerprint: job.Fingerprint, Shards: len(job.Shards), AlreadyDone: true}, nil
	}
	recs := readRecords(work, job)
	var missing []int
	for i, s := range job.Shards {
		if _, ok := recs[s.Name]; !ok {
			missing = append(missing, i)
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("%w: %s: %d of %d shards are not complete: %s", ErrIncomplete, work, len(missing), len(job.Shards), missingShares(work, job, missing))
	}
	if err := publish(dir, work, job); err != nil {
		return nil, err
	}
	return &MergeStatus{Fingerprint: job.Fingerprint, Shards: len(job.Shards)}, nil
}

func countShards(p *Provenance) int {
	n := 0
	for _, f := range p.Files {
		if strings.HasSuffix(f.Name, ".safetensors") {
			n++
		}
	}
	return n
}

// missingShares names the shares that own the missing shards, for each share
// count whose writers have started (shares/<i>-of-<n>).
func missingShares(work string, job *jobRecord, missing []int) string {
	started := map[int]map[int]bool{}
	ents, _ := os.ReadDir(filepath.Join(work, sharesDir))
	for _, e := range ents {
		a, b, ok := strings.Cut(e.Name(), "-of-")
		i, err1 := strconv.Atoi(a)
		n, err2 := strconv.Atoi(b)
		if !ok || err1 != nil || err2 != nil || n < 1 || n > MaxShares || i < 0 || i >= n {
			continue
		}
		if started[n] == nil {
			started[n] = map[int]bool{}
		}
		started[n][i] = true
	}
	names := func(ks []int) string {
		var s []string
		for i, k := range ks {
			if i == 3 {
				s = append(s, fmt.Sprintf("… %d more", len(ks)-3))
				break
			}
			s = append(s, job.Shards[k].Name)
		}
		return strings.Join(s, ", ")
	}
	if len(started) == 0 {
		return fmt.Sprintf("no share has started (%s); run convert --shard I/N for each share", names(missing))
	}
	var parts []string
	for _, n := range slices.Sorted(maps.Keys(started)) {
		cut := SplitShares(job.costs(), n)
		for i := range n {
			var ks []int
			for _, k := range missing {
				if k >= cut[i] && k < cut[i+1] {
					ks = append(ks, k)
				}
			}
			if len(ks) == 0 {
				continue
			}
			state := "no writer of it has started"
			if started[n][i] {
				state = "its writer started and has not finished"
			}
			parts = append(parts, fmt.Sprintf("share %d/%d is missing (%s: %s)", i, n, names(ks), state))
		}
	}
	return strings.Join(parts, "; ")
}

// writeFileAtomic writes data to path durably: a temporary file in the same
// directory, synced, renamed over path, and the directory synced.
func writeFileAtomic(path string, data []byte) error {
	return atomicFile(path, func(f *os.File) error {
		_, err := f.Write(data)
		return err
	})
}

// copyFileAtomic copies src to path as writeFileAtomic writes.
func copyFileAtomic(path, src string) error {
	in, err := os.Open(src)
	if err != nil {
		return fmt.Errorf("arrowio: %w", err)
	}
	defer in.Close()
	return atomicFile(path, func(f *os.File) error {
		buf := copyBufs.Get().(*[]byte)
		defer copyBufs.Put(buf)
		if _, err := io.CopyBuffer(f, in, *buf); err != nil {
			return fmt.Errorf("copying %s: %w", src, err)
		}
		return nil
	})
}

func atomicFile(path string, fill func(*os.File) error) error {
	dir, base := filepath.Dir(path), filepath.Base(path)
	f, err := os.CreateTemp(dir, "."+base+tempMark)
	if err != nil {
		return fmt.Errorf("arrowio: %w", err)
	}
	err = fill(f)
	if err == nil {
		err = f.Chmod(0o644)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		os.Remove(f.Name())
		return fmt.Errorf("arrowio: %s: %w", path, err)
	}
	return syncDir(dir)
}

// Probe is what Create would find for an output, without locking or changing
// anything: for a plan's report.
type Probe struct {
	// Lines say what a writer would do, for a person.
	Lines []string
	// Problem is what Create would refuse with (ErrNotDir, ErrExists,
	// ErrForeignWork), nil if nothing.
	Problem error
	// Complete: the output is published with this fingerprint (ErrComplete).
	Complete bool
	// Kept shards complete in the work directory with this fingerprint; Mine the
	// shards of the share (names).
	Kept int
	Mine []string
}

// ProbeOutput says what Create(dir, tensors, opts) would find and do (it reads the
// output, the work directory and its journal; it does not lock).
func ProbeOutput(dir string, tensors []quantstream.TensorInfo, opts WriteOptions) (*Probe, error) {
	plan, err := PlanShards(tensors, opts.PlanOptions)
	if err != nil {
		return nil, err
	}
	dir = filepath.Clean(dir)
	w := &Writer{dir: dir, work: dir + PartialSuffix, opts: opts, plan: plan, shards: make([]shardState, len(plan.Shards))}
	pr := &Probe{}
	lo, hi := 0, len(plan.Shards)
	if !opts.Share.Whole() {
		lo, hi = opts.Share.shards(SplitShares(w.costs(), opts.Share.Count))
	}
	for _, s := range plan.Shards[lo:hi] {
		pr.Mine = append(pr.Mine, s.Name)
	}
	if err := w.checkTargetReadOnly(); errors.Is(err, ErrComplete) {
		pr.Complete = true
		pr.Lines = append(pr.Lines, fmt.Sprintf("%s holds the complete output of this conversion (fingerprint %s): convert has nothing to do (--overwrite converts again)", dir, opts.Fingerprint))
		return pr, nil
	} else if err != nil {
		pr.Problem = err
		return pr, nil
	}
	if _, err := os.Stat(dir); err == nil {
		pr.Lines = append(pr.Lines, fmt.Sprintf("%s exists: replaced when the conversion is complete (--overwrite)", dir))
	} else {
		pr.Lines = append(pr.Lines, fmt.Sprintf("%s: created when the conversion is complete", dir))
	}
	job, err := readJob(w.work)
	switch {
	case errors.Is(err, errNoWork):
		pr.Lines = append(pr.Lines, fmt.Sprintf("work directory %s: none yet", w.work))
	case err != nil:
		pr.Problem = err
	case opts.Fingerprint != "" && job.Fingerprint == opts.Fingerprint && job.matches(plan, w.work) == nil:
		recs := readRecords(w.work, job)
		for _, s := range plan.Shards[lo:hi] {
			if _, ok := recs[s.Name]; ok {
				pr.Kept++
			}
		}
		pr.Lines = append(pr.Lines, fmt.Sprintf("work directory %s: this conversion, %d of %d shards complete (%d of the %d of %s kept, the rest written)",
			w.work, len(recs), len(plan.Shards), pr.Kept, hi-lo, shareName(opts.Share)))
	case opts.Share.Whole():
		pr.Lines = append(pr.Lines, fmt.Sprintf("work directory %s: replaced, nothing reused (%s)", w.work, job.describe(w.work)))
	default:
		pr.Problem = fmt.Errorf("%w: %s; this share's fingerprint is %s: a share cannot join it", ErrForeignWork, job.describe(w.work), opts.Fingerprint)
	}
	return pr, nil
}

func shareName(s Share) string {
	if s.Whole() {
		return "the whole output"
	}
	return "share " + s.String()
}

// checkTargetReadOnly is checkTarget without removing anything.
func (w *Writer) checkTargetReadOnly() error {
	st, err := os.Stat(w.dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("arrowio: output %s: %w", w.dir, err)
	}
	if !st.IsDir() {
		return notDir(w.dir, st)
	}
	if empty, err := isEmptyDir(w.dir); err != nil || empty {
		return err
	}
	if fp := w.opts.Fingerprint; fp != "" && !w.opts.Overwrite {
		if p, err := ReadProvenance(w.dir); err == nil && p.Fingerprint == fp && p.complete(w.dir) {
			return ErrComplete
		}
	}
	if w.opts.Overwrite {
		return nil
	}
	return fmt.Errorf("%w: %s", ErrExists, w.dir)
}
