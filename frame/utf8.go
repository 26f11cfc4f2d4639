package frame

import "unicode/utf8"

// UTF8 validates UTF-8 incrementally across arbitrary chunk boundaries and
// fails as soon as a byte makes the sequence invalid, not at the end of the
// message (Autobahn 6.4.x checks that). The zero value is ready; it is 4
// bytes, owned by the connection's loop goroutine. It does not allocate.
type UTF8 struct {
	pend [3]byte // bytes of an incomplete sequence carried from the last chunk
	n    uint8
}

// Reset forgets any pending partial sequence.
func (u *UTF8) Reset() { u.n = 0 }

// Complete reports whether the bytes so far end on a rune boundary.
func (u *UTF8) Complete() bool { return u.n == 0 }

// Write validates p as the continuation of everything written before. It
// returns false as soon as the stream can no longer be valid UTF-8.
func (u *UTF8) Write(p []byte) bool {
	if u.n > 0 {
		var seq [4]byte
		n := copy(seq[:], u.pend[:u.n])
		need := seqLen(seq[0]) - n
		take := min(need, len(p))
		n += copy(seq[n:], p[:take])
		complete, ok := validPrefix(seq[:n])
		if !ok {
			return false
		}
		p = p[take:]
		if !complete {
			u.n = uint8(copy(u.pend[:], seq[:n]))
			return true
		}
		u.n = 0
	}
	// Find a trailing sequence that the chunk cuts short.
	start := len(p)
	for i := len(p) - 1; i >= 0 && i >= len(p)-3; i-- {
		if p[i]&0xc0 != 0x80 {
			start = i
			break
		}
	}
	if start < len(p) && seqLen(p[start]) > len(p)-start {
		if _, ok := validPrefix(p[start:]); !ok {
			return false
		}
		u.n = uint8(copy(u.pend[:], p[start:]))
		p = p[:start]
	}
	return utf8.Valid(p)
}

// seqLen is the length of the sequence that lead byte b starts; 1 for ASCII
// and for bytes that cannot start a sequence (utf8.Valid rejects those).
func seqLen(b byte) int {
	switch {
	case b >= 0xc2 && b <= 0xdf:
		return 2
	case b >= 0xe0 && b <= 0xef:
		return 3
	case b >= 0xf0 && b <= 0xf4:
		return 4
	}
	return 1
}

// validPrefix reports whether p (1–4 bytes, p[0] a lead byte) is a valid
// UTF-8 sequence or a valid beginning of one (RFC 3629 table 3-7).
func validPrefix(p []byte) (complete, ok bool) {
	want := seqLen(p[0])
	if want == 1 {
		return true, p[0] < 0x80
	}
	for i := 1; i < len(p); i++ {
		lo, hi := byte(0x80), byte(0xbf)
		if i == 1 {
			switch p[0] {
			case 0xe0:
				lo = 0xa0
			case 0xed:
				hi = 0x9f
			case 0xf0:
				lo = 0x90
			case 0xf4:
				hi = 0x8f
			}
		}
		if p[i] < lo || p[i] > hi {
			return false, false
		}
	}
	return len(p) == want, true
}
