package auth

import (
	"math"
	"sync"
	"time"

	"github.com/wsedge/wsedge/protocol"
)

// Identity is who a connection is and what it may do: the user id (sub),
// the token's expiry, the optional presence info, and a compiled permission
// set shared with every identity whose token had the same channels, publish
// and subs claims.
//
// It is a 32-byte immutable value: copy it freely, keep it in the
// connection. Beside the shared set it references one string of len(sub) +
// len(info) bytes. The zero Identity is anonymous and may do nothing. Its
// methods may be called from any goroutine and do not allocate, except
// AppendSub when dst is too small.
type Identity struct {
	data   string // the user id, then the info JSON
	p      *perms
	exp    uint32 // Unix seconds; 0 = never
	subLen uint32
}

var unrestricted = &perms{all: true}

// Unrestricted returns the identity of a server running without
// authentication (--insecure-no-auth): user id "", no expiry, and every
// channel allowed for every operation, personal channels included. Never use
// it for a connection that presented a token.
func Unrestricted() Identity { return Identity{p: unrestricted} }

// IsZero says whether id is the zero (anonymous, powerless) Identity.
func (id Identity) IsZero() bool { return id.p == nil }

// Sub is the user id. It does not allocate.
func (id Identity) Sub() string { return id.data[:id.subLen] }

// Info is the info claim as compact JSON, or "" if the token had none. The
// engine embeds it verbatim in presence replies and join/leave pushes.
func (id Identity) Info() string { return id.data[id.subLen:] }

// ExpiresUnix is the token's exp in Unix seconds, rounded down; 0 means the
// identity never expires (Unrestricted only: tokens without exp are refused).
func (id Identity) ExpiresUnix() int64 { return int64(id.exp) }

// Expires is the token's exp as a time; the zero time means never.
func (id Identity) Expires() time.Time {
	if id.exp == 0 {
		return time.Time{}
	}
	return time.Unix(int64(id.exp), 0)
}

// CanSubscribe says whether id may read channel ch: subscribe to it, and
// read its history and presence. True when ch is a valid channel name
// (protocol.ParseChannel), a channels pattern or a subs entry matches it,
// and, for a personal channel user:<x>, x is id's own user id: nobody reads
// another user's personal channel, whatever the patterns say. It does not
// allocate.
func (id Identity) CanSubscribe(ch []byte) bool {
	if id.p == nil {
		return false
	}
	if id.p.all {
		return true
	}
	if _, _, err := protocol.ParseChannel(ch); err != nil {
		return false
	}
	sub := id.Sub()
	if len(ch) >= len(personalPrefix) && string(ch[:len(personalPrefix)]) == personalPrefix &&
		string(ch[len(personalPrefix):]) != sub {
		return false
	}
	return matchAny(id.p.read, sub, ch)
}

// CanPublish says whether id may publish to ch: ch is a valid channel name
// and a publish pattern matches it. Namespace options (client publish off)
// are the engine's to apply on top. It does not allocate.
func (id Identity) CanPublish(ch []byte) bool {
	if id.p == nil {
		return false
	}
	if id.p.all {
		return true
	}
	if _, _, err := protocol.ParseChannel(ch); err != nil {
		return false
	}
	return matchAny(id.p.publish, id.Sub(), ch)
}

// NumSubs is the number of channels the server subscribes the connection to
// when it opens (the subs claim).
func (id Identity) NumSubs() int {
	if id.p == nil {
		return 0
	}
	return len(id.p.subs)
}

// AppendSub appends the i-th subs channel, {sub} replaced by the user id,
// to dst. Verify has checked that each one is a valid channel name that
// CanSubscribe allows. It allocates only when dst lacks room.
func (id Identity) AppendSub(dst []byte, i int) []byte {
	return expand(dst, id.p.subs[i], id.Sub())
}

// expUnix clamps a token's exp into an Identity's 32 bits: a date past 2106
// is kept as the last representable second.
func expUnix(t time.Time) uint32 {
	s := t.Unix()
	switch {
	case s <= 0:
		return 1 // already expired: Verify refuses it, but never map it to "never"
	case s > math.MaxUint32:
		return math.MaxUint32
	}
	return uint32(s)
}

// Bounds of the intern table: compiled sets are shared while the table has
// room; when it is full it starts again empty (identities keep their sets,
// the garbage collector frees those no one uses). Only validly signed
// tokens reach it, so its churn is the issuer's, not a client's.
const (
	maxInterned      = 4096
	maxInternedBytes = 4 << 20
)

// internTable shares compiled permission sets between identities, keyed by
// the canonical encoding of the three raw claim lists. Safe for concurrent use.
type internTable struct {
	mu    sync.RWMutex
	m     map[string]*perms
	bytes int
}

func (t *internTable) get(key []byte, channels, publish, subs [][]byte) (*perms, error) {
	t.mu.RLock()
	p := t.m[string(key)]
	t.mu.RUnlock()
	if p != nil {
		return p, nil
	}
	p, err := compilePerms(channels, publish, subs)
	if err != nil {
		return nil, err
	}
	n := p.size() + len(key)
	t.mu.Lock()
	if q := t.m[string(key)]; q != nil {
		p = q
	} else {
		if t.m == nil || len(t.m) >= maxInterned || t.bytes+n > maxInternedBytes {
			t.m = make(map[string]*perms)
			t.bytes = 0
		}
		t.m[string(key)] = p
		t.bytes += n
	}
	t.mu.Unlock()
	return p, nil
}

func (t *internTable) len() int {
	t.mu.RLock()
	defer t.mu.RUnlock()
	return len(t.m)
}
