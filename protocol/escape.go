package protocol

import "unicode/utf8"

const hexDigits = "0123456789abcdef"

// appendString appends s as a JSON string: quotes, backslashes and control
// characters are escaped, U+2028 and U+2029 too (they end lines in older
// JavaScript engines), and invalid UTF-8 becomes U+FFFD so the output is
// always valid JSON in a valid text frame. It does not allocate when dst
// has room.
func appendString[S ~string | ~[]byte](dst []byte, s S) []byte {
	dst = append(dst, '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c >= 0x20 && c != '"' && c != '\\' && c < utf8.RuneSelf {
			i++
			continue
		}
		if c < utf8.RuneSelf {
			dst = append(dst, s[start:i]...)
			switch c {
			case '"', '\\':
				dst = append(dst, '\\', c)
			case '\n':
				dst = append(dst, '\\', 'n')
			case '\r':
				dst = append(dst, '\\', 'r')
			case '\t':
				dst = append(dst, '\\', 't')
			default:
				dst = append(dst, '\\', 'u', '0', '0', hexDigits[c>>4], hexDigits[c&0xf])
			}
			i++
			start = i
			continue
		}
		r, size := decodeRune(s[i:])
		if r == utf8.RuneError && size == 1 {
			dst = append(dst, s[start:i]...)
			dst = append(dst, `\ufffd`...)
			i += size
			start = i
			continue
		}
		if r == '\u2028' || r == '\u2029' {
			dst = append(dst, s[start:i]...)
			dst = append(dst, '\\', 'u', '2', '0', '2', hexDigits[r&0xf])
			i += size
			start = i
			continue
		}
		i += size
	}
	dst = append(dst, s[start:]...)
	return append(dst, '"')
}

// decodeRune is utf8.DecodeRune for both strings and byte slices without a
// conversion: it returns (utf8.RuneError, 1) for every invalid sequence
// (overlong, surrogate, out of range, truncated), like the standard library.
func decodeRune[S ~string | ~[]byte](s S) (rune, int) {
	const bad = utf8.RuneError
	c0 := s[0]
	cont := func(i int) bool { return i < len(s) && s[i]&0xc0 == 0x80 }
	switch {
	case c0 < 0xc2:
		return bad, 1
	case c0 < 0xe0:
		if !cont(1) {
			return bad, 1
		}
		return rune(c0&0x1f)<<6 | rune(s[1]&0x3f), 2
	case c0 < 0xf0:
		if !cont(1) || !cont(2) {
			return bad, 1
		}
		r := rune(c0&0x0f)<<12 | rune(s[1]&0x3f)<<6 | rune(s[2]&0x3f)
		if r < 0x800 || r >= 0xd800 && r <= 0xdfff {
			return bad, 1
		}
		return r, 3
	case c0 < 0xf5:
		if !cont(1) || !cont(2) || !cont(3) {
			return bad, 1
		}
		r := rune(c0&0x07)<<18 | rune(s[1]&0x3f)<<12 | rune(s[2]&0x3f)<<6 | rune(s[3]&0x3f)
		if r < 0x10000 || r > utf8.MaxRune {
			return bad, 1
		}
		return r, 4
	}
	return bad, 1
}
