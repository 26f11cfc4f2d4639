package bench

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/wsedge/wsedge/auth"
)

const testSecret = "0123456789abcdef0123456789abcdef0123456789abcdef"

// writeSecret writes an HS256 secret file as `wsedge serve
// --auth-secret-file` wants it (mode 0600) and returns its path.
func writeSecret(t *testing.T, secret string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "secret")
	if err := os.WriteFile(p, []byte(secret+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// writePEMKey writes a PKCS #8 private key and the PKIX public key next to
// it, and returns both paths.
func writePEMKey(t *testing.T, priv any) (privPath, pubPath string) {
	t.Helper()
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := x509.MarshalPKIXPublicKey(priv.(crypto.Signer).Public())
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	privPath, pubPath = filepath.Join(dir, "key.pem"), filepath.Join(dir, "pub.pem")
	for _, f := range []struct {
		path, typ string
		der       []byte
	}{{privPath, "PRIVATE KEY", der}, {pubPath, "PUBLIC KEY", pub}} {
		if err := os.WriteFile(f.path, pem.EncodeToMemory(&pem.Block{Type: f.typ, Bytes: f.der}), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return privPath, pubPath
}

// verifier checks tokens the way the server does, with the secret or the
// public key in pubPath.
func verifier(t *testing.T, secret, pubPath string) *auth.Verifier {
	t.Helper()
	cfg := auth.DefaultConfig()
	if secret != "" {
		cfg.HMACSecret = []byte(secret)
	}
	if pubPath != "" {
		cfg.PEMFiles = []string{pubPath}
	}
	v, err := auth.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(v.Close)
	return v
}

func TestTokenSetMintsOnePerConnection(t *testing.T) {
	tc := TokenConfig{Key: writeSecret(t, testSecret), Channels: []string{"chat:*"}, Publish: []string{"bench:*"},
		Subs: []string{"user:{sub}", "chat:lobby"}, TTL: time.Hour}
	// A worker with measured connections 100…249 (global 100…249), slow
	// ones 7…16 (global 1007…1016) and 3 publishers (global 1030…1032).
	ranges := [numTokKinds]tokenRange{
		tokMeasured: {lo: 100, id: 100, n: 150},
		tokSlow:     {lo: 7, id: 1007, n: 10},
		tokPub:      {lo: 0, id: 1030, n: 3},
	}
	ts, err := newTokenSet(&tc, ranges, true)
	if err != nil {
		t.Fatal(err)
	}
	if ts.len() != 163 || ts.alg != auth.HS256 {
		t.Fatalf("%d %s tokens, want 163 HS256", ts.len(), ts.alg)
	}
	v := verifier(t, testSecret, "")
	seen := map[string]bool{}
	total := 0
	for k, r := range ranges {
		for i := r.lo - 1; i <= r.lo+r.n; i++ {
			p := ts.pos(k, i)
			if i < r.lo || i >= r.lo+r.n {
				if p != -1 {
					t.Fatalf("kind %d: connection %d outside %+v has token %d", k, i, r, p)
				}
				continue
			}
			tok := ts.get(p)
			total += len(tok)
			id, err := v.Verify(tok)
			if err != nil {
				t.Fatalf("kind %d connection %d: %v", k, i, err)
			}
			want := "u" + strconv.Itoa(r.id+i-r.lo)
			if id.Sub() != want || seen[want] {
				t.Fatalf("kind %d connection %d: sub %q (want %q, seen before %v)", k, i, id.Sub(), want, seen[want])
			}
			seen[want] = true
			if id.NumSubs() != 2 || string(id.AppendSub(nil, 0)) != "user:"+want ||
				!id.CanSubscribe([]byte("chat:x")) || !id.CanPublish([]byte("bench:b1")) || id.CanPublish([]byte("chat:x")) {
				t.Fatalf("%s: claims not as configured (subs %d)", want, id.NumSubs())
			}
			if left := time.Until(id.Expires()); left < 59*time.Minute || left > time.Hour {
				t.Fatalf("%s expires in %v, want the 1h TTL", want, left)
			}
		}
	}
	// The arena holds the tokens and nothing else.
	if total != len(ts.arena) || cap(ts.arena) != len(ts.arena) {
		t.Fatalf("arena %d bytes (cap %d) for %d bytes of tokens", len(ts.arena), cap(ts.arena), total)
	}
	if id, err := v.Verify(ts.attack); err != nil || id.Sub() != "attacker" {
		t.Fatalf("attack token: %q %v", id.Sub(), err)
	}
}

func TestTokenSetPEMKeys(t *testing.T) {
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ek, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	_, dk, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	for _, kc := range []struct {
		alg  auth.Alg
		priv any
	}{{auth.RS256, rk}, {auth.ES256, ek}, {auth.EdDSA, dk}} {
		t.Run(kc.alg.String(), func(t *testing.T) {
			priv, pub := writePEMKey(t, kc.priv)
			tc := TokenConfig{Key: priv, TTL: time.Minute}
			ts, err := newTokenSet(&tc, [numTokKinds]tokenRange{tokMeasured: {lo: 5, id: 5, n: 70}}, false)
			if err != nil {
				t.Fatal(err)
			}
			if ts.alg != kc.alg || ts.len() != 70 || ts.attack != nil {
				t.Fatalf("%s: %d tokens, attack token %q", ts.alg, ts.len(), ts.attack)
			}
			v := verifier(t, "", pub)
			for _, i := range []int{5, 40, 74} {
				id, err := v.Verify(ts.get(ts.pos(tokMeasured, i)))
				if err != nil || id.Sub() != "u"+strconv.Itoa(i) {
					t.Fatalf("connection %d: sub %q, %v", i, id.Sub(), err)
				}
			}
		})
	}
}

func TestTokenKeyErrors(t *testing.T) {
	dir := t.TempDir()
	open := filepath.Join(dir, "open")
	if err := os.WriteFile(open, []byte(testSecret), 0o644); err != nil {
		t.Fatal(err)
	}
	short := writeSecret(t, "too short")
	for _, path := range []string{filepath.Join(dir, "absent"), open, short} {
		tc := TokenConfig{Key: path, TTL: time.Minute}
		if _, err := newTokenSet(&tc, [numTokKinds]tokenRange{tokMeasured: {n: 1}}, false); err == nil {
			t.Errorf("key %s accepted", path)
		}
	}
}

func TestTokenSubs(t *testing.T) {
	k, err := auth.HMACKey([]byte(testSecret), "")
	if err != nil {
		t.Fatal(err)
	}
	for _, subs := range [][]string{nil, {"user:{sub}"}, {"user:{sub}", "chat:a", "chat:b"}} {
		tok, err := auth.Mint(k, auth.Claims{Sub: "alice", Subs: subs}, time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		if got := tokenSubs(tok); got != len(subs) {
			t.Errorf("subs %v: read %d", subs, got)
		}
		tc := TokenConfig{Token: tok}
		if got := tc.subsPerConn(); got != len(subs) {
			t.Errorf("--token with subs %v: %d pushes owed", subs, got)
		}
	}
	for _, bad := range []string{"", "abc", "a.b.c", "a.!!.c", "a.bnVsbA.c"} {
		if n := tokenSubs(bad); n != 0 {
			t.Errorf("%q: %d subs", bad, n)
		}
	}
	minted := TokenConfig{Key: "k", Subs: []string{"user:{sub}"}}
	if minted.subsPerConn() != 1 {
		t.Error("minted tokens with one subs entry owe one push")
	}
}

// TestTokenRanges: across processes and loops, every measured connection
// (or connect-mode slot), slow subscriber and publisher gets a token of its
// own, and each loop's connect slots lie within its worker's tokens.
func TestTokenRanges(t *testing.T) {
	for _, mode := range []Mode{ModeIdle, ModeBroadcast, ModeConnect} {
		for procs := 1; procs <= 3; procs++ {
			for loops := 1; loops <= 3; loops++ {
				cfg := Defaults()
				cfg.Mode, cfg.Conns, cfg.Procs, cfg.Loops = mode, 101, procs, loops
				want := cfg.Conns
				if mode == ModeBroadcast {
					cfg.Slow, cfg.Channels, cfg.Publishers = 13, 4, 2
					want += cfg.Slow + cfg.Publishers
				}
				ids := map[int]bool{}
				for i := range procs {
					w := &worker{cfg: cfg, index: i, count: procs, conns: share(cfg.Conns, i, procs),
						slow: share(cfg.Slow, i, procs), connLoops: cfg.loops()}
					r := w.tokenRanges()
					for _, kr := range r {
						for j := range kr.n {
							if ids[kr.id+j] {
								t.Fatalf("%s procs %d loops %d: id %d twice", mode, procs, loops, kr.id+j)
							}
							ids[kr.id+j] = true
						}
					}
					if mode == ModeConnect {
						m := r[tokMeasured]
						for l := range w.connLoops {
							slot := i*w.connLoops + l
							first := shareStart(cfg.Conns, slot, procs*w.connLoops)
							k := share(cfg.Conns, slot, procs*w.connLoops)
							if first < m.lo || first+k > m.lo+m.n {
								t.Fatalf("connect procs %d loops %d: loop %d slots %d+%d outside %+v", procs, loops, l, first, k, m)
							}
						}
					}
				}
				for id := range want {
					if !ids[id] {
						t.Fatalf("%s procs %d loops %d: no token for u%d (%d ids)", mode, procs, loops, id, len(ids))
					}
				}
				if len(ids) != want {
					t.Fatalf("%s procs %d loops %d: %d ids, want %d", mode, procs, loops, len(ids), want)
				}
			}
		}
	}
}
