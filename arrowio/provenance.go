package arrowio

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
)

// ProvenanceName is the side file that records what made an output directory.
// Inference engines ignore it (they read config.json, the index and the shards).
const ProvenanceName = "quantstream_provenance.json"

// ProvenanceFormat is the value of the "format" key of the version of the file
// this package writes. Part of the on-disk format.
const ProvenanceFormat = "quantstream-provenance/1"

// maxProvenanceSize bounds the provenance file read back: it lists one entry per
// input and output file, a few hundred bytes each.
const maxProvenanceSize = 64 << 20

// ErrBadProvenance marks a provenance file that cannot be read or does not
// describe its directory.
var ErrBadProvenance = errors.New("arrowio: bad provenance file")

// Provenance is the content of quantstream_provenance.json, written into an
// output directory when it is published. It is deterministic: it holds no time,
// host name, path or process split, so that the same conversion gives the same
// bytes wherever and however it ran (one process, or shares and a merge).
//
//	{
//	  "format": "quantstream-provenance/1",
//	  "tool": "quantstream",
//	  "version": "0.1.0-dev",
//	  "build": "vcs:<commit>" | "module:<version>" | "exe-sha256:<hex>",
//	  "fingerprint": "<64 hex digits>",
//	  "conversion": {"div_mode": "ieee", "max_shard_size": "5000000000", "mode": …, …},
//	  "inputs": [{"dir": 0, "name": "model.safetensors", "size": …,
//	              "header_sha256": …, "sample_sha256": …},
//	             {"dir": 0, "name": "config.json", "size": …, "sha256": …}, …],
//	  "files": [{"name": "config.json", "size": …, "sha256": …},
//	            {"name": "model-00001-of-00002.safetensors", "size": …, "sha256": …}, …]
//	}
//
// "files" lists every other file of the directory with its size and the sha256 of
// its whole content, sorted by name: a verifier recomputes them. "inputs" says what
// was read: for each --in directory (dir: its position, 0 first) every
// safetensors file opened, by base name, with its size, the sha256 of its header
// (the 8-byte length and the JSON) and the sha256 of a sample of its data section
// (Sample), and every other file of the input that reached the output, with the
// sha256 of its content. "conversion" holds the settings that decide the output
// bytes, as strings. "fingerprint" is the sha256 of the compact JSON encoding of
// {"format", "tool", "version", "build", "conversion", "inputs"} in that order, as
// ComputeFingerprint computes it: two runs with the same fingerprint write the same bytes,
// and a run resumes only the work of its own fingerprint.
type Provenance struct {
	Format      string            `json:"format"`
	Tool        string            `json:"tool"`
	Version     string            `json:"version"`
	Build       string            `json:"build"`
	Fingerprint string            `json:"fingerprint"`
	Conversion  map[string]string `json:"conversion"`
	Inputs      []InputFile       `json:"inputs"`
	Files       []FileSum         `json:"files"`
}

// InputFile identifies one file a conversion read.
type InputFile struct {
	Dir  int    `json:"dir"`
	Name string `json:"name"`
	Size int64  `json:"size"`
	// SHA256 is the sha256 of the whole file (files other than safetensors).
	SHA256 string `json:"sha256,omitempty"`
	// HeaderSHA256 and SampleSHA256 identify a safetensors file without reading
	// all of it: its header, and the sample of its data section that Sample reads.
	HeaderSHA256 string `json:"header_sha256,omitempty"`
	SampleSHA256 string `json:"sample_sha256,omitempty"`
}

// FileSum is one output file: base name, size and sha256 of its content.
type FileSum struct {
	Name   string `json:"name"`
	Size   int64  `json:"size"`
	SHA256 string `json:"sha256"`
}

