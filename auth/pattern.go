package auth

import (
	"bytes"
	"errors"
	"fmt"
	"strings"

	"github.com/wsedge/wsedge/protocol"
)

// subMark stands for {sub} in a compiled pattern. Validated patterns are
// printable ASCII, so the byte cannot come from the claim itself.
const subMark = 0

// subPlaceholder is the spelling of the user id in a pattern.
const subPlaceholder = "{sub}"

var personalPrefix = protocol.PersonalNamespace + ":"

var errPattern = errors.New("bad pattern")

// compilePattern validates a channel pattern from a claim and encodes it
// for match: {sub} becomes subMark, a trailing '*' stays as the wildcard.
// wildcard says whether '*' is allowed (channels, publish) or not (subs,
// which name channels to subscribe to and must be exact).
func compilePattern(p []byte, wildcard bool) (string, error) {
	if len(p) > protocol.MaxChannelLen {
		return "", fmt.Errorf("%w: over %d bytes", errPattern, protocol.MaxChannelLen)
	}
	colon := bytes.IndexByte(p, ':')
	if colon < 1 || colon > protocol.MaxNamespaceLen || colon == len(p)-1 {
		return "", fmt.Errorf("%w %q: want namespace:name", errPattern, p)
	}
	for _, c := range p[:colon] {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return "", fmt.Errorf("%w %q: namespace of [a-z0-9_-]", errPattern, p)
		}
	}
	name := p[colon+1:]
	for i, c := range name {
		if c < 0x21 || c > 0x7e {
			return "", fmt.Errorf("%w %q: name of printable ASCII", errPattern, p)
		}
		if c == '*' && (!wildcard || i != len(name)-1) {
			return "", fmt.Errorf("%w %q: '*' only as the last byte of a channels or publish pattern", errPattern, p)
		}
	}
	return strings.ReplaceAll(string(p), subPlaceholder, string(rune(subMark))), nil
}

// match reports whether channel ch matches the compiled pattern p for the
// user sub. The user id is compared byte for byte, so a '*' or ':' in it is
// literal; only a '*' of the pattern itself (its last byte) is a wildcard,
// and it matches any suffix, including one with colons: the namespace is
// fixed by the pattern's own "namespace:" prefix, which contains no colon
// before the one that ends it. It does not allocate.
func match(p, sub string, ch []byte) bool {
	i := 0
	for j := 0; j < len(p); j++ {
		switch c := p[j]; c {
		case subMark:
			if len(ch)-i < len(sub) || string(ch[i:i+len(sub)]) != sub {
				return false
			}
			i += len(sub)
		case '*':
			return true // compilePattern admits '*' only as the last byte
		default:
			if i >= len(ch) || ch[i] != c {
				return false
			}
			i++
		}
	}
	return i == len(ch)
}

func matchAny(ps []string, sub string, ch []byte) bool {
	for _, p := range ps {
		if match(p, sub, ch) {
			return true
		}
	}
	return false
}

// expand appends the channel a compiled exact pattern names for sub.
func expand(dst []byte, p, sub string) []byte {
	for {
		i := strings.IndexByte(p, subMark)
		if i < 0 {
			return append(dst, p...)
		}
		dst = append(dst, p[:i]...)
		dst = append(dst, sub...)
		p = p[i+1:]
	}
}

// perms is a compiled set of permissions, shared by every identity whose
// token carried the same channels, publish and subs claims. It never holds
// the user id: {sub} is resolved at match time, which is what makes sharing
// possible. Immutable once built.
type perms struct {
	read    []string // channels patterns, then subs entries (a subs entry grants its read)
	publish []string
	subs    []string
	all     bool // Unrestricted
}

// size is an estimate of the heap bytes p holds, for bounding the intern table.
func (p *perms) size() int {
	n := 64 + 16*(len(p.read)+len(p.publish)+len(p.subs))
	for _, s := range p.read {
		n += len(s)
	}
	for _, s := range p.publish {
		n += len(s)
	}
	return n // subs strings are shared with read
}

// compilePerms builds a perms from the raw claim lists.
func compilePerms(channels, publish, subs [][]byte) (*perms, error) {
	p := &perms{
		read:    make([]string, 0, len(channels)+len(subs)),
		publish: make([]string, 0, len(publish)),
		subs:    make([]string, 0, len(subs)),
	}
	for _, c := range channels {
		s, err := compilePattern(c, true)
		if err != nil {
			return nil, fmt.Errorf("channels: %w", err)
		}
		p.read = append(p.read, s)
	}
	for _, c := range publish {
		s, err := compilePattern(c, true)
		if err != nil {
			return nil, fmt.Errorf("publish: %w", err)
		}
		p.publish = append(p.publish, s)
	}
	for _, c := range subs {
		s, err := compilePattern(c, false)
		if err != nil {
			return nil, fmt.Errorf("subs: %w", err)
		}
		p.subs = append(p.subs, s)
		p.read = append(p.read, s)
	}
	return p, nil
}
