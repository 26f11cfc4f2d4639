package auth

import (
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"
)

// Config says which keys verify tokens and what a token must carry. It is a
// plain value: DefaultConfig fills it, the caller sets the keys, Validate
// checks it (New does too). Owned by whoever builds the Verifier; New copies
// what it keeps.
type Config struct {
	// HMACSecret verifies HS256 tokens without a kid; at least 32 bytes.
	HMACSecret []byte
	// PEMFiles are public (or private) key files, read once by New: RSA
	// (RS256), EC P-256 (ES256) or Ed25519 (EdDSA). Their keys have no kid.
	PEMFiles []string
	// JWKS is a JWKS document, a file path or an http(s) URL, loaded by New
	// and reloaded every JWKSRefresh and when a token names an unknown kid
	// (at most once per JWKSMinInterval).
	JWKS            string
	JWKSRefresh     time.Duration
	JWKSMinInterval time.Duration
	JWKSTimeout     time.Duration // one fetch, URL only
	// HTTPClient fetches a JWKS URL; nil uses http.DefaultTransport.
	HTTPClient *http.Client
	// Keys are keys given in code (tests, embedders), with or without kid.
	Keys []Key

	// Audience, if set, must be in the token's aud; Issuer, if set, must be
	// its iss. Leeway widens exp and nbf by this much for clock skew.
	Audience string
	Issuer   string
	Leeway   time.Duration

	// MaxPatterns caps each of the channels, publish, subs and aud lists;
	// MaxInfo caps the info claim (compact JSON bytes). Over a cap the
	// token is refused (bad_claims), never cut.
	MaxPatterns int
	MaxInfo     int

	// Now is the clock (tests); nil means time.Now.
	Now func() time.Time
	// Logger gets JWKS reload failures (warn) and loads (debug); nil discards.
	Logger *slog.Logger
}

// Limits of the configurable caps. 255 keeps every list count in one byte
// of the intern key.
const (
	maxMaxPatterns = 255
	maxMaxInfo     = 64 << 10
	// MaxTokenLen is the longest token Verify reads; the engine's 8 KiB
	// header cap is below it anyway.
	MaxTokenLen = 8 << 10
)

// DefaultConfig returns the configuration without keys: reload a JWKS every
// 5 minutes and on an unknown kid at most every 30 s, fetch within 10 s, no
// leeway, 64 patterns per list, 1 KiB of info.
func DefaultConfig() Config {
	return Config{
		JWKSRefresh:     5 * time.Minute,
		JWKSMinInterval: 30 * time.Second,
		JWKSTimeout:     10 * time.Second,
		MaxPatterns:     64,
		MaxInfo:         1 << 10,
	}
}

// ErrConfig is wrapped by every validation error.
var ErrConfig = errors.New("auth: bad configuration")

// Validate checks c and names the first bad field. It does not read files.
func (c *Config) Validate() error {
	bad := func(field, format string, args ...any) error {
		return fmt.Errorf("%w: %s: %s", ErrConfig, field, fmt.Sprintf(format, args...))
	}
	if len(c.HMACSecret) == 0 && len(c.PEMFiles) == 0 && c.JWKS == "" && len(c.Keys) == 0 {
		return bad("keys", "none configured (HMACSecret, PEMFiles, JWKS or Keys)")
	}
	if len(c.HMACSecret) > 0 && len(c.HMACSecret) < minHMACBytes {
		return bad("HMACSecret", "%d bytes, want at least %d", len(c.HMACSecret), minHMACBytes)
	}
	for i, k := range c.Keys {
		if k.IsZero() {
			return bad(fmt.Sprintf("Keys[%d]", i), "zero Key")
		}
	}
	if c.JWKS != "" {
		if strings.Contains(c.JWKS, "://") && !strings.HasPrefix(c.JWKS, "http://") && !strings.HasPrefix(c.JWKS, "https://") {
			return bad("JWKS", "%q: want a file path or an http(s) URL", c.JWKS)
		}
		if c.JWKSRefresh <= 0 {
			return bad("JWKSRefresh", "%v, want > 0", c.JWKSRefresh)
		}
		if c.JWKSMinInterval <= 0 || c.JWKSMinInterval > c.JWKSRefresh {
			return bad("JWKSMinInterval", "%v, want > 0 and at most JWKSRefresh", c.JWKSMinInterval)
		}
		if c.JWKSTimeout <= 0 {
			return bad("JWKSTimeout", "%v, want > 0", c.JWKSTimeout)
		}
	}
	if c.Leeway < 0 || c.Leeway > time.Hour {
		return bad("Leeway", "%v, want 0 to 1h", c.Leeway)
	}
	if c.MaxPatterns < 1 || c.MaxPatterns > maxMaxPatterns {
		return bad("MaxPatterns", "%d, want 1 to %d", c.MaxPatterns, maxMaxPatterns)
	}
	if c.MaxInfo < 0 || c.MaxInfo > maxMaxInfo {
		return bad("MaxInfo", "%d, want 0 to %d", c.MaxInfo, maxMaxInfo)
	}
	return nil
}
