package auth

import (
	"syscall"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

// BenchmarkVerify is the handshake cost of authentication: parse, verify,
// check the registered claims, build the Identity (permission set interned).
// Run: go test -run '^$' -bench 'Verify' -benchmem ./auth; cpu-ns/op is the
// figure to compare on a shared machine.
func BenchmarkVerify(b *testing.B) {
	v := newVerifier(b, testConfig())
	for _, a := range allAlgs {
		b.Run(a.String(), func(b *testing.B) {
			tok := []byte(mint(b, signingKeys()[a], baseClaims(), time.Hour))
			b.ReportAllocs()
			defer cpuPerOp(b)()
			for b.Loop() {
				if _, err := v.Verify(tok); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkVerifyMapClaims is golang-jwt used the plain way (MapClaims), the
// baseline the claims decoding of Verify is measured against.
func BenchmarkVerifyMapClaims(b *testing.B) {
	tok := mint(b, signingKeys()[HS256], baseClaims(), time.Hour)
	p := jwt.NewParser(jwt.WithValidMethods([]string{"HS256"}), jwt.WithTimeFunc(fixedNow))
	kf := func(*jwt.Token) (any, error) { return testSecret, nil }
	b.ReportAllocs()
	defer cpuPerOp(b)()
	for b.Loop() {
		if _, err := p.Parse(tok, kf); err != nil {
			b.Fatal(err)
		}
	}
}

// cpuPerOp reports the process CPU time (user + system, GC included) per
// operation beside ns/op: on this shared 2-core machine wall time per op
// swings with other tenants' load, CPU time much less. Call as
// defer cpuPerOp(b)() before the loop.
func cpuPerOp(b *testing.B) func() {
	start := processCPU(b)
	return func() {
		b.ReportMetric(float64(processCPU(b)-start)/float64(b.N), "cpu-ns/op")
	}
}

func processCPU(b *testing.B) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkCompilePerms is what the first token with a new combination of
// channels, publish and subs claims costs on top of Verify; later tokens
// with the same claims find the set interned.
func BenchmarkCompilePerms(b *testing.B) {
	channels := bytesList([]string{"chat:*", "user:{sub}", "dm:{sub}:*"})
	publish := bytesList([]string{"chat:*"})
	subs := bytesList([]string{"user:{sub}"})
	b.ReportAllocs()
	for b.Loop() {
		if _, err := compilePerms(channels, publish, subs); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkCanSubscribe is one permission check with three patterns, the
// match last.
func BenchmarkCanSubscribe(b *testing.B) {
	id := ident(b, "alice", []string{"chat:*", "dm:{sub}:*", "user:{sub}"}, nil, nil)
	ch := []byte("user:alice")
	b.ReportAllocs()
	for b.Loop() {
		if !id.CanSubscribe(ch) {
			b.Fatal("refused")
		}
	}
}

// BenchmarkExtract is the token lookup of one handshake with the token in
// the subprotocol list, as browsers send it.
func BenchmarkExtract(b *testing.B) {
	var e Extractor
	tok := mint(b, signingKeys()[HS256], baseClaims(), time.Hour)
	uri, proto := []byte("/ws"), []byte("token."+tok)
	b.ReportAllocs()
	for b.Loop() {
		e.Reset()
		e.URI(uri)
		e.Header([]byte("Host"), []byte("example.com"))
		e.Subprotocol([]byte("wsedge.v1.json"))
		e.Subprotocol(proto)
		if t, _ := e.Token(); len(t) == 0 {
			b.Fatal("no token")
		}
	}
}
