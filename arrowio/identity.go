package arrowio

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
)

// The data sample of a safetensors file that identifies it in a fingerprint:
// sampleBlocks blocks of sampleBlockSize bytes spread evenly over the data section,
// the first at its start and the last at its end (all of it when it is smaller).
// Part of the fingerprint format: changing them changes every fingerprint.
const (
	sampleBlocks    = 16
	sampleBlockSize = 64 << 10
)

// Identity identifies every file the checkpoint is made of, without reading all of
// it: for each safetensors file its size, the sha256 of its header and of a sample
// of its data (Sample), and for each side file (SideFiles) its size and the sha256
// of its content. Files are named by base name and the position of their directory
// among the overlaid ones, ordered by directory, then name; a side file replaced by
// a later directory's is not listed.
//
// The header and sizes say what the conversion plans; the data sample tells apart
// two checkpoints of the same shapes (a new revision downloaded over an old one)
// without reading terabytes. Modification times are not used: a copy of the
// checkpoint on each node of a cluster is the same input.
func (c *Checkpoint) Identity() ([]InputFile, error) {
	var out []InputFile
	for i, f := range c.files {
		h, s, err := f.Sample()
		if err != nil {
			return nil, err
		}
		out = append(out, InputFile{Dir: c.fileDir[i], Name: filepath.Base(f.Path), Size: f.Size(), HeaderSHA256: h, SampleSHA256: s})
	}
	for _, name := range sortedKeys(c.side) {
		path := c.side[name]
		sum, n, err := fileSHA256(path)
		if err != nil {
			return nil, err
		}
		out = append(out, InputFile{Dir: c.sideDir[name], Name: name, Size: n, SHA256: sum})
	}
	slices.SortStableFunc(out, func(a, b InputFile) int {
		return cmp.Or(cmp.Compare(a.Dir, b.Dir), strings.Compare(a.Name, b.Name))
	})
	return out, nil
}

// Sample returns the sha256 of f's header (the 8-byte length and the JSON, as in
// the file) and of the sample of its data section that identifies it: sampleBlocks
// blocks of sampleBlockSize bytes at evenly spaced offsets from its start to its
// end, concatenated, or the whole section when it is no larger than that.
func (f *File) Sample() (header, sample string, err error) {
	hb := make([]byte, f.Header.DataOff)
	if _, err := f.r.ReadAt(hb, 0); err != nil {
		return "", "", readErr(err, f.Path, "header")
	}
	hs := sha256.Sum256(hb)
	data := f.size - f.Header.DataOff
	sr := io.NewSectionReader(f.r, f.Header.DataOff, data)
	d := sha256.New()
	if data <= sampleBlocks*sampleBlockSize {
		if _, err := io.Copy(d, sr); err != nil {
			return "", "", readErr(err, f.Path, "data")
		}
	} else {
		buf := make([]byte, sampleBlockSize)
		for k := range int64(sampleBlocks) {
			off := k * (data - sampleBlockSize) / (sampleBlocks - 1)
			if _, err := sr.ReadAt(buf, off); err != nil {
				return "", "", readErr(err, f.Path, "data")
			}
			d.Write(buf)
		}
	}
	return hex.EncodeToString(hs[:]), hex.EncodeToString(d.Sum(nil)), nil
}

// fileSHA256 is the sha256 of a file's content and its length.
func fileSHA256(path string) (string, int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", 0, fmt.Errorf("arrowio: %w", err)
	}
	defer f.Close()
	h := sha256.New()
	buf := copyBufs.Get().(*[]byte)
	n, err := io.CopyBuffer(h, f, *buf)
	copyBufs.Put(buf)
	if err != nil {
		return "", 0, fmt.Errorf("arrowio: %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), n, nil
}
