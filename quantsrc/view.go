package quantsrc

import (
	"bytes"
	"encoding/json"
	"fmt"

	"github.com/quantstream/quantstream/arrowio"
)

// View returns ck as the BF16 model it stores: each quantized weight (and its
// scales) replaced by the derived BF16 tensor it decodes to, everything else as
// stored. It reads no data; the view takes over ck's files (arrowio.Derive), so
// close the view, not ck.
func (s *Scheme) View(ck *arrowio.Checkpoint) (*arrowio.Checkpoint, error) {
	var derived []arrowio.Derived
	var hide []string
	for _, w := range s.fp8 {
		derived = append(derived, s.fp8Derived(w))
		hide = append(hide, w.weight, w.scale)
	}
	for _, w := range s.mx {
		derived = append(derived, s.mxDerived(w))
		hide = append(hide, w.blocks, w.scales)
	}
	return ck.Derive(derived, hide)
}

// StripConfig returns configJSON without the quantization_config the scheme was
// read from (at the top, or under text_config): the bytes of that member are cut
// out, every other byte stays, so the result is the config.json of the BF16 model
// the view holds, formatted as the source was.
func (s *Scheme) StripConfig(configJSON []byte) ([]byte, error) {
	out, err := deleteMember(configJSON, "quantization_config")
	if err != nil {
		return nil, fmt.Errorf("%w: config.json: %v", ErrInvalid, err)
	}
	start, end, ok, err := memberValue(out, "text_config")
	if err != nil {
		return nil, fmt.Errorf("%w: config.json: %v", ErrInvalid, err)
	}
	if ok && out[start] == '{' {
		text, err := deleteMember(out[start:end], "quantization_config")
		if err != nil {
			return nil, fmt.Errorf("%w: config.json text_config: %v", ErrInvalid, err)
		}
		out = append(append(append([]byte(nil), out[:start]...), text...), out[end:]...)
	}
	return out, nil
}

// members scans the top-level object of b and calls f with each member's key,
// the end of the previous member's value (just after the '{' for the first), and
// the start and end of its value.
func members(b []byte, f func(key string, prevEnd, start, end int64) bool) error {
	d := json.NewDecoder(bytes.NewReader(b))
	if t, err := d.Token(); err != nil || t != json.Delim('{') {
		return fmt.Errorf("not a JSON object")
	}
	prev := d.InputOffset()
	for d.More() {
		t, err := d.Token()
		if err != nil {
			return err
		}
		key, _ := t.(string)
		var v json.RawMessage
		if err := d.Decode(&v); err != nil {
			return err
		}
		end := d.InputOffset()
		if !f(key, prev, end-int64(len(v)), end) {
			return nil
		}
		prev = end
	}
	return nil
}

// memberValue finds the byte range of the value of key in b's top-level object.
func memberValue(b []byte, key string) (start, end int, ok bool, err error) {
	err = members(b, func(k string, _, s, e int64) bool {
		if k == key {
			start, end, ok = int(s), int(e), true
			return false
		}
		return true
	})
	return start, end, ok, err
}

// deleteMember cuts key and its value out of b's top-level object, with the comma
// that separated it from its neighbours; b is unchanged when key is absent.
func deleteMember(b []byte, key string) ([]byte, error) {
	first := true
	cut := [2]int{-1, -1}
	err := members(b, func(k string, prev, _, end int64) bool {
		if k != key {
			first = false
			return true
		}
		cut = [2]int{int(prev), int(end)}
		if first {
			// No comma before it: take the one after it, if another member follows.
			i := int(end)
			for i < len(b) && (b[i] == ' ' || b[i] == '\n' || b[i] == '\r' || b[i] == '\t') {
				i++
			}
			if i < len(b) && b[i] == ',' {
				cut[1] = i + 1
			}
		}
		return false
	})
	if err != nil || cut[0] < 0 {
		return b, err
	}
	return append(append([]byte(nil), b[:cut[0]]...), b[cut[1]:]...), nil
}
