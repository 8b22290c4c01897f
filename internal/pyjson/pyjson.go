// Package pyjson is the one writer of JSON as Python's json.dumps writes it (default
// ensure_ascii=True): strings (WriteString), floats (Float), and whole values in key
// order, compact or indented (Compact, Indent; Object, Sorted). Files that ModelOpt and
// transformers write (hf_quant_config.json, config.json, generation_config.json, the
// safetensors index) are reproduced byte for byte with it, and every package that
// writes such JSON calls it rather than formatting its own.
package pyjson

import "bytes"

// WriteString writes s as a quoted JSON string: the short escapes Python uses,
// printable ASCII as is, everything else (DEL and all non-ASCII included) as \uXXXX,
// with surrogate pairs above U+FFFF.
func WriteString(b *bytes.Buffer, s string) {
	const hex = "0123456789abcdef"
	u4 := func(r rune) {
		b.WriteString(`\u`)
		b.WriteByte(hex[r>>12&0xf])
		b.WriteByte(hex[r>>8&0xf])
		b.WriteByte(hex[r>>4&0xf])
		b.WriteByte(hex[r&0xf])
	}
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"':
			b.WriteString(`\"`)
		case r == '\\':
			b.WriteString(`\\`)
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case r == '\t':
			b.WriteString(`\t`)
		case r == '\b':
			b.WriteString(`\b`)
		case r == '\f':
			b.WriteString(`\f`)
		case r >= 0x20 && r < 0x7f:
			b.WriteByte(byte(r))
		case r > 0xffff:
			r -= 0x10000
			u4(0xd800 | (r>>10)&0x3ff)
			u4(0xdc00 | r&0x3ff)
		default:
			u4(r)
		}
	}
	b.WriteByte('"')
}
