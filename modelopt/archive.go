package modelopt

import (
	"archive/zip"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
)

// DecodeFile reads a torch.save archive (such as modelopt_state.pth) and returns its
// decoded pickle. See DecodeArchive.
func DecodeFile(path string, lim Limits) (any, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	v, err := DecodeArchive(f, st.Size(), lim)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return v, nil
}

// DecodeArchive reads a torch.save ZIP archive from r (size bytes): the entry
// <folder>/data.pkl is unpickled with Unpickle, and tensor storages are read from
// <folder>/data/<key>. Every entry is read through a size checked against lim before
// anything is allocated; the archive's own CRCs are verified.
func DecodeArchive(r io.ReaderAt, size int64, lim Limits) (any, error) {
	lim = lim.withDefaults()
	zr, err := zip.NewReader(r, size)
	if err != nil && !errors.Is(err, zip.ErrInsecurePath) {
		return nil, fmt.Errorf("%w: zip: %v", ErrCorrupt, err)
	}
	entries := make(map[string]*zip.File, len(zr.File))
	prefix := ""
	for _, f := range zr.File {
		if _, dup := entries[f.Name]; dup {
			return nil, fmt.Errorf("%w: zip entry %q appears twice", ErrCorrupt, f.Name)
		}
		entries[f.Name] = f
		// torch.save puts every entry in one folder named after the file; data.pkl sits
		// directly in it.
		if strings.HasSuffix(f.Name, "/data.pkl") && strings.Count(f.Name, "/") == 1 {
			if prefix != "" {
				return nil, fmt.Errorf("%w: two data.pkl entries", ErrCorrupt)
			}
			prefix = strings.TrimSuffix(f.Name, "data.pkl")
		}
	}
	if prefix == "" {
		return nil, fmt.Errorf("%w: no <folder>/data.pkl entry (not a torch.save archive)", ErrCorrupt)
	}
	if bo, ok := entries[prefix+"byteorder"]; ok {
		b, err := readEntry(bo, 16)
		if err != nil {
			return nil, err
		}
		if string(b) != "little" {
			return nil, fmt.Errorf("%w: byteorder %q (only little-endian archives are supported)", ErrUnsupported, b)
		}
	}
	pkl, err := readEntry(entries[prefix+"data.pkl"], lim.MaxPickleBytes)
	if err != nil {
		return nil, err
	}
	load := func(key string, want int64) ([]byte, error) {
		f, ok := entries[prefix+"data/"+key]
		if !ok {
			return nil, fmt.Errorf("%w: storage entry data/%s missing", ErrCorrupt, key)
		}
		if f.UncompressedSize64 != uint64(want) {
			return nil, fmt.Errorf("%w: storage entry data/%s has %d bytes, the pickle says %d", ErrCorrupt, key, f.UncompressedSize64, want)
		}
		return readEntry(f, lim.MaxTensorBytes)
	}
	return Unpickle(pkl, load, lim)
}

// readEntry reads one zip entry whose declared size is at most max, then reads on to
// EOF so that archive/zip verifies the CRC (it reports a mismatch only there).
func readEntry(f *zip.File, max int64) ([]byte, error) {
	if f.UncompressedSize64 > uint64(max) {
		return nil, fmt.Errorf("%w: zip entry %s of %d bytes > %d", ErrLimit, f.Name, f.UncompressedSize64, max)
	}
	rc, err := f.Open()
	if err != nil {
		return nil, fmt.Errorf("%w: zip entry %s: %v", ErrCorrupt, f.Name, err)
	}
	defer rc.Close()
	buf := make([]byte, f.UncompressedSize64)
	if _, err := io.ReadFull(rc, buf); err != nil {
		return nil, fmt.Errorf("%w: zip entry %s: %v", ErrCorrupt, f.Name, err)
	}
	var one [1]byte
	for range 64 { // a reader may return (0, nil) a few times; never forever

		n, err := rc.Read(one[:])
		if n > 0 {
			return nil, fmt.Errorf("%w: zip entry %s is longer than its header says", ErrCorrupt, f.Name)
		}
		if err == io.EOF {
			return buf, nil
		}
		if err != nil {
			return nil, fmt.Errorf("%w: zip entry %s: %v", ErrCorrupt, f.Name, err)
		}
	}
	return nil, fmt.Errorf("%w: zip entry %s does not end", ErrCorrupt, f.Name)
}
