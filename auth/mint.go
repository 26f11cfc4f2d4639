package auth

import (
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// Claims are what Mint writes into a token. The field meanings are those
// Verify reads (see the package documentation). A plain value owned by the
// caller; Mint only reads it.
type Claims struct {
	Sub      string
	Channels []string
	Publish  []string
	Subs     []string
	Info     json.RawMessage // must be valid JSON if set

	Audience  string
	Issuer    string
	IssuedAt  time.Time // zero: now; exp is IssuedAt + ttl
	NotBefore time.Time // zero: no nbf
}

// ErrMint is wrapped by Mint's errors.
var ErrMint = errors.New("auth: cannot mint")

// payload is the JSON shape of Claims.
type payload struct {
	jwt.RegisteredClaims
	Channels []string        `json:"channels,omitempty"`
	Publish  []string        `json:"publish,omitempty"`
	Subs     []string        `json:"subs,omitempty"`
	Info     json.RawMessage `json:"info,omitempty"`
}

// Mint signs a token for c, valid for ttl from c.IssuedAt, with k (an HMAC
// secret or a private key) in k's algorithm, and k's kid in the header if
// it has one. It is what `wsedge token` and the tests use; production
// tokens come from the application's own issuer.
func Mint(k Key, c Claims, ttl time.Duration) (string, error) {
	switch {
	case !k.signer():
		return "", fmt.Errorf("%w: key for %s cannot sign (a public key?)", ErrMint, k.alg)
	case c.Sub == "":
		return "", fmt.Errorf("%w: empty sub", ErrMint)
	case ttl <= 0:
		return "", fmt.Errorf("%w: ttl %v, want > 0", ErrMint, ttl)
	case len(c.Info) > 0 && !json.Valid(c.Info):
		return "", fmt.Errorf("%w: info is not valid JSON", ErrMint)
	}
	iat := c.IssuedAt
	if iat.IsZero() {
		iat = time.Now()
	}
	p := payload{
		RegisteredClaims: jwt.RegisteredClaims{
			Subject:   c.Sub,
			Issuer:    c.Issuer,
			IssuedAt:  jwt.NewNumericDate(iat),
			ExpiresAt: jwt.NewNumericDate(iat.Add(ttl)),
		},
		Channels: c.Channels,
		Publish:  c.Publish,
		Subs:     c.Subs,
		Info:     c.Info,
	}
	if c.Audience != "" {
		p.Audience = jwt.ClaimStrings{c.Audience}
	}
	if !c.NotBefore.IsZero() {
		p.NotBefore = jwt.NewNumericDate(c.NotBefore)
	}
	t := jwt.NewWithClaims(k.alg.method(), p)
	if k.kid != "" {
		t.Header["kid"] = k.kid
	}
	s, err := t.SignedString(k.mat)
	if err != nil {
		return "", fmt.Errorf("%w: %v", ErrMint, err)
	}
	return s, nil
}
