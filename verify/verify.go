package verify

import (
	"context"
	"fmt"
	"strings"

	"github.com/quantstream/quantstream/arch"
)

// Options tune Verify.
type Options struct {
	// Against is a source checkpoint directory: every quantized weight is
	// dequantized and compared with the source weight of the same name (per-module
	// SNR). Empty: no comparison.
	Against string
	// Engines are engines whose ModelOpt loaders must accept the checkpoint
	// (Engines() lists them); a refusal is an error.
	Engines []string
	// HeadersOnly skips every check that reads tensor data (scale values, NaN codes,
	// fused-group equality); Against still reads data.
	HeadersOnly bool
	// Families are the model families the fused-group check detects the
	// checkpoint's in (arch.Builtin().With(the user's files), verify --arch); nil:
	// the built-in ones.
	Families *arch.Registry
	// Progress, when set, is called as data is read (from the calling goroutine).
	Progress func(Progress)
}

// Verify checks the checkpoint in dir and returns every problem found. The error is
// for what prevents checking at all (dir unreadable, an unknown engine, a read
// failure, ctx done); problems of the checkpoint are findings, and Report.OK says
// whether there is any error among them.
func Verify(ctx context.Context, dir string, opt Options) (*Report, error) {
	for _, e := range opt.Engines {
		if _, ok := engines[e]; !ok {
			return nil, fmt.Errorf("verify: unknown engine %q (known: %s)", e, strings.Join(Engines(), ", "))
		}
	}
	r := &Report{Dir: dir, Findings: []Finding{}}
	c, err := openCheckpoint(dir, r)
	if err != nil {
		return nil, err
	}
	defer c.close()
	qc := parseQuantConfig(c, r)
	a := analyze(c, qc, opt.Families, r)
	r.Summary = a.summary()
	if !opt.HeadersOnly {
		if err := checkData(ctx, a, r, opt.Progress); err != nil {
			return nil, err
		}
		r.DataChecked = true
	}
	if opt.Against != "" {
		if err := against(ctx, a, opt.Against, r, opt.Progress); err != nil {
			return nil, err
		}
	}
	for _, name := range opt.Engines {
		v := engines[name].judge(a)
		r.Engines = append(r.Engines, v)
		for _, f := range v.Reasons {
			if f.Severity == Error {
				f.Message = name + ": " + f.Message
				r.add(f)
			}
		}
	}
	r.finish()
	return r, nil
}

// summary counts modules per format and parameters.
func (a *analysis) summary() Summary {
	s := Summary{Modules: map[string]int{}, Tensors: len(a.c.names)}
	if a.qc != nil {
		s.QuantAlgo, s.KVAlgo = a.qc.Algo, a.qc.KV
	}
	owned := map[string]bool{}
	for _, m := range a.mods {
		for _, n := range m.tensors {
			if !strings.HasSuffix(n, roleBias) {
				owned[n] = true
			}
		}
		if m.Format != "" && len(m.Logical) > 0 {
			s.Modules[m.Format]++
			s.QuantizedParams += numel(m.Logical)
			owned[m.Weight] = true
		}
	}
	for _, n := range a.kv {
		owned[n] = true
	}
	for _, n := range a.c.names {
		t := a.c.tensors[n]
		s.Bytes += t.bytes()
		if !owned[n] {
			s.UnquantizedParams += t.numel()
		}
	}
	return s
}

func numel(shape []int64) int64 {
	n := int64(1)
	for _, d := range shape {
		n *= d
	}
	return n
}
