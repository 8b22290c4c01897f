package quant

import (
	"errors"
	"fmt"
	"sort"
	"sync"
)

// ErrUnknownFormat is returned for a format name that is not registered.
var ErrUnknownFormat = errors.New("quant: unknown format")

// Format is one weight format, keyed by ModelOpt's format string ("fp8", "nvfp4", ...).
// Quantize mirrors quant_utils.to_quantized_weight: w is the weight in its export dtype
// (BF16/F16/F32, 2-D [out,in] or 3-D [experts,...]); scale and scale2 are the scales
// exactly as ModelOpt passes them (their shapes matter: a 0-dim FP8 scale divides in the
// weight dtype, a (1,) scale in float32); scale2 may be nil. Dequantize is its inverse
// into dtype (ModelOpt's from_quantized_weight for fp8/int8; our own for the rest).
type Format struct {
	Name       string
	Quantize   func(w Tensor, scale, scale2 *Tensor, block int, mode DivMode) (Tensor, error)
	Dequantize func(q Tensor, scale, scale2 *Tensor, block int, dtype DType) (Tensor, error)
}

var (
	formatsMu sync.RWMutex
	formats   = map[string]*Format{}
)

// RegisterFormat adds a format; registering a name twice is a programming error and panics.
func RegisterFormat(f *Format) {
	formatsMu.Lock()
	defer formatsMu.Unlock()
	if _, dup := formats[f.Name]; dup {
		panic("quant: format " + f.Name + " registered twice")
	}
	formats[f.Name] = f
}

// LookupFormat finds a registered format by ModelOpt's name.
func LookupFormat(name string) (*Format, error) {
	formatsMu.RLock()
	defer formatsMu.RUnlock()
	f, ok := formats[name]
	if !ok {
		return nil, fmt.Errorf("%w %q", ErrUnknownFormat, name)
	}
	return f, nil
}

// Formats lists the registered names, sorted.
func Formats() []string {
	formatsMu.RLock()
	defer formatsMu.RUnlock()
	out := make([]string, 0, len(formats))
	for n := range formats {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// ToQuantizedWeight is quant_utils.to_quantized_weight: it quantizes w into format.
func ToQuantizedWeight(w Tensor, scale, scale2 *Tensor, format string, block int, mode DivMode) (Tensor, error) {
	f, err := LookupFormat(format)
	if err != nil {
		return Tensor{}, err
	}
	if f.Quantize == nil {
		return Tensor{}, fmt.Errorf("%w %q: no quantizer", ErrUnknownFormat, format)
	}
	return f.Quantize(w, scale, scale2, block, mode)
}

// FromQuantizedWeight dequantizes q of format into dtype.
func FromQuantizedWeight(q Tensor, scale, scale2 *Tensor, format string, block int, dtype DType) (Tensor, error) {
	f, err := LookupFormat(format)
	if err != nil {
		return Tensor{}, err
	}
	if f.Dequantize == nil {
		return Tensor{}, fmt.Errorf("%w %q: no dequantizer", ErrUnknownFormat, format)
	}
	return f.Dequantize(q, scale, scale2, block, dtype)
}
