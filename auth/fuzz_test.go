package auth

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/wsedge/wsedge/protocol"
)

// FuzzToken runs arbitrary tokens through Verify, and arbitrary payloads
// signed with the test secret (so that the claims path runs past the
// signature). Verify must never panic; a refusal must carry a known Reason
// and a zero Identity (and a signed payload is never refused for its
// signature or algorithm); an accepted token's Identity must stay within
// the limits and allow exactly what an independent reading of its claims
// allows, on channels probed around every pattern. Seeds live in
// testdata/fuzz/FuzzToken.
func FuzzToken(f *testing.F) {
	claims := `{"sub":"alice","exp":` + exp + `,"channels":["chat:*","user:{sub}"],"publish":["chat:*"],"subs":["user:{sub}"],"info":{"n":"A"}}`
	f.Add(hs256(header("HS256", ""), claims), []byte(claims))
	f.Add("Bearer x", []byte(`{"sub":"a*:b","exp":`+exp+`,"channels":["dm:{sub}:*","user:*"]}`))
	f.Add("a.b.c", []byte(`{"sub":"a","exp":`+exp+`,"sub":"b"}`))
	cfg := DefaultConfig()
	cfg.HMACSecret = testSecret
	k, err := HMACKey([]byte("a second secret, with a kid, 32B+"), "k1")
	if err != nil {
		f.Fatal(err)
	}
	cfg.Keys = []Key{k}
	cfg.Now = fixedNow
	v, err := New(cfg)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, token string, payload []byte) {
		checkToken(t, v, &cfg, []byte(token), false)
		checkToken(t, v, &cfg, []byte(hs256(header("HS256", ""), string(payload))), true)
	})
}

func checkToken(t *testing.T, v *Verifier, cfg *Config, tok []byte, signed bool) {
	id, err := v.Verify(tok)
	if err != nil {
		r := ReasonOf(err)
		if r == 0 || r >= numReasons || !id.IsZero() {
			t.Fatalf("refusal %v with reason %d and identity %+v", err, r, id)
		}
		if signed && (r == ReasonBadSignature || r == ReasonAlgNone || r == ReasonAlgMismatch || r == ReasonUnknownKid) {
			t.Fatalf("a token signed with the secret refused as %s: %v", r.Label(), err)
		}
		return
	}
	parts := strings.Split(string(tok), ".")
	payload, derr := base64.RawURLEncoding.DecodeString(parts[1])
	var m map[string]json.RawMessage
	if derr != nil || json.Unmarshal(payload, &m) != nil {
		t.Fatalf("accepted a token whose payload is not a JSON object: %q", tok)
	}
	var c struct {
		Sub                     string
		Channels, Publish, Subs []string
	}
	str := func(k string) string {
		var s string
		if raw, ok := m[k]; ok && json.Unmarshal(raw, &s) != nil {
			t.Fatalf("accepted %s %s", k, raw)
		}
		return s
	}
	list := func(k string) []string {
		var l []string
		if raw, ok := m[k]; ok && json.Unmarshal(raw, &l) != nil {
			t.Fatalf("accepted %s %s", k, raw)
		}
		if len(l) > cfg.MaxPatterns {
			t.Fatalf("accepted %d %s, over the cap", len(l), k)
		}
		return l
	}
	c.Sub, c.Channels, c.Publish, c.Subs = str("sub"), list("channels"), list("publish"), list("subs")

	sub := id.Sub()
	if sub != c.Sub || sub == "" || len(sub) > MaxSubLen || !utf8.ValidString(sub) {
		t.Fatalf("sub %q, claim %q", sub, c.Sub)
	}
	info := id.Info()
	if len(info) > cfg.MaxInfo || !utf8.ValidString(info) || info != "" && !json.Valid([]byte(info)) {
		t.Fatalf("info %q", info)
	}
	if raw, ok := m["info"]; ok && string(raw) != "null" {
		// Numbers as text: the info is passed on, never computed with.
		decode := func(b []byte) (v any, err error) {
			d := json.NewDecoder(bytes.NewReader(b))
			d.UseNumber()
			err = d.Decode(&v)
			return v, err
		}
		want, werr := decode(raw)
		got, gerr := decode([]byte(info))
		if werr != nil || gerr != nil || !reflect.DeepEqual(got, want) {
			t.Fatalf("info %s, claim %s", info, raw)
		}
	} else if info != "" {
		t.Fatalf("info %q without a claim", info)
	}
	if id.NumSubs() != len(c.Subs) {
		t.Fatalf("%d subs, claim has %d", id.NumSubs(), len(c.Subs))
	}
	for i, s := range c.Subs {
		ch := id.AppendSub(nil, i)
		if string(ch) != strings.ReplaceAll(s, subPlaceholder, sub) || !id.CanSubscribe(ch) {
			t.Fatalf("subs[%d] = %q from %q", i, ch, s)
		}
	}
	read := append(append([]string(nil), c.Channels...), c.Subs...)
	for _, ch := range probes(sub, read, c.Publish) {
		if got, want := id.CanSubscribe([]byte(ch)), modelRead(read, sub, ch); got != want {
			t.Fatalf("CanSubscribe(%q) = %v, claims %q (sub %q) say %v", ch, got, read, sub, want)
		}
		if got, want := id.CanPublish([]byte(ch)), modelAllowed(c.Publish, sub, ch); got != want {
			t.Fatalf("CanPublish(%q) = %v, claims %q (sub %q) say %v", ch, got, c.Publish, sub, want)
		}
	}
}

// probes are channel names around each pattern: the pattern itself, with
// its wildcard filled or dropped, one byte short or long, and in
// neighbouring namespaces, plus personal channels.
func probes(sub string, lists ...[]string) []string {
	ps := []string{"user:" + sub, "user:" + sub + "x", "user:" + sub + ":x", "user:x", "chat:x"}
	for _, l := range lists {
		for _, p := range l {
			base := strings.ReplaceAll(strings.TrimSuffix(p, "*"), subPlaceholder, sub)
			ps = append(ps, p, base, base+"x", base+":x", base[:max(len(base)-1, 0)])
			if ns, name, ok := strings.Cut(base, ":"); ok {
				ps = append(ps, ns+"-admin:"+name, ns+"x:"+name, ns[:len(ns)-1]+":"+name)
			}
		}
	}
	return ps
}

// modelRead is what the package documentation promises for reading,
// written without the compiled form.
func modelRead(patterns []string, sub, ch string) bool {
	if name, ok := strings.CutPrefix(ch, "user:"); ok && name != sub {
		return false
	}
	return modelAllowed(patterns, sub, ch)
}

func modelAllowed(patterns []string, sub, ch string) bool {
	if _, _, err := protocol.ParseChannel([]byte(ch)); err != nil {
		return false
	}
	for _, p := range patterns {
		base, wild := strings.CutSuffix(p, "*")
		full := strings.ReplaceAll(base, subPlaceholder, sub)
		if wild && strings.HasPrefix(ch, full) || !wild && ch == full {
			return true
		}
	}
	return false
}
