package auth

import (
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"
	"unsafe"
)

func bytesList(ss []string) [][]byte {
	out := make([][]byte, len(ss))
	for i, s := range ss {
		out[i] = []byte(s)
	}
	return out
}

// ident builds an Identity from claim lists without a token.
func ident(t testing.TB, sub string, channels, publish, subs []string) Identity {
	t.Helper()
	p, err := compilePerms(bytesList(channels), bytesList(publish), bytesList(subs))
	if err != nil {
		t.Fatal(err)
	}
	return Identity{data: sub, p: p, subLen: uint32(len(sub)), exp: uint32(t0.Unix())}
}

func TestCanSubscribe(t *testing.T) {
	tests := []struct {
		pattern, sub, channel string
		want                  bool
	}{
		{"chat:*", "alice", "chat:room", true},
		{"chat:*", "alice", "chat:a:b", true}, // colons after the namespace are part of the name
		{"chat:*", "alice", "chat:*", true},
		{"chat:*", "alice", "chat-admin:x", false},
		{"chat:*", "alice", "chatx:y", false},
		{"chat:*", "alice", "cha:t", false},
		{"chat:*", "alice", "chat:", false},      // not a channel name
		{"chat:*", "alice", "chat:a b", false},   // not a channel name
		{"chat:*", "alice", "Chat:room", false},  // namespaces are lower case
		{"chat:*", "alice", "xchat:room", false}, // a prefix of the namespace is not the namespace
		{"chat:room", "alice", "chat:room", true},
		{"chat:room", "alice", "chat:room2", false},
		{"chat:room", "alice", "chat:roo", false},
		{"chat:room*", "alice", "chat:room", true},
		{"chat:room*", "alice", "chat:room2", true},
		{"chat:room*", "alice", "chat:roo", false},

		{"user:{sub}", "alice", "user:alice", true},
		{"user:{sub}", "alice", "user:bob", false},
		{"user:{sub}", "alice", "user:alice2", false},
		{"user:{sub}", "alice", "user:alic", false},
		{"user:{sub}", "a*", "user:a*", true}, // '*' in a sub is a literal...
		{"user:{sub}", "a*", "user:ab", false},
		{"user:{sub}", "a*", "user:a", false},
		{"user:{sub}", "*", "user:x", false}, // ...even when it is the whole sub
		{"user:{sub}", "a:b", "user:a:b", true},
		{"user:{sub}", "a:b", "user:a", false},
		{"user:{sub}", "a:b", "user:a:bc", false},
		{"user:{sub}", "a b", "user:a b", false}, // such a user has no valid personal channel
		{"user:*", "alice", "user:alice", true},
		{"user:*", "alice", "user:bob", false},       // owner only, whatever the pattern
		{"user:*", "alice", "user:alice:x", false},   // user:<x> belongs to the user x = "alice:x"
		{"user:*", "alice:x", "user:alice:x", true},  // ...who may read it
		{"user:alice", "bob", "user:alice", false},   // an explicit grant does not override ownership
		{"user:{sub}*", "alice", "user:alice", true}, // owner rule applies to the whole name
		{"user:{sub}*", "alice", "user:alicex", false},

		{"dm:{sub}:*", "a", "dm:a:x", true},
		{"dm:{sub}:*", "a", "dm:a:x:y", true},
		{"dm:{sub}:*", "a", "dm:ab:x", false},
		{"dm:{sub}:*", "a", "dm:b:x", false},
		{"dm:{sub}:*", "a*", "dm:a*:x", true},
		{"dm:{sub}:*", "a*", "dm:ab:x", false},
		{"dm:{sub}:*", "a:x", "dm:a:x:y", true},
		{"dm:{sub}:*", "a:x", "dm:a:y", false},
		{"dm:{sub}*", "al", "dm:alice", true}, // documented: '*' after {sub} extends the id
		{"chat:{sub}", "*", "chat:*", true},
		{"chat:{sub}", "*", "chat:x", false},
		{"inbox:{sub}-{sub}", "a", "inbox:a-a", true},
		{"inbox:{sub}-{sub}", "a", "inbox:a-b", false},
		{"chat:{sub", "a", "chat:{sub", true}, // not a placeholder: literal
		{"chat:{SUB}", "a", "chat:a", false},
	}
	for _, tt := range tests {
		t.Run(fmt.Sprintf("%s/%s/%s", tt.pattern, tt.sub, tt.channel), func(t *testing.T) {
			id := ident(t, tt.sub, []string{tt.pattern}, nil, nil)
			if got := id.CanSubscribe([]byte(tt.channel)); got != tt.want {
				t.Fatalf("CanSubscribe = %v, want %v", got, tt.want)
			}
			// The same pattern for publish, where the owner rule does not
			// apply (TestPublishIgnoresOwnership).
			pub := ident(t, tt.sub, nil, []string{tt.pattern}, nil)
			if got := pub.CanPublish([]byte(tt.channel)); got != tt.want && !strings.HasPrefix(tt.channel, "user:") {
				t.Fatalf("CanPublish = %v, want %v", got, tt.want)
			}
			if id.CanPublish([]byte(tt.channel)) || pub.CanSubscribe([]byte(tt.channel)) {
				t.Fatal("channels grants publish or publish grants read")
			}
		})
	}
}

