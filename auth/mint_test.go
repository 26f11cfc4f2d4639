package auth

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestMintClaims(t *testing.T) {
	cfg := testConfig()
	cfg.Audience, cfg.Issuer = "wsedge", "https://id.example"
	v := newVerifier(t, cfg)
	c := baseClaims()
	c.Audience, c.Issuer = "wsedge", "https://id.example"
	c.NotBefore = t0.Add(-time.Second)
	c.Info = []byte(`{ "name" : "Al\u0001i\"ce\n", "t\u0061gs": [1, 2.50, 1e999, "\u2028"] }`)
	id, err := v.Verify([]byte(mint(t, signingKeys()[ES256], c, time.Hour)))
	if err != nil {
		t.Fatal(err)
	}
	if id.Info() != `{"name":"Al\u0001i\"ce\n","t\u0061gs":[1,2.50,1e999,"\u2028"]}` {
		t.Fatalf("info %s is not compacted", id.Info())
	}
	if !id.CanSubscribe([]byte("chat:x")) || !id.CanPublish([]byte("chat:x")) || !id.CanSubscribe([]byte("user:alice")) {
		t.Fatal("permissions lost on the way")
	}
}

// Info that is a bare string with escapes stays valid JSON.
func TestInfoString(t *testing.T) {
	v := newVerifier(t, testConfig())
	for _, info := range []string{`"a\u0001\b"`, `null`, `"plain"`, `[]`, `0`} {
		c := baseClaims()
		c.Info = []byte(info)
		id, err := v.Verify([]byte(mint(t, signingKeys()[HS256], c, time.Hour)))
		if err != nil {
			t.Fatal(err)
		}
		want := info
		if info == "null" {
			want = ""
		}
		if id.Info() != want {
			t.Fatalf("info %s became %s", info, id.Info())
		}
	}
}

func TestMintErrors(t *testing.T) {
	keys := signingKeys()
	for name, tt := range map[string]struct {
		k   Key
		c   Claims
		ttl time.Duration
	}{
		"public key":   {keys[RS256].Public(), Claims{Sub: "a"}, time.Hour},
		"zero key":     {Key{}, Claims{Sub: "a"}, time.Hour},
		"empty sub":    {keys[HS256], Claims{}, time.Hour},
		"zero ttl":     {keys[HS256], Claims{Sub: "a"}, 0},
		"invalid info": {keys[HS256], Claims{Sub: "a", Info: []byte(`{"a":`)}, time.Hour},
	} {
		if _, err := Mint(tt.k, tt.c, tt.ttl); !errors.Is(err, ErrMint) {
			t.Errorf("%s: %v", name, err)
		}
	}
}

func pemFile(t *testing.T, dir, name, typ string, der []byte) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestPEMKeys(t *testing.T) {
	dir := t.TempDir()
	rk, _ := rsa.GenerateKey(rand.Reader, 2048)
	ek, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	_, dk, _ := ed25519.GenerateKey(rand.Reader)
	must := func(b []byte, err error) []byte {
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	ecDER := must(x509.MarshalECPrivateKey(ek))
	privs := map[Alg][]string{
		RS256: {pemFile(t, dir, "rsa1.pem", "RSA PRIVATE KEY", x509.MarshalPKCS1PrivateKey(rk)),
			pemFile(t, dir, "rsa8.pem", "PRIVATE KEY", must(x509.MarshalPKCS8PrivateKey(rk)))},
		ES256: {pemFile(t, dir, "ec1.pem", "EC PRIVATE KEY", ecDER),
			pemFile(t, dir, "ec8.pem", "PRIVATE KEY", must(x509.MarshalPKCS8PrivateKey(ek)))},
		EdDSA: {pemFile(t, dir, "ed8.pem", "PRIVATE KEY", must(x509.MarshalPKCS8PrivateKey(dk)))},
	}
	cfg := DefaultConfig()
	cfg.PEMFiles = []string{
		pemFile(t, dir, "rsa.pub", "PUBLIC KEY", must(x509.MarshalPKIXPublicKey(&rk.PublicKey))),
		pemFile(t, dir, "ec.pub", "PUBLIC KEY", must(x509.MarshalPKIXPublicKey(&ek.PublicKey))),
		pemFile(t, dir, "ed.pub", "PUBLIC KEY", must(x509.MarshalPKIXPublicKey(dk.Public()))),
	}
	cfg.Now = fixedNow
	v := newVerifier(t, cfg)
	for alg, files := range privs {
		for _, f := range files {
			data, _ := os.ReadFile(f)
			k, err := ParsePEM(data, "")
			if err != nil || k.Alg() != alg {
				t.Fatalf("%s: %v %v", f, k.Alg(), err)
			}
			if _, err := v.Verify([]byte(mint(t, k, baseClaims(), time.Hour))); err != nil {
				t.Fatalf("%s: %v", f, err)
			}
		}
	}
	// A private key in PEMFiles verifies too (its public half is kept).
	cfg.PEMFiles = privs[ES256][:1]
	if _, err := newVerifier(t, cfg).Verify([]byte(mint(t, mustPEM(t, privs[ES256][0]), baseClaims(), time.Hour))); err != nil {
		t.Fatal(err)
	}

	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	weak, _ := rsa.GenerateKey(rand.Reader, 1024)
	for name, data := range map[string][]byte{
		"empty":       nil,
		"not PEM":     []byte("hello"),
		"certificate": pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{1}}),
		"garbage DER": pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: []byte{1, 2, 3}}),
		"P-384":       pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: must(x509.MarshalECPrivateKey(p384))}),
		"RSA 1024":    pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(weak)}),
	} {
		if _, err := ParsePEM(data, ""); !errors.Is(err, ErrKey) {
			t.Errorf("%s: %v", name, err)
		}
	}
	cfg.PEMFiles = []string{filepath.Join(dir, "missing.pem")}
	if _, err := New(cfg); !errors.Is(err, ErrConfig) {
		t.Fatalf("missing PEM file: %v", err)
	}
}