// ComputeFingerprint returns the fingerprint of p's identity fields (see
// Provenance); NewProvenance sets Fingerprint to it.
func (p *Provenance) ComputeFingerprint() string {
	id := struct {
		Format     string            `json:"format"`
		Tool       string            `json:"tool"`
		Version    string            `json:"version"`
		Build      string            `json:"build"`
		Conversion map[string]string `json:"conversion"`
		Inputs     []InputFile       `json:"inputs"`
	}{p.Format, p.Tool, p.Version, p.Build, p.Conversion, p.Inputs}
	b, _ := json.Marshal(id) // strings, integers and maps with string keys: cannot fail
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// NewProvenance returns the provenance of a conversion (no Files yet: the writer
// adds them when it publishes the output), with its Format set, its inputs in
// order and its Fingerprint computed.
func NewProvenance(tool, version, build string, conversion map[string]string, inputs []InputFile) *Provenance {
	p := &Provenance{Format: ProvenanceFormat, Tool: tool, Version: version, Build: build,
		Conversion: conversion, Inputs: slices.Clone(inputs)}
	if p.Conversion == nil {
		p.Conversion = map[string]string{}
	}
	slices.SortStableFunc(p.Inputs, func(a, b InputFile) int {
		if a.Dir != b.Dir {
			return a.Dir - b.Dir
		}
		return strings.Compare(a.Name, b.Name)
	})
	p.Fingerprint = p.ComputeFingerprint()
	return p
}

// Marshal encodes p as the file holds it: indented JSON, keys in a fixed order,
// files sorted by name, a final newline.
func (p *Provenance) Marshal() []byte {
	q := *p
	q.Files = slices.Clone(p.Files)
	slices.SortFunc(q.Files, func(a, b FileSum) int { return strings.Compare(a.Name, b.Name) })
	if q.Files == nil {
		q.Files = []FileSum{}
	}
	if q.Inputs == nil {
		q.Inputs = []InputFile{}
	}
	b, _ := json.MarshalIndent(&q, "", "  ")
	return append(b, '\n')
}

// ReadProvenance reads and checks the provenance file of an output directory: a
// known format, a fingerprint that matches its identity fields, and plain file
// names. It does not look at the files it lists (a verifier does).
func ReadProvenance(dir string) (*Provenance, error) {
	path := dir + string(os.PathSeparator) + ProvenanceName
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("arrowio: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxProvenanceSize+1))
	if err != nil {
		return nil, fmt.Errorf("arrowio: %s: %w", path, err)
	}
	if len(b) > maxProvenanceSize {
		return nil, fmt.Errorf("%w: %s is larger than %d bytes", ErrBadProvenance, path, maxProvenanceSize)
	}
	var p Provenance
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&p); err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrBadProvenance, path, err)
	}
	if p.Format != ProvenanceFormat {
		return nil, fmt.Errorf("%w: %s: format %q, want %q", ErrBadProvenance, path, p.Format, ProvenanceFormat)
	}
	if fp := p.ComputeFingerprint(); fp != p.Fingerprint {
		return nil, fmt.Errorf("%w: %s: fingerprint %s does not match its identity fields (%s)", ErrBadProvenance, path, p.Fingerprint, fp)
	}
	for _, fs := range p.Files {
		if !validShardName(fs.Name) || fs.Name == ProvenanceName || fs.Size < 0 {
			return nil, fmt.Errorf("%w: %s: file entry %q", ErrBadProvenance, path, fs.Name)
		}
	}
	return &p, nil
}

// complete reports whether dir holds every file p lists, with its size (not its
// sha256: that is a verifier's job), and nothing else.
func (p *Provenance) complete(dir string) bool {
	ents, err := os.ReadDir(dir)
	if err != nil || len(ents) != len(p.Files)+1 {
		return false
	}
	for _, fs := range p.Files {
		st, err := os.Lstat(dir + string(os.PathSeparator) + fs.Name)
		if err != nil || !st.Mode().IsRegular() || st.Size() != fs.Size {
			return false
		}
	}
	return true
}
