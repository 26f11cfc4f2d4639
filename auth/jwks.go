package auth

import (
	"context"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Limits on a JWKS document, so that a compromised or broken key server
// cannot make every node hold or scan an unbounded key list.
const (
	maxJWKSBytes = 1 << 20
	maxJWKSKeys  = 256
)

// jwk is one entry of a JWKS document (RFC 7517), with only the members
// wsedge reads.
type jwk struct {
	Kty string `json:"kty"`
	Kid string `json:"kid"`
	Alg string `json:"alg"`
	Use string `json:"use"`
	Crv string `json:"crv"`
	N   string `json:"n"`
	E   string `json:"e"`
	X   string `json:"x"`
	Y   string `json:"y"`
	K   string `json:"k"`
}

// ParseJWKS reads a JWKS document. Entries for other uses (use other than
// "sig") and for algorithms wsedge does not accept are skipped and counted
// in skipped; a malformed entry of an accepted kind, two entries with one
// kid, or a document without any usable key is an error, so that a broken
// update never replaces a working key set.
func ParseJWKS(data []byte) (keys []Key, skipped int, err error) {
	var doc struct {
		Keys []jwk `json:"keys"`
	}
	if err := json.Unmarshal(data, &doc); err != nil {
		return nil, 0, fmt.Errorf("%w: %v", ErrJWKS, err)
	}
	if len(doc.Keys) > maxJWKSKeys {
		return nil, 0, fmt.Errorf("%w: %d keys, at most %d", ErrJWKS, len(doc.Keys), maxJWKSKeys)
	}
	seen := make(map[string]bool, len(doc.Keys))
	for i, j := range doc.Keys {
		k, ok, err := j.key()
		if err != nil {
			return nil, 0, fmt.Errorf("%w: key %d (kid %q): %v", ErrJWKS, i, j.Kid, err)
		}
		if !ok {
			skipped++
			continue
		}
		if k.kid != "" {
			if seen[k.kid] {
				return nil, 0, fmt.Errorf("%w: kid %q appears twice", ErrJWKS, k.kid)
			}
			seen[k.kid] = true
		}
		keys = append(keys, k)
	}
	if len(keys) == 0 {
		return nil, skipped, fmt.Errorf("%w: no usable key (%d skipped)", ErrJWKS, skipped)
	}
	return keys, skipped, nil
}

// key converts one entry. ok is false for entries wsedge does not use.
func (j *jwk) key() (k Key, ok bool, err error) {
	if j.Use != "" && j.Use != "sig" {
		return Key{}, false, nil
	}
	var want Alg
	switch j.Kty {
	case "oct":
		want = HS256
	case "RSA":
		want = RS256
	case "EC":
		if j.Crv != "P-256" {
			return Key{}, false, nil
		}
		want = ES256
	case "OKP":
		if j.Crv != "Ed25519" {
			return Key{}, false, nil
		}
		want = EdDSA
	default:
		return Key{}, false, nil
	}
	// A key may be published for another algorithm of its family (RS512):
	// it is not ours to use.
	if j.Alg != "" && ParseAlg(j.Alg) != want {
		return Key{}, false, nil
	}
	switch want {
	case HS256:
		secret, err := b64(j.K)
		if err != nil {
			return Key{}, false, fmt.Errorf("k: %v", err)
		}
		k, err = HMACKey(secret, j.Kid)
		return k, err == nil, err
	case RS256:
		n, err := b64(j.N)
		if err != nil {
			return Key{}, false, fmt.Errorf("n: %v", err)
		}
		e, err := b64(j.E)
		if err != nil {
			return Key{}, false, fmt.Errorf("e: %v", err)
		}
		if len(e) == 0 || len(e) > 4 {
			return Key{}, false, fmt.Errorf("e of %d bytes", len(e))
		}
		exp := int(new(big.Int).SetBytes(e).Int64())
		if exp < 3 || exp%2 == 0 {
			return Key{}, false, fmt.Errorf("bad exponent %d", exp)
		}
		k, err = NewKey(&rsa.PublicKey{N: new(big.Int).SetBytes(n), E: exp}, j.Kid)
		return k, err == nil, err
	case ES256:
		x, err := b64(j.X)
		if err != nil {
			return Key{}, false, fmt.Errorf("x: %v", err)
		}
		y, err := b64(j.Y)
		if err != nil {
			return Key{}, false, fmt.Errorf("y: %v", err)
		}
		if len(x) != 32 || len(y) != 32 {
			return Key{}, false, fmt.Errorf("P-256 coordinates of %d and %d bytes", len(x), len(y))
		}
		point := append(append([]byte{4}, x...), y...)
		pub, err := ecdsa.ParseUncompressedPublicKey(elliptic.P256(), point)
		if err != nil {
			return Key{}, false, err
		}
		k, err = NewKey(pub, j.Kid)
		return k, err == nil, err
	default:
		x, err := b64(j.X)
		if err != nil {
			return Key{}, false, fmt.Errorf("x: %v", err)
		}
		k, err = NewKey(ed25519.PublicKey(x), j.Kid)
		return k, err == nil, err
	}
}

func b64(s string) ([]byte, error) {
	return base64.RawURLEncoding.DecodeString(strings.TrimRight(s, "="))
}

// jwksSource keeps a JWKS document (file or http(s) URL) loaded: one service
// goroutine reloads it every refresh interval and when Verify meets an
// unknown kid, but at most once per minInterval, so that clients sending
// made-up kids cannot make the node fetch on every handshake.
type jwksSource struct {
	loc         string
	client      *http.Client
	timeout     time.Duration
	refresh     time.Duration
	minInterval time.Duration
	now         func() time.Time
	log         *slog.Logger
	install     func([]Key) // publishes a new key set; called only from load

	mu       sync.Mutex // serialises loads (service goroutine, Refresh)
	lastLoad atomic.Int64
	kickc    chan struct{}
	ctx      context.Context // cancelled by close: ends run and its fetch
	cancel   context.CancelFunc
	done     chan struct{}
	closing  sync.Once

	fetches   atomic.Uint64
	failures  atomic.Uint64
	lastOK    atomic.Int64
	keysInSet atomic.Int64
}

func (s *jwksSource) isURL() bool {
	return strings.HasPrefix(s.loc, "http://") || strings.HasPrefix(s.loc, "https://")
}

// load fetches and parses the document and installs it. A failure keeps the
// keys in use.
func (s *jwksSource) load(ctx context.Context) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.lastLoad.Store(s.now().UnixNano())
	s.fetches.Add(1)
	data, err := s.read(ctx)
	var keys []Key
	var skipped int
	if err == nil {
		keys, skipped, err = ParseJWKS(data)
	}
	if err != nil {
		s.failures.Add(1)
		return fmt.Errorf("JWKS %s: %w", s.loc, err)
	}
	s.install(keys)
	s.lastOK.Store(s.now().Unix())
	s.keysInSet.Store(int64(len(keys)))
	s.log.Debug("JWKS loaded", "source", s.loc, "keys", len(keys), "skipped", skipped)
	return nil
}

