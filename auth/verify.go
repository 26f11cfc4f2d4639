package auth

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
	"unicode/utf8"

	"github.com/golang-jwt/jwt/v5"
)

// Verifier turns tokens into Identities. Build one with New at startup and
// share it: Verify is safe for concurrent use by every event loop and never
// blocks on the network (a JWKS is reloaded by the Verifier's own service
// goroutine, started by New when Config.JWKS is set and stopped by Close).
type Verifier struct {
	parser  *jwt.Parser
	keyfunc jwt.Keyfunc // v.keyFor, bound once so that Verify does not allocate it
	static  []Key
	keys    atomic.Pointer[keySet]
	jwks    *jwksSource
	lim     limits
	pool    sync.Pool // *claims
	intern  internTable
	log     *slog.Logger
}

// keySet is one immutable snapshot of the keys, replaced whole on reload.
type keySet struct {
	byKid  map[string]keyEntry
	noKid  [numAlgs]any // per algorithm: one key's material, a jwt.VerificationKeySet, or nil
	hasAlg [numAlgs]bool
}

type keyEntry struct {
	alg Alg
	mat any
}

// acceptedAlgs is what jwt's parser lets through to the key lookup; which
// of them a token may use is then decided by its key.
var acceptedAlgs = []string{"HS256", "RS256", "ES256", "EdDSA"}

// New checks cfg, reads its key files, loads its JWKS (an error if the
// first load fails: a node that cannot verify anything should not start)
// and returns a Verifier ready for use.
func New(cfg Config) (*Verifier, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	v := &Verifier{
		lim: limits{
			maxPatterns: cfg.MaxPatterns,
			maxInfo:     cfg.MaxInfo,
			wantAud:     cfg.Audience != "",
			wantIss:     cfg.Issuer != "",
		},
		log: cfg.Logger,
	}
	if v.log == nil {
		v.log = slog.New(slog.DiscardHandler)
	}
	if len(cfg.HMACSecret) > 0 {
		k, err := HMACKey(cfg.HMACSecret, "")
		if err != nil {
			return nil, fmt.Errorf("%w: HMACSecret: %v", ErrConfig, err)
		}
		v.static = append(v.static, k)
	}
	for _, f := range cfg.PEMFiles {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("%w: PEMFiles: %v", ErrConfig, err)
		}
		k, err := ParsePEM(data, "")
		if err != nil {
			return nil, fmt.Errorf("%w: PEMFiles: %s: %v", ErrConfig, f, err)
		}
		v.static = append(v.static, k.Public())
	}
	for _, k := range cfg.Keys {
		v.static = append(v.static, k.Public())
	}
	opts := []jwt.ParserOption{
		jwt.WithValidMethods(acceptedAlgs),
		jwt.WithExpirationRequired(),
		jwt.WithLeeway(cfg.Leeway),
		jwt.WithTimeFunc(now),
		jwt.WithStrictDecoding(),
	}
	if cfg.Audience != "" {
		opts = append(opts, jwt.WithAudience(cfg.Audience))
	}
	if cfg.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(cfg.Issuer))
	}
	v.parser = jwt.NewParser(opts...)
	v.keyfunc = v.keyFor
	v.pool.New = func() any { return &claims{lim: v.lim} }
	v.install(nil)
	if cfg.JWKS == "" {
		return v, nil
	}
	client := cfg.HTTPClient
	if client == nil {
		client = &http.Client{}
	}
	ctx, cancel := context.WithCancel(context.Background())
	v.jwks = &jwksSource{
		loc:         cfg.JWKS,
		client:      client,
		timeout:     cfg.JWKSTimeout,
		refresh:     cfg.JWKSRefresh,
		minInterval: cfg.JWKSMinInterval,
		now:         now,
		log:         v.log,
		install:     v.install,
		kickc:       make(chan struct{}, 1),
		ctx:         ctx,
		cancel:      cancel,
		done:        make(chan struct{}),
	}
	if err := v.jwks.load(ctx); err != nil {
		cancel()
		return nil, fmt.Errorf("%w: %v", ErrConfig, err)
	}
	go v.jwks.run()
	return v, nil
}

