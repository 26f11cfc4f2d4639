package bench

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/wsedge/wsedge/auth"
)

// Where a connection presents its token (TokenConfig.In).
const (
	TokenInHeader      = "header"      // Authorization: Bearer <token>
	TokenInQuery       = "query"       // ?token=<token> on the request path
	TokenInSubprotocol = "subprotocol" // a token.<token> entry in Sec-WebSocket-Protocol
)

// ErrToken is wrapped by the errors of token configuration and minting.
var ErrToken = errors.New("bench: token")

// TokenConfig is how the measured connections authenticate; part of Config
// and as plain. With Key set every connection gets a token of its own,
// minted before any connection is opened (see tokenSet); with Token every
// connection sends that one string.
type TokenConfig struct {
	// Token is sent by every connection as it is (--token).
	Token string
	// Key is a signing key file: an HS256 secret (as `wsedge serve
	// --auth-secret-file` reads it) or a PEM private key for RS256, ES256
	// or EdDSA. Connection g's token has sub "u<g>", unique across the
	// run's processes.
	Key string
	// Channels, Publish and Subs are the claims of minted tokens
	// (patterns as `wsedge token` takes them, {sub} allowed). Each Subs
	// entry makes the server subscribe the connection at open; the bench
	// waits for that many subscribed pushes before the measured phase, so
	// every entry must be in a namespace the server serves.
	Channels []string
	Publish  []string
	Subs     []string
	// TTL is how long minted tokens stay valid, from the time they are
	// minted.
	TTL time.Duration
	// In is where the token goes: TokenInHeader (the default when empty),
	// TokenInQuery or TokenInSubprotocol.
	In string
}

// any reports whether connections carry a token at all.
func (tc *TokenConfig) any() bool { return tc.Token != "" || tc.Key != "" }

// where returns In with its default applied.
func (tc *TokenConfig) where() string {
	if tc.In == "" {
		return TokenInHeader
	}
	return tc.In
}

func (tc *TokenConfig) validate() error {
	switch tc.where() {
	case TokenInHeader, TokenInQuery, TokenInSubprotocol:
	default:
		return fmt.Errorf("token-in: %q is none of header, query, subprotocol", tc.In)
	}
	if tc.Token != "" && tc.Key != "" {
		return errors.New("token, token-key: give one token for all or a key to mint one per connection, not both")
	}
	if tc.Key == "" && (len(tc.Channels) > 0 || len(tc.Publish) > 0 || len(tc.Subs) > 0) {
		return errors.New("token-channels, token-publish, token-subs: claims of minted tokens, they need --token-key")
	}
	if tc.Key != "" && (tc.TTL <= 0 || tc.TTL > 30*24*time.Hour) {
		return fmt.Errorf("token-ttl: %v out of range (0, 720h]", tc.TTL)
	}
	if len(tc.Subs) > 255 {
		return fmt.Errorf("token-subs: %d entries, at most 255", len(tc.Subs))
	}
	if strings.ContainsAny(tc.Token, " \t\r\n,") {
		return errors.New("token: contains white space or a comma")
	}
	return nil
}

// subsPerConn is how many subscribed pushes each connection is owed: the
// Subs of minted tokens, or the subs claim of --token, read without
// verifying it (a token the server refuses never gets that far).
func (tc *TokenConfig) subsPerConn() int {
	if tc.Key != "" {
		return len(tc.Subs)
	}
	return tokenSubs(tc.Token)
}

// tokenSubs returns the number of entries of a JWT's subs claim, 0 if it
// has none or is not a JWT.
func tokenSubs(tok string) int {
	parts := strings.Split(tok, ".")
	if len(parts) != 3 {
		return 0
	}
	raw, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		return 0
	}
	var p struct {
		Subs []json.RawMessage `json:"subs"`
	}
	if json.Unmarshal(raw, &p) != nil {
		return 0
	}
	return len(p.Subs)
}

// signingKey reads a key file the way `wsedge token --key` does: a PEM
// private key, else an HMAC secret file.
func signingKey(path string) (auth.Key, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return auth.Key{}, fmt.Errorf("%w: key: %v", ErrToken, err)
	}
	var k auth.Key
	if strings.Contains(string(data), "-----BEGIN") {
		k, err = auth.ParsePEM(data, "")
	} else {
		var secret []byte
		if secret, err = auth.ReadSecretFile(path); err == nil {
			k, err = auth.HMACKey(secret, "")
		}
	}
	if err != nil {
		return auth.Key{}, fmt.Errorf("%w: key %s: %v", ErrToken, path, err)
	}
	return k, nil
}

