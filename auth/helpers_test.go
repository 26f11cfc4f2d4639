package auth

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/hmac"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"sync"
	"testing"
	"time"
)

// t0 is the clock of every test Verifier, so expiry tests do not depend on
// the wall clock.
var t0 = time.Unix(1_800_000_000, 0)

func fixedNow() time.Time { return t0 }

var testSecret = []byte("0123456789abcdef0123456789abcdef")

// signingKeys are one private key per algorithm, made once per test binary
// (RSA key generation is slow).
var signingKeys = sync.OnceValue(func() map[Alg]Key {
	mustKey := func(k Key, err error) Key {
		if err != nil {
			panic(err)
		}
		return k
	}
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		panic(err)
	}
	ek, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		panic(err)
	}
	_, dk, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		panic(err)
	}
	return map[Alg]Key{
		HS256: mustKey(HMACKey(testSecret, "hs1")),
		RS256: mustKey(NewKey(rk, "rs1")),
		ES256: mustKey(NewKey(ek, "es1")),
		EdDSA: mustKey(NewKey(dk, "ed1")),
	}
})

var allAlgs = []Alg{HS256, RS256, ES256, EdDSA}

// testConfig verifies with the public halves of signingKeys (by kid) and
// with testSecret (without kid) at t0.
func testConfig() Config {
	cfg := DefaultConfig()
	cfg.HMACSecret = testSecret
	for _, a := range allAlgs {
		cfg.Keys = append(cfg.Keys, signingKeys()[a].Public())
	}
	cfg.Now = fixedNow
	return cfg
}

func newVerifier(t testing.TB, cfg Config) *Verifier {
	t.Helper()
	v, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(v.Close)
	return v
}

// baseClaims is a typical token's content.
func baseClaims() Claims {
	return Claims{
		Sub:      "alice",
		Channels: []string{"chat:*", "user:{sub}"},
		Publish:  []string{"chat:*"},
		Subs:     []string{"user:{sub}"},
		Info:     []byte(`{"name":"Alice"}`),
		IssuedAt: t0.Add(-time.Minute),
	}
}

func mint(t testing.TB, k Key, c Claims, ttl time.Duration) string {
	t.Helper()
	s, err := Mint(k, c, ttl)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// hs256 builds a token by hand from a header and a payload, signed with
// testSecret: for tokens Mint refuses to make.
func hs256(header, payload string) string {
	enc := base64.RawURLEncoding
	s := enc.EncodeToString([]byte(header)) + "." + enc.EncodeToString([]byte(payload))
	m := hmac.New(sha256.New, testSecret)
	m.Write([]byte(s))
	return s + "." + enc.EncodeToString(m.Sum(nil))
}

func enc64(s string) string { return base64.RawURLEncoding.EncodeToString([]byte(s)) }

// randReader is crypto/rand for APIs that take an io.Reader.
type randReader struct{}

func (randReader) Read(p []byte) (int, error) { return rand.Read(p) }
