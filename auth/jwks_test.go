package auth

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"math/big"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// checkFor polls fn until it returns nil or the timeout passes.
func checkFor(t testing.TB, timeout time.Duration, fn func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := fn()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %v", timeout, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// clock is a test clock the JWKS rate limit reads.
type clock struct{ ns atomic.Int64 }

func newClock() *clock {
	c := &clock{}
	c.ns.Store(t0.UnixNano())
	return c
}

func (c *clock) Now() time.Time      { return time.Unix(0, c.ns.Load()) }
func (c *clock) Add(d time.Duration) { c.ns.Add(int64(d)) }
func b64u(b []byte) string           { return enc64(string(b)) }
func mustJSON(v any) []byte          { b, _ := json.Marshal(v); return b }
func jwksOf(entries ...jwk) []byte   { return mustJSON(map[string][]jwk{"keys": entries}) }
func newEC(t testing.TB) *ecdsa.PrivateKey {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// jwkOf is the JWKS entry of a key's public half.
func jwkOf(t testing.TB, k Key) jwk {
	t.Helper()
	j := jwk{Kid: k.kid, Alg: k.alg.String()}
	switch m := k.Public().mat.(type) {
	case []byte:
		j.Kty, j.K = "oct", b64u(m)
	case *rsa.PublicKey:
		j.Kty, j.N, j.E = "RSA", b64u(m.N.Bytes()), b64u(big.NewInt(int64(m.E)).Bytes())
	case *ecdsa.PublicKey:
		p, err := m.Bytes()
		if err != nil {
			t.Fatal(err)
		}
		j.Kty, j.Crv, j.X, j.Y = "EC", "P-256", b64u(p[1:33]), b64u(p[33:])
	case ed25519.PublicKey:
		j.Kty, j.Crv, j.X = "OKP", "Ed25519", b64u(m)
	default:
		t.Fatalf("no JWK for %T", m)
	}
	return j
}

// jwksServer serves a JWKS document that the test changes, on 127.0.0.1.
type jwksServer struct {
	*httptest.Server
	mu     sync.Mutex
	doc    []byte
	status int
	hits   atomic.Int64
}

func newJWKSServer(t testing.TB, doc []byte) *jwksServer {
	s := &jwksServer{doc: doc, status: http.StatusOK}
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.hits.Add(1)
		s.mu.Lock()
		doc, status := s.doc, s.status
		s.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		w.Write(doc)
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *jwksServer) set(status int, doc []byte) {
	s.mu.Lock()
	s.doc, s.status = doc, status
	s.mu.Unlock()
}

func TestParseJWKS(t *testing.T) {
	keys := signingKeys()
	good := []jwk{jwkOf(t, keys[HS256]), jwkOf(t, keys[RS256]), jwkOf(t, keys[ES256]), jwkOf(t, keys[EdDSA])}
	ks, skipped, err := ParseJWKS(jwksOf(good...))
	if err != nil || skipped != 0 || len(ks) != 4 {
		t.Fatalf("%d keys, %d skipped, %v", len(ks), skipped, err)
	}
	for i, a := range allAlgs {
		if ks[i].Alg() != a || ks[i].Kid() != keys[a].kid {
			t.Fatalf("key %d: %v %q", i, ks[i].Alg(), ks[i].Kid())
		}
	}
	noAlg := jwkOf(t, keys[RS256])
	noAlg.Alg = ""
	enc := jwkOf(t, keys[RS256])
	enc.Use, enc.Kid = "enc", "enc"
	rs512 := jwkOf(t, keys[RS256])
	rs512.Alg, rs512.Kid = "RS512", "rs512"
	p384 := jwk{Kty: "EC", Crv: "P-384", Kid: "p384", X: "AA", Y: "AA"}
	ks, skipped, err = ParseJWKS(jwksOf(noAlg, enc, rs512, p384, jwk{Kty: "X"}))
	if err != nil || skipped != 4 || len(ks) != 1 || ks[0].Alg() != RS256 {
		t.Fatalf("%d keys, %d skipped, %v", len(ks), skipped, err)
	}

	badN := jwkOf(t, keys[RS256])
	badN.N = "!"
	smallRSA, _ := rsa.GenerateKey(rand.Reader, 1024)
	weak := jwk{Kty: "RSA", Kid: "weak", N: b64u(smallRSA.N.Bytes()), E: "AQAB"}
	offCurve := jwkOf(t, keys[ES256])
	offCurve.Y = offCurve.X
	shortHMAC := jwk{Kty: "oct", Kid: "short", K: b64u([]byte("short"))}
	dup := jwkOf(t, keys[ES256])
	dup.Kid = keys[RS256].kid
	for name, doc := range map[string][]byte{
		"not JSON":        []byte(`{"keys":`),
		"no keys":         jwksOf(),
		"only skipped":    jwksOf(enc),
		"bad n":           jwksOf(badN),
		"weak RSA":        jwksOf(weak),
		"point off curve": jwksOf(offCurve),
		"short secret":    jwksOf(shortHMAC),
		"duplicate kid":   jwksOf(good[1], dup),
		"too many keys":   jwksOf(make([]jwk, maxJWKSKeys+1)...),
	} {
		if _, _, err := ParseJWKS(doc); !errors.Is(err, ErrJWKS) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func TestJWKSRotation(t *testing.T) {
	ka, _ := NewKey(newEC(t), "a")
	kb, _ := NewKey(newEC(t), "b")
	srv := newJWKSServer(t, jwksOf(jwkOf(t, ka)))
	clk := newClock()
	cfg := DefaultConfig()
	cfg.JWKS = srv.URL + "/jwks.json"
	cfg.JWKSRefresh = time.Hour // only unknown kids and Refresh reload here
	cfg.JWKSMinInterval = 10 * time.Second
	cfg.Now = clk.Now
	v := newVerifier(t, cfg)
	tokA := []byte(mint(t, ka, baseClaims(), 2*time.Hour))
	tokB := []byte(mint(t, kb, baseClaims(), 2*time.Hour))
	verify := func(tok []byte) Reason { _, err := v.Verify(tok); return ReasonOf(err) }

	if srv.hits.Load() != 1 || verify(tokA) != 0 {
		t.Fatalf("first load: %d fetches, token a %v", srv.hits.Load(), verify(tokA).Label())
	}
	// A new key the node does not have yet: refused, and within the
	// minimum interval a flood of unknown kids fetches nothing.
	srv.set(http.StatusOK, jwksOf(jwkOf(t, ka), jwkOf(t, kb)))
	for range 100 {
		if r := verify(tokB); r != ReasonUnknownKid {
			t.Fatalf("token b before the reload: %v", r.Label())
		}
	}
	if len(v.jwks.kickc) != 0 || srv.hits.Load() != 1 {
		t.Fatalf("unknown kids within the interval asked for a reload (%d fetches)", srv.hits.Load())
	}
	// Past the interval, the next unknown kid reloads once, in the
	// background; the token is accepted once the keys are in.
	clk.Add(11 * time.Second)
	for range 100 {
		verify(tokB)
	}
	checkFor(t, 5*time.Second, func() error {
		if r := verify(tokB); r != 0 {
			return errors.New(r.Label())
		}
		return nil
	})
	for range 100 {
		verify([]byte(mint(t, Key{alg: ES256, kid: "nope", mat: ka.mat}, baseClaims(), time.Hour)))
	}
	if n := srv.hits.Load(); n != 2 {
		t.Fatalf("%d fetches after one reload on unknown kids, want 2", n)
	}
	// Key a retired: gone at the next reload.
	srv.set(http.StatusOK, jwksOf(jwkOf(t, kb)))
	if err := v.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	if verify(tokA) != ReasonUnknownKid || verify(tokB) != 0 {
		t.Fatalf("after rotation: a %v, b %v", verify(tokA).Label(), verify(tokB).Label())
	}
	// A failing or broken key server keeps the keys in use.
	for _, bad := range []struct {
		status int
		doc    []byte
	}{{http.StatusInternalServerError, nil}, {http.StatusOK, []byte("<html>")}, {http.StatusOK, jwksOf()}} {
		srv.set(bad.status, bad.doc)
		if err := v.Refresh(context.Background()); err == nil {
			t.Fatalf("status %d %q: no error", bad.status, bad.doc)
		}
		if verify(tokB) != 0 {
			t.Fatal("a failed reload dropped the keys")
		}
	}
	st := v.Stats()
	if st.JWKSLoads != 6 || st.JWKSFailures != 3 || st.JWKSKeys != 1 || !st.JWKSLastOK.Equal(clk.Now().Truncate(time.Second)) {
		t.Fatalf("stats %+v", st)
	}
}

func TestJWKSPeriodicRefresh(t *testing.T) {
	ka, _ := NewKey(newEC(t), "a")
	_, edPriv, _ := ed25519.GenerateKey(rand.Reader)
	kb, _ := NewKey(edPriv, "") // a key without kid, for tokens without kid
	srv := newJWKSServer(t, jwksOf(jwkOf(t, ka)))
	cfg := DefaultConfig()
	cfg.JWKS = srv.URL
	cfg.JWKSRefresh = 20 * time.Millisecond
	cfg.JWKSMinInterval = 10 * time.Millisecond
	v := newVerifier(t, cfg)
	c := baseClaims()
	c.IssuedAt = time.Now()
	tokB := []byte(mint(t, kb, c, time.Hour))
	if _, err := v.Verify(tokB); ReasonOf(err) != ReasonAlgMismatch {
		t.Fatalf("token b before its key is published: %v", err)
	}
	srv.set(http.StatusOK, jwksOf(jwkOf(t, ka), jwkOf(t, kb)))
	checkFor(t, 5*time.Second, func() error {
		_, err := v.Verify(tokB)
		return err
	})
}

func TestJWKSFile(t *testing.T) {
	ka, _ := NewKey(newEC(t), "a")
	kb, _ := NewKey(newEC(t), "b")
	path := filepath.Join(t.TempDir(), "jwks.json")
	write := func(doc []byte) {
		if err := os.WriteFile(path, doc, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write(jwksOf(jwkOf(t, ka)))
	cfg := testConfig()
	cfg.JWKS = path
	v := newVerifier(t, cfg)
	tokA := []byte(mint(t, ka, baseClaims(), time.Hour))
	tokB := []byte(mint(t, kb, baseClaims(), time.Hour))
	if _, err := v.Verify(tokA); err != nil {
		t.Fatal(err)
	}
	write(jwksOf(jwkOf(t, kb)))
	if err := v.Refresh(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(tokB); err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(tokA); ReasonOf(err) != ReasonUnknownKid {
		t.Fatalf("retired key: %v", err)
	}
	// The configured keys stay beside the JWKS.
	if _, err := v.Verify([]byte(mint(t, signingKeys()[RS256], baseClaims(), time.Hour))); err != nil {
		t.Fatal(err)
	}
}

// A key from the network never replaces a configured key with the same kid.
func TestJWKSDoesNotOverrideConfiguredKid(t *testing.T) {
	evil, _ := NewKey(newEC(t), signingKeys()[HS256].kid)
	srv := newJWKSServer(t, jwksOf(jwkOf(t, evil)))
	cfg := testConfig()
	cfg.JWKS = srv.URL
	v := newVerifier(t, cfg)
	if _, err := v.Verify([]byte(mint(t, evil, baseClaims(), time.Hour))); ReasonOf(err) != ReasonAlgMismatch {
		t.Fatalf("token signed by the JWKS key with a configured kid: %v", err)
	}
	if _, err := v.Verify([]byte(mint(t, signingKeys()[HS256], baseClaims(), time.Hour))); err != nil {
		t.Fatal(err)
	}
}

func TestJWKSStartAndStop(t *testing.T) {
	srv := newJWKSServer(t, nil)
	srv.set(http.StatusNotFound, []byte("no"))
	cfg := DefaultConfig()
	cfg.JWKS = srv.URL
	if _, err := New(cfg); !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), "404") {
		t.Fatalf("New with a failing JWKS: %v", err)
	}
	srv.set(http.StatusOK, []byte(`{"keys":[`+strings.Repeat(" ", maxJWKSBytes)+`]}`))
	if _, err := New(cfg); !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), "over") {
		t.Fatalf("New with an oversized JWKS: %v", err)
	}
	cfg.JWKS = filepath.Join(t.TempDir(), "missing.json")
	if _, err := New(cfg); !errors.Is(err, ErrConfig) {
		t.Fatalf("New with a missing JWKS file: %v", err)
	}

	ka, _ := NewKey(newEC(t), "a")
	srv.set(http.StatusOK, jwksOf(jwkOf(t, ka)))
	cfg.JWKS = srv.URL
	cfg.JWKSRefresh = time.Millisecond
	cfg.JWKSMinInterval = time.Millisecond
	// No idle connections, whose goroutines would outlive Close.
	cfg.HTTPClient = &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	before := runtime.NumGoroutine()
	v, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	checkFor(t, 5*time.Second, func() error {
		if srv.hits.Load() < 5 {
			return errors.New("no periodic reloads")
		}
		return nil
	})
	v.Close()
	v.Close()
	select {
	case <-v.jwks.done:
	default:
		t.Fatal("Close returned before the service goroutine ended")
	}
	checkFor(t, 5*time.Second, func() error {
		if n := runtime.NumGoroutine(); n > before {
			return errors.New("goroutines left after Close")
		}
		return nil
	})
	if _, err := v.Verify([]byte(mint(t, ka, Claims{Sub: "a"}, time.Hour))); err != nil {
		t.Fatalf("Verify after Close: %v", err)
	}
}
