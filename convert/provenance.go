package convert

import (
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"path/filepath"
	"runtime/debug"
	"strconv"
	"strings"
	"sync"

	"github.com/quantstream/quantstream/arrowio"
	"github.com/quantstream/quantstream/quant"
)

// Version is quantstream's version, recorded in every output's provenance and in
// its fingerprint.
const Version = "0.1.0-dev"

// modulePath is this module's path, looked up in the build information.
const modulePath = "github.com/quantstream/quantstream"

// Build identifies the code that runs, beyond Version, which does not change with
// every commit: "vcs:<commit>" for a binary built from a clean checkout of
// quantstream, "module:<version>" for a program that uses a released quantstream,
// else (a modified checkout, a test binary, a replaced module) "exe-sha256:<hex>",
// the sha256 of the running executable. It is part of the fingerprint, so that a
// conversion never resumes the work of other code under the same version, and of
// the provenance. Computed once.
func Build() string {
	buildOnce.Do(func() { build = buildIdentity() })
	return build
}

var (
	buildOnce sync.Once
	build     string
)

func buildIdentity() string {
	if bi, ok := debug.ReadBuildInfo(); ok {
		if bi.Main.Path == modulePath {
			var rev string
			modified := true
			for _, s := range bi.Settings {
				switch s.Key {
				case "vcs.revision":
					rev = s.Value
				case "vcs.modified":
					modified = s.Value != "false"
				}
			}
			if rev != "" && !modified {
				return "vcs:" + rev
			}
		}
		for _, d := range bi.Deps {
			if d.Path == modulePath && d.Replace == nil && d.Version != "" && d.Version != "(devel)" {
				return "module:" + d.Version
			}
		}
	}
	exe, err := os.Executable()
	if err == nil {
		var f *os.File
		if f, err = os.Open(exe); err == nil {
			h := sha256.New()
			_, err = io.Copy(h, f)
			f.Close()
			if err == nil {
				return "exe-sha256:" + hex.EncodeToString(h.Sum(nil))
			}
		}
	}
	// Nothing identifies the code: no run of it resumes another's work.
	return "unknown:" + strconv.Itoa(os.Getpid()) + ":" + err.Error()
}

// provenance is the output's provenance: what decides its bytes (the settings
// below, the stages, every input file's identity, the tool's version and build),
// with its fingerprint. Computed once per Job; it reads the inputs' headers, a
// sample of their data and the side files (arrowio.Checkpoint.Identity).
//
// Every field of Options is either here or does not change the output's bytes
// (Workers, MaxMemory, Allocator, Progress, the output path and Overwrite, Share,
// OnShardDone, Engine, which only refuses); TestFingerprintCoversOptions keeps it
// so.
func (j *Job) provenance() (*arrowio.Provenance, error) {
	if j.prov != nil {
		return j.prov, nil
	}
	inputs, err := j.ck.Identity()
	if err != nil {
		return nil, err
	}
	o := j.opt
	div := "ieee"
	if o.DivMode == quant.DivCUDA {
		div = "cuda"
	}
	maxShard := o.MaxShardSize
	if maxShard == 0 {
		maxShard = arrowio.DefaultMaxShardSize
	}
	conv := map[string]string{
		"mode":           j.mode,
		"stages":         strings.Join(j.stageNames(), ","),
		"div_mode":       div,
		"max_shard_size": strconv.FormatInt(maxShard, 10),
	}
	if o.Recipe != "" || o.KVCache != "" {
		conv["recipe"] = recipeName(o.Recipe)
		conv["kv_cache"] = recipeName(o.KVCache)
		conv["rules"] = strconv.Itoa(len(o.Rules))
		// The resolved recipe (presets, files and their imports, rules): what the
		// names stand for.
		conv["recipe_sha256"] = j.recipeSHA256
	}
	if j.archSHA256 != "" {
		// The user's model rules decide the output as much as the recipe.
		conv["arch_sha256"] = j.archSHA256
	}
	if o.Dequantize {
		conv["dequantize"] = "true"
	}
	if o.CastMXFP4ToNVFP4 {
		conv["cast_mxfp4_to_nvfp4"] = "true"
	}
	if j.added > 0 {
		// A caller's stage is known by its name only: one that changes what it
		// does must change its name, or a resumed conversion would mix the two.
		conv["caller_stages"] = strconv.Itoa(j.added)
	}
	j.prov = arrowio.NewProvenance("quantstream", Version, Build(), conv, inputs)
	return j.prov, nil
}

// recipeName is a recipe as the provenance records it: a preset's name, a
// file's base name (no path: the provenance is the same wherever the recipe lies).
func recipeName(r string) string {
	if strings.ContainsAny(r, `/\`) || strings.HasSuffix(r, ".yaml") || strings.HasSuffix(r, ".yml") || strings.HasSuffix(r, ".json") {
		return "file " + filepath.Base(r)
	}
	return r
}

func sha256Hex(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}