func mustPEM(t *testing.T, path string) Key {
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	k, err := ParsePEM(data, "")
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestDevSecretPath(t *testing.T) {
	home := t.TempDir()
	t.Setenv("HOME", home)
	t.Setenv("XDG_CONFIG_HOME", "")
	t.Setenv(DevSecretEnv, "")
	for _, tt := range []struct {
		env, xdg, want string
	}{
		{"", "", filepath.Join(home, ".config", "wsedge", "dev-secret")},
		{"", "/xdg", "/xdg/wsedge/dev-secret"},
		{"/etc/wsedge/secret", "/xdg", "/etc/wsedge/secret"},
	} {
		t.Setenv(DevSecretEnv, tt.env)
		t.Setenv("XDG_CONFIG_HOME", tt.xdg)
		if p, err := DevSecretPath(); err != nil || p != tt.want {
			t.Errorf("env %q xdg %q: %q %v, want %q", tt.env, tt.xdg, p, err, tt.want)
		}
	}
}

func TestDevSecret(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "wsedge")
	path := filepath.Join(dir, "dev-secret")
	// Many first users at once agree on one secret.
	const n = 16
	got := make([][]byte, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { got[i], errs[i] = DevSecret(path) })
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil || !bytes.Equal(got[i], got[0]) {
			t.Fatalf("caller %d: %q %v, caller 0: %q", i, got[i], errs[i], got[0])
		}
	}
	if _, err := hex.DecodeString(string(got[0])); err != nil || len(got[0]) != 64 {
		t.Fatalf("secret %q is not 64 hex digits", got[0])
	}
	st, err := os.Stat(path)
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Fatalf("secret file mode %v %v", st.Mode(), err)
	}
	if st, err := os.Stat(dir); err != nil || st.Mode().Perm() != 0o700 {
		t.Fatalf("directory mode %v %v", st.Mode(), err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Fatalf("%d files left in %s", len(ents), dir)
	}
	raw, _ := os.ReadFile(path)
	if string(raw) != string(got[0])+"\n" {
		t.Fatalf("file %q", raw)
	}
	again, err := DevSecret(path)
	if err != nil || !bytes.Equal(again, got[0]) {
		t.Fatal("a second use makes a new secret")
	}

	// What `wsedge token` mints with it, `wsedge serve` accepts.
	k, err := HMACKey(again, "")
	if err != nil {
		t.Fatal(err)
	}
	cfg := DefaultConfig()
	cfg.HMACSecret = got[0]
	v := newVerifier(t, cfg)
	if _, err := v.Verify([]byte(mint(t, k, Claims{Sub: "alice", Channels: []string{"chat:*"}}, time.Hour))); err != nil {
		t.Fatal(err)
	}
}

func TestReadSecretFile(t *testing.T) {
	dir := t.TempDir()
	// WriteFile's mode is filtered by the umask: Chmod sets it exactly.
	write := func(name, content string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil {
			t.Fatal(err)
		}
		return p
	}
	p := write("ok", strings.Repeat("s", 32)+" \r\n\n", 0o600)
	if s, err := ReadSecretFile(p); err != nil || string(s) != strings.Repeat("s", 32) {
		t.Fatalf("%q %v", s, err)
	}
	for name, tt := range map[string]struct {
		content string
		mode    os.FileMode
	}{
		"world readable": {strings.Repeat("s", 32), 0o644},
		"group readable": {strings.Repeat("s", 32), 0o640},
		"short":          {strings.Repeat("s", 31) + "\n", 0o600},
		"huge":           {strings.Repeat("s", 5000), 0o600},
	} {
		p := write(strings.ReplaceAll(name, " ", "-"), tt.content, tt.mode)
		if _, err := ReadSecretFile(p); err == nil {
			t.Errorf("%s: accepted", name)
		}
		if _, err := DevSecret(p); err == nil {
			t.Errorf("%s: DevSecret accepted or replaced it", name)
		}
	}
}
