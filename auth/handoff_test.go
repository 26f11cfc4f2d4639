package auth

import (
	"testing"
)

func TestIdentityHandoffRoundTrip(t *testing.T) {
	p, err := compilePerms([][]byte{[]byte("chat:*"), []byte("user:{sub}")}, [][]byte{[]byte("chat:{sub}-*")}, [][]byte{[]byte("news:{sub}")})
	if err != nil {
		t.Fatal(err)
	}
	ids := []Identity{
		{},
		Unrestricted(),
		{data: "alice" + `{"n":1}`, subLen: 5, exp: 1_900_000_000, p: p},
	}
	for i, id := range ids {
		b := id.AppendBinary([]byte{0xee})
		got, n, err := DecodeIdentity(b[1:], nil)
		if err != nil || n != len(b)-1 {
			t.Fatalf("%d: %d/%d %v", i, n, len(b)-1, err)
		}
		if got.Sub() != id.Sub() || got.Info() != id.Info() || got.ExpiresUnix() != id.ExpiresUnix() || got.IsZero() != id.IsZero() {
			t.Fatalf("%d: got %+v want %+v", i, got, id)
		}
		for _, ch := range []string{"chat:x", "user:alice", "user:bob", "news:alice", "chat:alice-1", "x:y"} {
			if got.CanSubscribe([]byte(ch)) != id.CanSubscribe([]byte(ch)) || got.CanPublish([]byte(ch)) != id.CanPublish([]byte(ch)) {
				t.Fatalf("%d: permissions differ on %s", i, ch)
			}
		}
		if got.NumSubs() != id.NumSubs() {
			t.Fatalf("%d: subs %d want %d", i, got.NumSubs(), id.NumSubs())
		}
		for cut := range len(b) - 1 {
			if _, _, err := DecodeIdentity(b[1:1+cut], nil); err == nil && i == 2 {
				t.Fatalf("%d: a cut at %d decoded", i, cut)
			}
		}
	}
}

// FuzzIdentityDecode: whatever the bytes, DecodeIdentity refuses them or
// returns an identity whose patterns compiled (no panic in its checks).
func FuzzIdentityDecode(f *testing.F) {
	p, _ := compilePerms([][]byte{[]byte("chat:*")}, nil, [][]byte{[]byte("user:{sub}")})
	f.Add(Identity{data: "bob", subLen: 3, exp: 5, p: p}.AppendBinary(nil))
	f.Add(Unrestricted().AppendBinary(nil))
	f.Fuzz(func(t *testing.T, b []byte) {
		id, n, err := DecodeIdentity(b, nil)
		if err != nil {
			return
		}
		if n > len(b) || len(id.Sub()) > MaxSubLen {
			t.Fatalf("read %d of %d, sub %d", n, len(b), len(id.Sub()))
		}
		_ = id.CanSubscribe([]byte("chat:x"))
		for i := range id.NumSubs() {
			_ = id.AppendSub(nil, i)
		}
	})
}