func (s *jwksSource) read(ctx context.Context) ([]byte, error) {
	if !s.isURL() {
		f, err := os.Open(s.loc)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		return readCapped(f)
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, s.loc, nil)
	if err != nil {
		return nil, err
	}
	req.Header.Set("Accept", "application/json")
	resp, err := s.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("HTTP status %d", resp.StatusCode)
	}
	return readCapped(resp.Body)
}

func readCapped(r io.Reader) ([]byte, error) {
	data, err := io.ReadAll(io.LimitReader(r, maxJWKSBytes+1))
	if err != nil {
		return nil, err
	}
	if len(data) > maxJWKSBytes {
		return nil, fmt.Errorf("document over %d bytes", maxJWKSBytes)
	}
	return data, nil
}

// kick asks for a reload because a token named an unknown kid. It never
// blocks and is a no-op within minInterval of the last load.
func (s *jwksSource) kick() {
	if s.now().UnixNano()-s.lastLoad.Load() < int64(s.minInterval) {
		return
	}
	select {
	case s.kickc <- struct{}{}:
	default:
	}
}

// run is the service goroutine.
func (s *jwksSource) run() {
	defer close(s.done)
	t := time.NewTicker(s.refresh)
	defer t.Stop()
	for {
		select {
		case <-s.ctx.Done():
			return
		case <-t.C:
		case <-s.kickc:
			// Several kicks may have queued behind a load: the rate
			// limit is checked again where the load happens.
			if s.now().UnixNano()-s.lastLoad.Load() < int64(s.minInterval) {
				continue
			}
		}
		if err := s.load(s.ctx); err != nil && s.ctx.Err() == nil {
			s.log.Warn("JWKS refresh failed, keeping the previous keys", "err", err)
		}
	}
}

func (s *jwksSource) close() {
	s.closing.Do(func() {
		s.cancel()
		<-s.done
	})
}
