package verify

import (
	"cmp"
	"fmt"
	"io"
	"maps"
	"math"
	"slices"
	"strings"
)

// Severity grades a finding. Only errors make a checkpoint unsound.
type Severity string

const (
	// Error: an engine would refuse the checkpoint or serve wrong numbers.
	Error Severity = "error"
	// Warning: a known ModelOpt quirk, or something an engine tolerates with a
	// caveat; the message says which.
	Warning Severity = "warning"
	// Note: a check that could not run, and why.
	Note Severity = "note"
)

// The families of checks, as they appear in Finding.Check.
const (
	CheckFiles    = "files"    // index ⇄ shard headers, stray tensors, configs parse
	CheckConfig   = "config"   // hf_quant_config.json ⇄ config.json, known quant_algo
	CheckLayout   = "layout"   // the tensors each module's format needs, dtypes and shapes
	CheckScales   = "scales"   // scale and weight values (data)
	CheckFusion   = "fusion"   // fused groups share their scales
	CheckCoverage = "coverage" // unquantized linears excluded, quantized ones not
	CheckKV       = "kv-cache" // KV scales present iff a KV algorithm is set
	CheckAgainst  = "against"  // dequantized weights against the source (--against)
	CheckEngine   = "engine"   // an engine's ModelOpt loader (--engine)
)

// Finding is one problem (or remark) about a checkpoint: the tensor and file it is
// about, when there is one, and what is wrong.
type Finding struct {
	Severity Severity `json:"severity"`
	Check    string   `json:"check"`
	Tensor   string   `json:"tensor,omitempty"`
	File     string   `json:"file,omitempty"`
	Message  string   `json:"message"`
}

func (f Finding) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s [%s]", f.Severity, f.Check)
	if f.Tensor != "" {
		fmt.Fprintf(&b, " %s", f.Tensor)
	}
	if f.File != "" {
		fmt.Fprintf(&b, " (%s)", f.File)
	}
	fmt.Fprintf(&b, ": %s", f.Message)
	return b.String()
}

// Report is the result of Verify.
type Report struct {
	Dir string `json:"dir"`
	// OK is true when there is no error (warnings and notes allowed).
	OK       bool      `json:"ok"`
	Errors   int       `json:"errors"`
	Warnings int       `json:"warnings"`
	Findings []Finding `json:"findings"`
	// DataChecked is false when the data checks did not run (Options.HeadersOnly).
	DataChecked bool            `json:"data_checked"`
	Summary     Summary         `json:"summary"`
	Engines     []EngineVerdict `json:"engines,omitempty"`
	// SNR holds one entry per compared module (per expert for fused [E, …] experts)
	// when Options.Against is set.
	SNR []ModuleSNR `json:"snr,omitempty"`
}

// Summary is what the checkpoint holds, from headers.
type Summary struct {
	QuantAlgo string `json:"quant_algo,omitempty"`
	KVAlgo    string `json:"kv_cache_quant_algo,omitempty"`
	// Modules counts quantized modules per ModelOpt format (a fused [E, …] experts
	// tensor counts once).
	Modules map[string]int `json:"modules_per_format,omitempty"`
	// QuantizedParams counts the elements of quantized weights (unpacked), and
	// UnquantizedParams every other weight, bias, norm and embedding element (scales
	// and KV scales excluded).
	QuantizedParams   int64 `json:"quantized_params"`
	UnquantizedParams int64 `json:"unquantized_params"`
	Tensors           int   `json:"tensors"`
	Bytes             int64 `json:"bytes"`
}

// add appends a finding.
func (r *Report) add(f Finding) { r.Findings = append(r.Findings, f) }

// finish sorts the findings (errors first, then by check, tensor and message, so that
// reports are deterministic) and counts them.
func (r *Report) finish() {
	rank := map[Severity]int{Error: 0, Warning: 1, Note: 2}
	slices.SortStableFunc(r.Findings, func(a, b Finding) int {
		return cmp.Or(cmp.Compare(rank[a.Severity], rank[b.Severity]), cmp.Compare(a.Check, b.Check),
			cmp.Compare(a.Tensor, b.Tensor), cmp.Compare(a.File, b.File), cmp.Compare(a.Message, b.Message))
	})
	r.Findings = slices.Compact(r.Findings)
	r.Errors, r.Warnings = 0, 0
	for _, f := range r.Findings {
		switch f.Severity {
		case Error:
			r.Errors++
		case Warning:
			r.Warnings++
		}
	}
	r.OK = r.Errors == 0
}

// WriteText writes the report for a person: every finding, the SNR table, the engine
// verdicts and a one-line verdict.
func (r *Report) WriteText(w io.Writer) {
	fmt.Fprintf(w, "verify %s\n", r.Dir)
	s := r.Summary
	algo := cmp.Or(s.QuantAlgo, "none")
	fmt.Fprintf(w, "quant_algo %s, kv_cache_quant_algo %s; %d tensors, %s\n", algo, cmp.Or(s.KVAlgo, "none"), s.Tensors, humanBytes(s.Bytes))
	for _, f := range slices.Sorted(maps.Keys(s.Modules)) {
		fmt.Fprintf(w, "  %-16s %d modules\n", f, s.Modules[f])
	}
	total := s.QuantizedParams + s.UnquantizedParams
	if total > 0 {
		fmt.Fprintf(w, "parameters: %d quantized (%.1f%%), %d unquantized\n", s.QuantizedParams,
			100*float64(s.QuantizedParams)/float64(total), s.UnquantizedParams)
	}
	if !r.DataChecked {
		fmt.Fprintln(w, "data checks skipped (headers only)")
	}
	if len(r.SNR) > 0 {
		writeSNR(w, r.SNR)
	}
	for _, e := range r.Engines {
		e.WriteText(w)
	}
	for _, f := range r.Findings {
		if f.Check != CheckEngine { // printed with their verdict above
			fmt.Fprintln(w, f.String())
		}
	}
	if r.OK {
		fmt.Fprintf(w, "sound: %d warning(s)\n", r.Warnings)
	} else {
		fmt.Fprintf(w, "NOT sound: %d error(s), %d warning(s)\n", r.Errors, r.Warnings)
	}
}

// writeSNR prints per format the lowest and median SNR and every module below its
// floor; the full list is in the JSON report.
func writeSNR(w io.Writer, snr []ModuleSNR) {
	by := map[string][]ModuleSNR{}
	for _, m := range snr {
		by[m.Format] = append(by[m.Format], m)
	}
	fmt.Fprintln(w, "SNR against the source (dB):")
	for _, f := range slices.Sorted(maps.Keys(by)) {
		ms := by[f]
		vals := make([]float64, len(ms))
		for i, m := range ms {
			vals[i] = m.DB
		}
		slices.Sort(vals)
		lo := slices.MinFunc(ms, func(a, b ModuleSNR) int { return cmp.Compare(a.DB, b.DB) })
		fmt.Fprintf(w, "  %-16s %4d modules, median %6.2f, lowest %6.2f (%s), floor %.1f\n",
			f, len(ms), vals[len(vals)/2], lo.DB, lo.Module, ms[0].Floor)
	}
}

// fmtDB prints a dB figure, "exact" for a lossless comparison.
func fmtDB(db float64) string {
	if math.IsInf(db, 1) {
		return "exact"
	}
	return fmt.Sprintf("%.2f dB", db)
}

// humanBytes formats a byte count with binary units.
func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.2f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}