// install publishes the static keys plus jwks as the current key set. A
// JWKS key whose kid a configured key already has is ignored: the operator's
// own keys are not overridden from the network.
func (v *Verifier) install(jwks []Key) {
	ks := &keySet{byKid: make(map[string]keyEntry, len(v.static)+len(jwks))}
	var noKid [numAlgs][]jwt.VerificationKey
	for i, k := range append(v.static[:len(v.static):len(v.static)], jwks...) {
		ks.hasAlg[k.alg] = true
		mat := k.verifyMaterial()
		if k.kid == "" {
			noKid[k.alg] = append(noKid[k.alg], mat)
			continue
		}
		if _, dup := ks.byKid[k.kid]; dup {
			if i >= len(v.static) {
				v.log.Warn("JWKS key ignored: a configured key has its kid", "kid", k.kid)
			}
			continue
		}
		ks.byKid[k.kid] = keyEntry{alg: k.alg, mat: mat}
	}
	for a, ms := range noKid {
		switch len(ms) {
		case 0:
		case 1:
			ks.noKid[a] = ms[0]
		default:
			ks.noKid[a] = jwt.VerificationKeySet{Keys: ms}
		}
	}
	v.keys.Store(ks)
}

// keyFor is the jwt.Keyfunc. The parser calls it only for an alg among
// acceptedAlgs. A token with a kid gets the key with that kid, which must
// be of the token's alg; a token without one, or with a kid no key has,
// gets the keys without kid of its alg (all of them: a token without kid
// costs one verification per such key). It returns a Reason as its error,
// which Verify finds again through the library's wrapping.
func (v *Verifier) keyFor(t *jwt.Token) (any, error) {
	if _, ok := t.Header["crit"]; ok {
		// RFC 7515 4.1.11: extensions we do not implement must be refused.
		return nil, ReasonMalformed
	}
	alg := ParseAlg(t.Method.Alg())
	ks := v.keys.Load()
	kid, hasKid := "", false
	if raw, ok := t.Header["kid"]; ok {
		if kid, hasKid = raw.(string); !hasKid {
			return nil, ReasonMalformed
		}
		if e, ok := ks.byKid[kid]; ok {
			if e.alg != alg {
				return nil, ReasonAlgMismatch
			}
			return e.mat, nil
		}
	}
	if m := ks.noKid[alg]; m != nil {
		return m, nil
	}
	if hasKid {
		if v.jwks != nil {
			v.jwks.kick()
		}
		return nil, ReasonUnknownKid
	}
	if ks.hasAlg[alg] {
		return nil, ReasonUnknownKid // keys of this alg exist, all with a kid
	}
	return nil, ReasonAlgMismatch
}

// Refusals that need no detail, allocated once.
var (
	errNoToken = &Error{Reason: ReasonMissing}
	errTooLong = &Error{Reason: ReasonMalformed, Err: fmt.Errorf("token over %d bytes", MaxTokenLen)}
)

// Verify checks a token (the compact JWS serialization, as extracted from
// the request) and returns the identity it proves. On failure the error is
// an *Error whose Reason says why (ReasonOf(err)); the Identity is then zero.
//
// It may be called from any goroutine and never blocks. Beyond what
// golang-jwt allocates to parse a token (its header map, the decoded
// segments, the Token), a successful Verify allocates the string holding the
// user id and info, and a compiled permission set only the first time a
// combination of channels, publish and subs claims is seen.
func (v *Verifier) Verify(token []byte) (Identity, error) {
	if len(token) == 0 {
		return Identity{}, errNoToken
	}
	if len(token) > MaxTokenLen {
		return Identity{}, errTooLong
	}
	c := v.pool.Get().(*claims)
	c.reset()
	tok, err := v.parser.ParseWithClaims(string(token), c, v.keyfunc)
	var id Identity
	if err != nil {
		err = &Error{Reason: classify(tok, err, c), Err: err}
	} else {
		id, err = v.identity(c)
	}
	v.pool.Put(c)
	return id, err
}

