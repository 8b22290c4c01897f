package pyjson

import (
	"bytes"
	"testing"
)

func TestWriteStringMatchesPython(t *testing.T) {
	// Expected values are what python3 -c 'import json; print(json.dumps(s))' prints.
	for in, want := range map[string]string{
		"lm_head":        `"lm_head"`,
		"a\x7fb":         `"a\u007fb"`,
		"tab\there":      `"tab\there"`,
		"quote\"back\\":  `"quote\"back\\"`,
		"\x01":           `"\u0001"`,
		"é":              `"\u00e9"`,
		"\U0001F600":     `"\ud83d\ude00"`,
		"model.layers.*": `"model.layers.*"`,
	} {
		var b bytes.Buffer
		WriteString(&b, in)
		if b.String() != want {
			t.Errorf("WriteString(%q) = %s, want %s", in, b.String(), want)
		}
	}
}
