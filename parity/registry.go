package parity

import (
	"errors"
	"fmt"
	"sort"
	"sync"

	"github.com/quantstream/quantstream/quant"
)

// Result is what a handler computed for a case: output tensors by role (a role
// mapped to nil means the function returned None) and non-tensor results by the
// keys of the case's "expected" object (e.g. "get_quantization_format").
type Result struct {
	Tensors map[string]*quant.Tensor
	Values  map[string]any
}

// Handler runs one tensor case. It returns an error when the computation fails; for a
// case whose reference raised, returning an error is the expected outcome.
type Handler func(c *Case) (*Result, error)

// ErrNoHandler marks a case whose function/format this runner does not know. Such a
// case is a failure, never a skip.
var ErrNoHandler = errors.New("parity: no handler")

var (
	regMu    sync.RWMutex
	handlers = map[string]Handler{} // "function\x00format"; format "" matches any
)

// Register adds the handler of a manifest function for one format ("" for any format).
// Registering the same key twice panics: it is a programming error.
func Register(function, format string, h Handler) {
	regMu.Lock()
	defer regMu.Unlock()
	k := function + "\x00" + format
	if _, dup := handlers[k]; dup {
		panic(fmt.Sprintf("parity: handler for %s/%s registered twice", function, format))
	}
	handlers[k] = h
}

func lookup(function, format string) (Handler, bool) {
	regMu.RLock()
	defer regMu.RUnlock()
	if h, ok := handlers[function+"\x00"+format]; ok {
		return h, true
	}
	h, ok := handlers[function+"\x00"]
	return h, ok
}

// Functions lists the registered function/format keys, for diagnostics.
func Functions() []string {
	regMu.RLock()
	defer regMu.RUnlock()
	var out []string
	for k := range handlers {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