// Kinds of connection a worker mints tokens for; each numbers its
// connections from 0 on its own (see tokenSet.pos).
const (
	tokMeasured = iota // idle, echo, broadcast subscribers, connect-mode slots
	tokSlow            // broadcast --slow subscribers
	tokPub             // broadcast publishers
	numTokKinds
)

// tokenSet holds the tokens of one worker's connections back to back in
// one arena: a token costs the client its own bytes plus a 4-byte offset,
// where a string per connection would cost a 16-byte header and a heap
// object rounded up to its size class, in the conn struct every
// connection keeps. They are minted before any connection opens rather
// than at each dial: signing takes 2–5 µs for HS256 but about a
// millisecond for RS256, which on the loops would slow the dials it is
// measuring and take CPU from the server on a shared machine. Built by
// newTokenSet before the loops start, read-only afterwards, so the loops
// share it without a lock.
type tokenSet struct {
	alg   auth.Alg
	arena []byte
	ends  []uint32 // token i is arena[ends[i-1]:ends[i]]
	// A kind's n[k] connections are numbered from lo[k]; the first of
	// them is token base[k].
	lo, base, n [numTokKinds]int
	attack      []byte        // the attackers' one token
	took        time.Duration // minting time
}

// tokenRange is a run of connections of one kind: numbered lo…lo+n-1
// among their kind in this worker, globally id…id+n-1 in the run.
type tokenRange struct{ lo, id, n int }

// newTokenSet mints the tokens of ranges[k] for every kind k, in parallel
// over the cores, plus the attackers' token when attack is set.
func newTokenSet(tc *TokenConfig, ranges [numTokKinds]tokenRange, attack bool) (*tokenSet, error) {
	key, err := signingKey(tc.Key)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	ts := &tokenSet{alg: key.Alg()}
	var ids []int // global id of each token, in order
	for k, r := range ranges {
		ts.lo[k], ts.base[k], ts.n[k] = r.lo, len(ids), r.n
		for i := range r.n {
			ids = append(ids, r.id+i)
		}
	}
	claims := auth.Claims{Channels: tc.Channels, Publish: tc.Publish, Subs: tc.Subs, IssuedAt: start}
	mint := func(sub string) (string, error) {
		c := claims
		c.Sub = sub
		tok, err := auth.Mint(key, c, tc.TTL)
		if err != nil {
			return "", fmt.Errorf("%w: %v", ErrToken, err)
		}
		return tok, nil
	}
	if attack {
		tok, err := mint("attacker")
		if err != nil {
			return nil, err
		}
		ts.attack = []byte(tok)
	}
	// Each goroutine mints a contiguous part into its own arena; the parts
	// are joined in order afterwards.
	parts := min(runtime.GOMAXPROCS(0), max(1, len(ids)/64))
	arenas := make([][]byte, parts)
	ends := make([][]uint32, parts)
	errs := make([]error, parts)
	var wg sync.WaitGroup
	for p := range parts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			lo, hi := shareStart(len(ids), p, parts), shareStart(len(ids), p+1, parts)
			for _, id := range ids[lo:hi] {
				tok, err := mint("u" + strconv.Itoa(id))
				if err != nil {
					errs[p] = err
					return
				}
				arenas[p] = append(arenas[p], tok...)
				ends[p] = append(ends[p], uint32(len(arenas[p])))
			}
		}()
	}
	wg.Wait()
	size := 0
	for p := range parts {
		if errs[p] != nil {
			return nil, errs[p]
		}
		size += len(arenas[p])
	}
	if size > 1<<31 {
		return nil, fmt.Errorf("%w: %d bytes of tokens", ErrToken, size)
	}
	ts.arena = make([]byte, 0, size)
	ts.ends = make([]uint32, 0, len(ids))
	for p := range parts {
		off := uint32(len(ts.arena))
		ts.arena = append(ts.arena, arenas[p]...)
		for _, e := range ends[p] {
			ts.ends = append(ts.ends, off+e)
		}
	}
	ts.took = time.Since(start)
	return ts, nil
}

// pos returns the token of connection i of kind k (numbered as in the
// ranges the set was built from), or -1 if the set has none for it.
func (ts *tokenSet) pos(k, i int) int32 {
	j := i - ts.lo[k]
	if j < 0 || j >= ts.n[k] {
		return -1
	}
	return int32(ts.base[k] + j)
}

// get returns token p. The slice aliases the arena: read it, never keep
// or change it.
func (ts *tokenSet) get(p int32) []byte {
	var from uint32
	if p > 0 {
		from = ts.ends[p-1]
	}
	return ts.arena[from:ts.ends[p]]
}

func (ts *tokenSet) len() int { return len(ts.ends) }
