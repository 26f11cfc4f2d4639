package auth

import (
	"encoding/binary"
	"errors"
	"strings"
	"unicode/utf8"
)

// An Identity across a process handoff (the engine's connection handoff,
// docs/DESIGN.md "Handoff"): a connection moved to a new process keeps
// who it is and what it may do without presenting its token again (the
// token is not kept, and may be within its refresh window). The compiled
// patterns are written back in their claim spelling and compiled again by
// the receiver, so nothing it reads is trusted beyond what a token's
// claims would be.

const identityVersion = 1

// ErrIdentityEncoding is returned by DecodeIdentity for bytes it cannot read.
var ErrIdentityEncoding = errors.New("auth: bad identity encoding")

// AppendBinary appends id to dst in the form DecodeIdentity reads.
func (id Identity) AppendBinary(dst []byte) []byte {
	var flags byte
	switch {
	case id.p == nil:
		flags = 1 // zero: anonymous
	case id.p.all:
		flags = 2 // Unrestricted
	}
	dst = append(dst, identityVersion, flags)
	dst = binary.BigEndian.AppendUint32(dst, id.exp)
	dst = binary.BigEndian.AppendUint32(dst, id.subLen)
	dst = binary.BigEndian.AppendUint32(dst, uint32(len(id.data)))
	dst = append(dst, id.data...)
	if flags != 0 {
		return dst
	}
	// The intern key's layout (claims.internKey): per list a count, then
	// each entry with a length byte, in claim spelling.
	p := id.p
	channels := p.read[:len(p.read)-len(p.subs)]
	for _, l := range [...][]string{channels, p.publish, p.subs} {
		dst = append(dst, byte(len(l)))
		for _, s := range l {
			s = strings.ReplaceAll(s, string(rune(subMark)), subPlaceholder)
			dst = append(dst, byte(len(s)))
			dst = append(dst, s...)
		}
	}
	return dst
}

// DecodeIdentity reads an Identity written by AppendBinary and reports how
// many bytes it read. Its patterns are validated and compiled as a token's
// would be (shared through v's intern table; v may be nil). It refuses
// anything a verified token could not have produced.
func DecodeIdentity(b []byte, v *Verifier) (Identity, int, error) {
	if len(b) < 14 || b[0] != identityVersion || b[1] > 2 {
		return Identity{}, 0, ErrIdentityEncoding
	}
	flags := b[1]
	exp := binary.BigEndian.Uint32(b[2:6])
	subLen := binary.BigEndian.Uint32(b[6:10])
	n := int(binary.BigEndian.Uint32(b[10:14]))
	off := 14
	if n > len(b)-off || subLen > uint32(n) || subLen > MaxSubLen || !utf8.Valid(b[off:off+n]) {
		return Identity{}, 0, ErrIdentityEncoding
	}
	id := Identity{exp: exp, subLen: subLen}
	if n > 0 {
		id.data = string(b[off : off+n])
	}
	off += n
	switch flags {
	case 1:
		return Identity{}, off, nil
	case 2:
		id.p = unrestricted
		return id, off, nil
	}
	keyStart := off
	var lists [3][][]byte
	for i := range lists {
		if off >= len(b) {
			return Identity{}, 0, ErrIdentityEncoding
		}
		count := int(b[off])
		off++
		for range count {
			if off >= len(b) || int(b[off]) > len(b)-off-1 {
				return Identity{}, 0, ErrIdentityEncoding
			}
			l := int(b[off])
			lists[i] = append(lists[i], b[off+1:off+1+l])
			off += 1 + l
		}
	}
	var (
		p   *perms
		err error
	)
	if v != nil {
		p, err = v.intern.get(b[keyStart:off], lists[0], lists[1], lists[2])
	} else {
		p, err = compilePerms(lists[0], lists[1], lists[2])
	}
	if err != nil {
		return Identity{}, 0, ErrIdentityEncoding
	}
	id.p = p
	var ch []byte
	for i := range p.subs {
		if ch = id.AppendSub(ch[:0], i); !id.CanSubscribe(ch) {
			return Identity{}, 0, ErrIdentityEncoding
		}
	}
	return id, off, nil
}