// Publishing to a personal channel follows the publish patterns alone
// (the namespace's client-publish option is the engine's to add).
func TestPublishIgnoresOwnership(t *testing.T) {
	id := ident(t, "alice", nil, []string{"user:*"}, nil)
	for _, ch := range []string{"user:alice", "user:bob", "user:alice:x"} {
		if !id.CanPublish([]byte(ch)) {
			t.Fatalf("publish to %s refused", ch)
		}
	}
	if id.CanSubscribe([]byte("user:bob")) {
		t.Fatal("publish grants read")
	}
}

func TestPersonalChannelNeedsAGrant(t *testing.T) {
	id := ident(t, "alice", []string{"chat:*"}, nil, nil)
	if id.CanSubscribe([]byte("user:alice")) {
		t.Fatal("the personal channel is readable without a pattern or a subs entry")
	}
	id = ident(t, "alice", []string{"chat:*"}, nil, []string{"user:{sub}", "chat:lobby"})
	for _, ch := range []string{"user:alice", "chat:lobby", "chat:x"} {
		if !id.CanSubscribe([]byte(ch)) {
			t.Fatalf("%s: a subs entry grants its read", ch)
		}
	}
	if id.CanPublish([]byte("user:alice")) || id.CanPublish([]byte("chat:lobby")) {
		t.Fatal("a subs entry grants publish")
	}
	var got []string
	for i := range id.NumSubs() {
		got = append(got, string(id.AppendSub(nil, i)))
	}
	if strings.Join(got, ",") != "user:alice,chat:lobby" {
		t.Fatalf("subs %v", got)
	}
}

func TestCompilePatternErrors(t *testing.T) {
	for _, p := range []string{
		"", "chat", ":x", "chat:", "*", "*:*", "chat*:x", "Chat:x", "ch at:x", "chat:a b",
		"chat:a*b", "chat:**", "chat:\x7f", "chat:é", "{sub}:x",
		"abcdefghijklmnopqrstuvwxyz0123456:x", // namespace of 33 bytes
		"chat:" + strings.Repeat("x", 251),
	} {
		if _, err := compilePattern([]byte(p), true); err == nil {
			t.Errorf("%q compiles", p)
		}
	}
	for _, p := range []string{"chat:*", "chat:a*", "user:{sub}", "a:b:c", "a-b_c9:~!", "abcdefghijklmnopqrstuvwxyz012345:x"} {
		if _, err := compilePattern([]byte(p), true); err != nil {
			t.Errorf("%q: %v", p, err)
		}
	}
	if _, err := compilePattern([]byte("chat:*"), false); err == nil {
		t.Error("a subs entry with '*' compiles")
	}
}

func TestSpecialIdentities(t *testing.T) {
	var zero Identity
	u := Unrestricted()
	for _, ch := range []string{"chat:x", "user:bob", "user:"} {
		if zero.CanSubscribe([]byte(ch)) || zero.CanPublish([]byte(ch)) {
			t.Fatalf("the zero Identity may use %s", ch)
		}
	}
	for _, ch := range []string{"chat:x", "user:bob"} {
		if !u.CanSubscribe([]byte(ch)) || !u.CanPublish([]byte(ch)) {
			t.Fatalf("Unrestricted may not use %s", ch)
		}
	}
	if !zero.IsZero() || u.IsZero() || zero.NumSubs() != 0 || u.NumSubs() != 0 || u.Sub() != "" ||
		!u.Expires().IsZero() || u.ExpiresUnix() != 0 {
		t.Fatal("zero or Unrestricted identity fields")
	}
}

func TestMatchAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector allocates")
	}
	id := ident(t, "alice", []string{"chat:*", "user:{sub}", "dm:{sub}:*"}, []string{"chat:*"}, []string{"user:{sub}"})
	chans := [][]byte{[]byte("chat:room42"), []byte("user:alice"), []byte("user:bob"), []byte("dm:alice:bob"), []byte("other:x")}
	buf := make([]byte, 0, 64)
	var sink int
	allocs := testing.AllocsPerRun(100, func() {
		for _, ch := range chans {
			if id.CanSubscribe(ch) {
				sink++
			}
			if id.CanPublish(ch) {
				sink++
			}
		}
		buf = id.AppendSub(buf[:0], 0)
		sink += len(id.Sub()) + len(id.Info())
	})
	if allocs != 0 {
		t.Fatalf("permission checks allocate %v times per run, want 0", allocs)
	}
	if sink == 0 {
		t.Fatal("nothing matched")
	}
}

func TestInternShares(t *testing.T) {
	v := newVerifier(t, testConfig())
	k := signingKeys()[HS256]
	verify := func(c Claims) Identity {
		id, err := v.Verify([]byte(mint(t, k, c, time.Hour)))
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	a := baseClaims()
	b := baseClaims()
	b.Sub, b.Info = "bob", nil
	c := baseClaims()
	c.Publish = nil
	ia, ib, ic := verify(a), verify(b), verify(c)
	if ia.p != ib.p {
		t.Fatal("identical channels/publish/subs claims are compiled twice")
	}
	if ia.p == ic.p {
		t.Fatal("different publish claims share a set")
	}
	if !ib.CanSubscribe([]byte("user:bob")) || ib.CanSubscribe([]byte("user:alice")) || ia.CanSubscribe([]byte("user:bob")) {
		t.Fatal("a shared set resolves {sub} with the wrong user")
	}
	if n := v.Stats().Interned; n != 2 {
		t.Fatalf("%d sets interned, want 2", n)
	}

	// Lists that concatenate alike must not collide.
	var tab internTable
	x := &claims{channels: bytesList([]string{"a:b", "c:d"})}
	y := &claims{channels: bytesList([]string{"a:b"}), publish: bytesList([]string{"c:d"})}
	px, _ := tab.get(x.internKey(), x.channels, x.publish, x.subs)
	py, _ := tab.get(y.internKey(), y.channels, y.publish, y.subs)
	if px == py {
		t.Fatal("different claim lists share an intern key")
	}
}

func TestInternBounded(t *testing.T) {
	var tab internTable
	for i := range maxInterned + 10 {
		ch := [][]byte{fmt.Appendf(nil, "chat:%d", i)}
		c := &claims{channels: ch}
		if _, err := tab.get(c.internKey(), ch, nil, nil); err != nil {
			t.Fatal(err)
		}
		if tab.len() > maxInterned || tab.bytes > maxInternedBytes {
			t.Fatalf("table holds %d sets, %d bytes", tab.len(), tab.bytes)
		}
	}
}

// TestIdentityBytes measures what an identity costs a server holding many:
// the 32-byte value in the connection plus one string of sub and info; the
// permission set is shared. 11-byte user ids and a 16-byte info.
func TestIdentityBytes(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector changes allocation sizes")
	}
	const n = 20000
	v := newVerifier(t, testConfig())
	k := signingKeys()[HS256]
	toks := make([][]byte, n)
	for i := range toks {
		c := baseClaims()
		c.Sub = fmt.Sprintf("user-%06d", i)
		c.Info = []byte(`{"name":"Alice"}`)
		toks[i] = []byte(mint(t, k, c, time.Hour))
	}
	ids := make([]Identity, n)
	if _, err := v.Verify(toks[0]); err != nil { // warm the pool and the intern table
		t.Fatal(err)
	}
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	for i, tok := range toks {
		id, err := v.Verify(tok)
		if err != nil {
			t.Fatal(err)
		}
		ids[i] = id
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	heap := float64(int64(after.HeapAlloc)-int64(before.HeapAlloc)) / n
	size := unsafe.Sizeof(Identity{})
	t.Logf("per identity: %d-byte value + %.1f heap bytes (sub 11 B + info 16 B); %d shared sets", size, heap, v.Stats().Interned)
	if size != 32 || heap > 40 {
		t.Fatalf("identity costs %d + %.1f bytes, want 32 + at most 40", size, heap)
	}
	runtime.KeepAlive(ids)
	runtime.KeepAlive(toks)
}