// classify names the reason of a failed parse. Where the library reports
// several claim failures at once, the first of bad_claims, missing_exp,
// expired, not_yet_valid, audience, issuer wins.
func classify(tok *jwt.Token, err error, c *claims) Reason {
	if r := ReasonOf(err); r != 0 {
		return r
	}
	if tok == nil || errors.Is(err, jwt.ErrTokenMalformed) {
		return ReasonMalformed
	}
	alg, ok := tok.Header["alg"].(string)
	switch {
	case !ok:
		return ReasonMalformed
	case strings.EqualFold(alg, "none"):
		return ReasonAlgNone
	case ParseAlg(alg) == 0:
		return ReasonAlgMismatch
	case errors.Is(err, jwt.ErrTokenSignatureInvalid):
		return ReasonBadSignature
	case !c.decoded:
		return ReasonMalformed
	case c.bad != nil:
		return ReasonBadClaims
	case !c.has(cExp):
		return ReasonMissingExp
	case errors.Is(err, jwt.ErrTokenExpired):
		return ReasonExpired
	case errors.Is(err, jwt.ErrTokenNotValidYet):
		return ReasonNotYetValid
	case errors.Is(err, jwt.ErrTokenInvalidAudience):
		return ReasonAudience
	case errors.Is(err, jwt.ErrTokenInvalidIssuer):
		return ReasonIssuer
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing) && !c.has(cAud) && c.lim.wantAud:
		return ReasonAudience
	case errors.Is(err, jwt.ErrTokenRequiredClaimMissing) && !c.has(cIss) && c.lim.wantIss:
		return ReasonIssuer
	}
	return ReasonBadClaims
}

// identity builds the Identity of a token whose signature and registered
// claims have verified.
func (v *Verifier) identity(c *claims) (Identity, error) {
	switch {
	case !c.decoded:
		return Identity{}, &Error{Reason: ReasonMalformed, Err: errNotObject}
	case c.bad != nil:
		return Identity{}, &Error{Reason: ReasonBadClaims, Err: c.bad}
	case len(c.sub) == 0:
		return Identity{}, &Error{Reason: ReasonMissingSub}
	case len(c.sub) > MaxSubLen:
		return Identity{}, &Error{Reason: ReasonBadClaims, Err: fmt.Errorf("sub: %d bytes, at most %d", len(c.sub), MaxSubLen)}
	case !utf8.Valid(c.sub) || hasControl(c.sub):
		return Identity{}, &Error{Reason: ReasonBadClaims, Err: errors.New("sub: invalid UTF-8 or control characters")}
	case !utf8.Valid(c.info):
		// The engine embeds info verbatim in text frames.
		return Identity{}, &Error{Reason: ReasonBadClaims, Err: errors.New("info: invalid UTF-8")}
	}
	p, err := v.intern.get(c.internKey(), c.channels, c.publish, c.subs)
	if err != nil {
		return Identity{}, &Error{Reason: ReasonBadClaims, Err: err}
	}
	c.buf = append(append(c.buf[:0], c.sub...), c.info...)
	id := Identity{
		data:   string(c.buf),
		p:      p,
		exp:    expUnix(c.exp.Time),
		subLen: uint32(len(c.sub)),
	}
	for i := range p.subs {
		c.key = id.AppendSub(c.key[:0], i)
		if !id.CanSubscribe(c.key) {
			return Identity{}, &Error{Reason: ReasonBadClaims,
				Err: fmt.Errorf("subs: %q is not a channel this user may read", c.key)}
		}
	}
	return id, nil
}

func hasControl(s []byte) bool {
	for _, c := range s {
		if c < 0x20 || c == 0x7f {
			return true
		}
	}
	return false
}

// Refresh reloads the JWKS now, whatever the rate limit, and reports the
// outcome (the keys in use stay on failure). For tests and a reload signal;
// without a JWKS it does nothing.
func (v *Verifier) Refresh(ctx context.Context) error {
	if v.jwks == nil {
		return nil
	}
	return v.jwks.load(ctx)
}

// Close stops the JWKS service goroutine and waits for it. Verify keeps
// working with the last keys. Safe to call more than once.
func (v *Verifier) Close() {
	if v.jwks != nil {
		v.jwks.close()
	}
}

// Stats are counters for the metrics endpoint: a snapshot, owned by the caller.
type Stats struct {
	JWKSLoads    uint64    // load attempts, periodic, on unknown kid, and Refresh
	JWKSFailures uint64    // attempts that kept the previous keys
	JWKSLastOK   time.Time // zero if never (or no JWKS)
	JWKSKeys     int       // usable keys in the last good document
	Interned     int       // compiled permission sets shared now
}

// Stats returns the current counters. Safe from any goroutine.
func (v *Verifier) Stats() Stats {
	s := Stats{Interned: v.intern.len()}
	if j := v.jwks; j != nil {
		s.JWKSLoads = j.fetches.Load()
		s.JWKSFailures = j.failures.Load()
		if t := j.lastOK.Load(); t != 0 {
			s.JWKSLastOK = time.Unix(t, 0)
		}
		s.JWKSKeys = int(j.keysInSet.Load())
	}
	return s
}
