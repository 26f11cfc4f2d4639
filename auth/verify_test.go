package auth

import (
	"crypto/rsa"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
)

func TestVerifyAlgorithms(t *testing.T) {
	byKid := newVerifier(t, testConfig())
	cfg := testConfig()
	for i := range cfg.Keys {
		cfg.Keys[i].kid = ""
	}
	withoutKid := newVerifier(t, cfg)
	for _, a := range allAlgs {
		t.Run(a.String(), func(t *testing.T) {
			k := signingKeys()[a]
			for _, withKid := range []bool{true, false} {
				kk, v := k, byKid
				if !withKid {
					kk.kid, v = "", withoutKid
				}
				tok := mint(t, kk, baseClaims(), time.Hour)
				id, err := v.Verify([]byte(tok))
				if err != nil {
					t.Fatalf("kid %v: %v", withKid, err)
				}
				if id.Sub() != "alice" || id.Info() != `{"name":"Alice"}` {
					t.Fatalf("sub %q info %q", id.Sub(), id.Info())
				}
				if want := t0.Add(59 * time.Minute); !id.Expires().Equal(want) || id.ExpiresUnix() != want.Unix() {
					t.Fatalf("expires %v, want %v", id.Expires(), want)
				}
				if id.NumSubs() != 1 || string(id.AppendSub(nil, 0)) != "user:alice" {
					t.Fatalf("subs %d %q", id.NumSubs(), id.AppendSub(nil, 0))
				}
			}
		})
	}
}

// header makes a JOSE header for hand-built tokens.
func header(alg, kid string) string {
	if kid == "" {
		return fmt.Sprintf(`{"alg":%q,"typ":"JWT"}`, alg)
	}
	return fmt.Sprintf(`{"alg":%q,"typ":"JWT","kid":%q}`, alg, kid)
}

// exp is a valid exp claim at t0.
var exp = fmt.Sprint(t0.Add(time.Hour).Unix())

func TestVerifyReasons(t *testing.T) {
	keys := signingKeys()
	otherRSA, err := rsa.GenerateKey(randReader{}, 2048)
	if err != nil {
		t.Fatal(err)
	}
	forgedRS, _ := NewKey(otherRSA, "rs1")
	noKid := func(a Alg) Key { k := keys[a]; k.kid = ""; return k }
	c := func(mod func(*Claims)) Claims { cl := baseClaims(); mod(&cl); return cl }
	pay := func(s string) string { return hs256(header("HS256", ""), s) }
	tooMany := `"` + strings.Repeat(`chat:a","`, 64) + `chat:b"`

	tests := []struct {
		name  string
		token string
		cfg   func(*Config)
		want  Reason
	}{
		{"empty", "", nil, ReasonMissing},
		{"one segment", "abc", nil, ReasonMalformed},
		{"two segments", "abc.def", nil, ReasonMalformed},
		{"four segments", "a.b.c.d", nil, ReasonMalformed},
		{"header not base64", "!!!." + strings.Split(pay(`{}`), ".")[1] + ".sig", nil, ReasonMalformed},
		{"header not JSON", hs256(`{"alg":`, `{"sub":"a","exp":`+exp+`}`), nil, ReasonMalformed},
		{"header without alg", hs256(`{"typ":"JWT"}`, `{"sub":"a","exp":`+exp+`}`), nil, ReasonMalformed},
		{"claims not JSON", pay(`{"sub":`), nil, ReasonMalformed},
		{"claims null", pay(`null`), nil, ReasonMalformed},
		{"claims array", pay(`["sub"]`), nil, ReasonMalformed},
		{"claims string", pay(`"sub"`), nil, ReasonMalformed},
		{"too long", "a." + strings.Repeat("b", MaxTokenLen) + ".c", nil, ReasonMalformed},
		{"crit header", hs256(`{"alg":"HS256","crit":["b64"],"b64":false}`, `{"sub":"a","exp":`+exp+`}`), nil, ReasonMalformed},
		{"kid not a string", hs256(`{"alg":"HS256","kid":7}`, `{"sub":"a","exp":`+exp+`}`), nil, ReasonMalformed},
		{"padded signature", pay(`{"sub":"a","exp":`+exp+`}`) + "=", nil, ReasonMalformed},

		{"alg none", hs256(`{"alg":"none"}`, `{"sub":"a","exp":`+exp+`}`)[:strings.LastIndexByte(hs256(`{"alg":"none"}`, `{"sub":"a","exp":`+exp+`}`), '.')+1], nil, ReasonAlgNone},
		{"alg none signed", hs256(`{"alg":"none"}`, `{"sub":"a","exp":`+exp+`}`), nil, ReasonAlgNone},
		{"alg NONE", hs256(`{"alg":"NONE"}`, `{"sub":"a","exp":`+exp+`}`), nil, ReasonAlgNone},

		{"alg HS384", mintWith(t, jwt.SigningMethodHS384, testSecret, `{"sub":"a","exp":`+exp+`}`), nil, ReasonAlgMismatch},
		{"alg unknown", hs256(`{"alg":"HS999"}`, `{"sub":"a","exp":`+exp+`}`), nil, ReasonAlgMismatch},
		{"alg of another key (kid of the HMAC key)", hs256(header("RS256", "hs1"), `{"sub":"a","exp":`+exp+`}`), nil, ReasonAlgMismatch},
		{"HS256 signed with an RSA public key's bytes", mintWith(t, jwt.SigningMethodHS256, []byte(fmt.Sprint(keys[RS256].Public().mat)), `{"sub":"a","exp":`+exp+`}`, "kid", "rs1"), nil, ReasonAlgMismatch},
		{"alg without any key", mint(t, noKid(ES256), baseClaims(), time.Hour), func(c *Config) { c.Keys = c.Keys[:1] }, ReasonAlgMismatch},

		{"unknown kid", mint(t, Key{alg: RS256, kid: "nope", mat: keys[RS256].mat}, baseClaims(), time.Hour), nil, ReasonUnknownKid},
		{"no kid, keys only with kid", mint(t, noKid(RS256), baseClaims(), time.Hour), func(c *Config) {
			c.Keys = []Key{keys[HS256], keys[RS256].Public()}
		}, ReasonUnknownKid},

		{"tampered payload", tamper(mint(t, keys[HS256], baseClaims(), time.Hour)), nil, ReasonBadSignature},
		{"other secret", mint(t, mustHMAC(t, "another secret of at least 32 bytes!"), baseClaims(), time.Hour), nil, ReasonBadSignature},
		{"forged RS256 with a known kid", mint(t, forgedRS, baseClaims(), time.Hour), nil, ReasonBadSignature},
		{"bad signature and bad claims", tamper(hs256(header("HS256", ""), `{"sub":7,"exp":`+exp+`,"x":"a"}`)), nil, ReasonBadSignature},
		{"signature of another alg's length", hs256(header("HS256", ""), `{"sub":"a","exp":`+exp+`}`)[:40], nil, ReasonMalformed},

		{"expired", mint(t, keys[HS256], c(func(c *Claims) { c.IssuedAt = t0.Add(-2 * time.Hour) }), time.Hour), nil, ReasonExpired},
		{"expired at this second", mint(t, keys[HS256], c(func(c *Claims) { c.IssuedAt = t0.Add(-time.Hour) }), time.Hour), nil, ReasonExpired},
		{"not yet valid", mint(t, keys[HS256], c(func(c *Claims) { c.NotBefore = t0.Add(time.Minute) }), time.Hour), nil, ReasonNotYetValid},

		{"wrong audience", mint(t, keys[HS256], c(func(c *Claims) { c.Audience = "other" }), time.Hour), func(c *Config) { c.Audience = "wsedge" }, ReasonAudience},
		{"no audience", mint(t, keys[HS256], baseClaims(), time.Hour), func(c *Config) { c.Audience = "wsedge" }, ReasonAudience},
		{"wrong issuer", mint(t, keys[HS256], c(func(c *Claims) { c.Issuer = "evil" }), time.Hour), func(c *Config) { c.Issuer = "https://id.example" }, ReasonIssuer},
		{"no issuer", mint(t, keys[HS256], baseClaims(), time.Hour), func(c *Config) { c.Issuer = "https://id.example" }, ReasonIssuer},

		{"no sub", pay(`{"exp":` + exp + `}`), nil, ReasonMissingSub},
		{"empty sub", pay(`{"sub":"","exp":` + exp + `}`), nil, ReasonMissingSub},
		{"null sub", pay(`{"sub":null,"exp":` + exp + `}`), nil, ReasonMissingSub},
		{"no exp", pay(`{"sub":"a"}`), nil, ReasonMissingExp},
		{"null exp", pay(`{"sub":"a","exp":null}`), nil, ReasonMissingExp},

		{"sub with an unpaired high surrogate", pay(`{"sub":"a\ud800","exp":` + exp + `}`), nil, ReasonBadClaims},
		{"sub with an unpaired low surrogate", pay(`{"sub":"\udc00a","exp":` + exp + `}`), nil, ReasonBadClaims},
		{"sub with a high surrogate before another escape", pay(`{"sub":"\ud800\u0041","exp":` + exp + `}`), nil, ReasonBadClaims},
		{"channels with an unpaired surrogate", pay(`{"sub":"a","exp":` + exp + `,"channels":["chat:\ud800"]}`), nil, ReasonBadClaims},
		{"sub not a string", pay(`{"sub":7,"exp":` + exp + `}`), nil, ReasonBadClaims},
		{"exp a string", pay(`{"sub":"a","exp":"` + exp + `"}`), nil, ReasonBadClaims},
		{"sub twice", pay(`{"sub":"a","sub":"b","exp":` + exp + `}`), nil, ReasonBadClaims},
		{"sub twice, first null", pay(`{"sub":null,"sub":"b","exp":` + exp + `}`), nil, ReasonBadClaims},
		{"sub twice, escaped", pay(`{"sub":"a","s\u0075b":"b","exp":` + exp + `}`), nil, ReasonBadClaims},
		{"sub too long", pay(`{"sub":"` + strings.Repeat("a", MaxSubLen+1) + `","exp":` + exp + `}`), nil, ReasonBadClaims},
		{"sub with a newline", pay(`{"sub":"a\nb","exp":` + exp + `}`), nil, ReasonBadClaims},
		{"sub invalid UTF-8", pay("{\"sub\":\"a\xffb\",\"exp\":" + exp + "}"), nil, ReasonBadClaims},
		{"channels a string", pay(`{"sub":"a","exp":` + exp + `,"channels":"chat:*"}`), nil, ReasonBadClaims},
		{"channels with a number", pay(`{"sub":"a","exp":` + exp + `,"channels":["chat:*",1]}`), nil, ReasonBadClaims},
		{"channels without namespace", pay(`{"sub":"a","exp":` + exp + `,"channels":["chat"]}`), nil, ReasonBadClaims},
		{"channels with inner star", pay(`{"sub":"a","exp":` + exp + `,"channels":["chat:a*b"]}`), nil, ReasonBadClaims},
		{"channels all namespaces", pay(`{"sub":"a","exp":` + exp + `,"channels":["*:*"]}`), nil, ReasonBadClaims},
		{"channels over the cap", pay(`{"sub":"a","exp":` + exp + `,"channels":[` + tooMany + `]}`), nil, ReasonBadClaims},
		{"publish with a space", pay(`{"sub":"a","exp":` + exp + `,"publish":["chat:a b"]}`), nil, ReasonBadClaims},
		{"subs with a star", pay(`{"sub":"a","exp":` + exp + `,"subs":["chat:*"]}`), nil, ReasonBadClaims},
		{"subs of another user", pay(`{"sub":"a","exp":` + exp + `,"subs":["user:b"]}`), nil, ReasonBadClaims},
		{"subs not a channel for this sub", pay(`{"sub":"a b","exp":` + exp + `,"subs":["user:{sub}"]}`), nil, ReasonBadClaims},
		{"info over the cap", pay(`{"sub":"a","exp":` + exp + `,"info":"` + strings.Repeat("x", 1024) + `"}`), nil, ReasonBadClaims},
		{"info invalid UTF-8", pay("{\"sub\":\"a\",\"exp\":" + exp + ",\"info\":\"\xff\"}"), nil, ReasonBadClaims},
		{"aud a number", pay(`{"sub":"a","exp":` + exp + `,"aud":1}`), nil, ReasonBadClaims},
		{"bad claims win over expiry", pay(`{"sub":7,"exp":1}`), nil, ReasonBadClaims},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg := testConfig()
			if tt.cfg != nil {
				tt.cfg(&cfg)
			}
			v := newVerifier(t, cfg)
			id, err := v.Verify([]byte(tt.token))
			if got := ReasonOf(err); got != tt.want {
				t.Fatalf("reason %v (%v), want %v", got.Label(), err, tt.want.Label())
			}
			if !id.IsZero() {
				t.Fatal("a refused token yields a non-zero identity")
			}
			var ae *Error
			if !errors.As(err, &ae) || !errors.Is(err, tt.want) {
				t.Fatalf("%T %v is not an *Error wrapping %v", err, err, tt.want)
			}
			if !strings.HasPrefix(err.Error(), "auth: "+tt.want.Text()) {
				t.Fatalf("error text %q", err)
			}
		})
	}
}

// Escaped user ids decode as every JSON decoder decodes them.
func TestVerifySubEscapes(t *testing.T) {
	v := newVerifier(t, testConfig())
	for raw, want := range map[string]string{
		`CORP\\alice`:   `CORP\alice`,
		`\ud83d\ude00`:  "\U0001F600",
		`\u0061\/b\"c`:  `a/b"c`,
		`caf\u00e9`:     "café",
		`caf\u00E9`:     "café",
		"caf\u00e9 bar": "caf\u00e9 bar",
	} {
		id, err := v.Verify([]byte(hs256(header("HS256", ""), `{"sub":"`+raw+`","exp":`+exp+`}`)))
		if err != nil || id.Sub() != want {
			t.Errorf("sub %s: %q %v, want %q", raw, id.Sub(), err, want)
		}
	}
}

func TestAppendUnquoted(t *testing.T) {
	for _, s := range []string{``, `abc`, `\"\\\/\b\f\n\r\t`, `\u0000\u001f\u007F\u00ff\u0100\uffff`, `\ud800\udc00\udbff\udfff`, "raw \xe2\x82\xac"} {
		var want string
		if err := json.Unmarshal([]byte(`"`+s+`"`), &want); err != nil {
			t.Fatal(err)
		}
		got, ok := appendUnquoted([]byte("x"), []byte(s))
		if !ok || string(got) != "x"+want {
			t.Errorf("%s: %q %v, want %q", s, got, ok, want)
		}
	}
	for _, s := range []string{`\`, `\x`, `\u12`, `\u12g4`, `\ud800`, `\udc00`, `\ud800\u0041`, `\ud800\ud800`, `\ud800x\udc00`} {
		if got, ok := appendUnquoted(nil, []byte(s)); ok {
			t.Errorf("%s: accepted as %q", s, got)
		}
	}
}

func TestVerifyLeeway(t *testing.T) {
	expired := Claims{Sub: "a", IssuedAt: t0.Add(-time.Hour - 5*time.Second)}
	early := Claims{Sub: "a", IssuedAt: t0, NotBefore: t0.Add(5 * time.Second)}
	for _, tt := range []struct {
		leeway time.Duration
		want   Reason
	}{{0, ReasonExpired}, {4 * time.Second, ReasonExpired}, {6 * time.Second, 0}} {
		cfg := testConfig()
		cfg.Leeway = tt.leeway
		v := newVerifier(t, cfg)
		if _, err := v.Verify([]byte(mint(t, signingKeys()[HS256], expired, time.Hour))); ReasonOf(err) != tt.want {
			t.Errorf("leeway %v, expired 5s ago: %v, want %v", tt.leeway, err, tt.want.Label())
		}
		want := tt.want
		if want == ReasonExpired {
			want = ReasonNotYetValid
		}
		if _, err := v.Verify([]byte(mint(t, signingKeys()[HS256], early, time.Hour))); ReasonOf(err) != want {
			t.Errorf("leeway %v, valid in 5s: %v, want %v", tt.leeway, err, want.Label())
		}
	}
}

// The alg of a token must be the alg of its key even when the library would
// accept the key for both (an HMAC secret in a JWKS is []byte like any
// HS256 key; an RSA key verifies RS256 only).
func TestVerifyKeyCarriesAlg(t *testing.T) {
	keys := signingKeys()
	v := newVerifier(t, testConfig())
	for _, a := range allAlgs {
		for _, b := range allAlgs {
			if a == b {
				continue
			}
			// Token claims alg b but names a's kid.
			k := keys[b]
			k.kid = keys[a].kid
			_, err := v.Verify([]byte(mint(t, k, baseClaims(), time.Hour)))
			if ReasonOf(err) != ReasonAlgMismatch {
				t.Errorf("%v token with the kid of the %v key: %v", b, a, err)
			}
		}
	}
}

func TestReasons(t *testing.T) {
	labels, texts := map[string]bool{}, map[string]bool{}
	rs := Reasons()
	if len(rs) != int(numReasons)-1 {
		t.Fatalf("%d reasons", len(rs))
	}
	for _, r := range rs {
		if labels[r.Label()] || texts[r.Text()] || r.Label() == "unknown" {
			t.Fatalf("reason %d: label %q or text %q not unique", r, r.Label(), r.Text())
		}
		labels[r.Label()], texts[r.Text()] = true, true
		for _, c := range r.Label() {
			if !(c >= 'a' && c <= 'z' || c == '_') {
				t.Fatalf("label %q is not snake_case", r.Label())
			}
		}
	}
	if ReasonOf(nil) != 0 || ReasonOf(errors.New("x")) != 0 || Reason(0).Label() != "unknown" || numReasons.Text() != "unauthorized" {
		t.Fatal("zero and out-of-range reasons")
	}
	err := error(&Error{Reason: ReasonExpired, Err: fmt.Errorf("wrapped: %w", jwt.ErrTokenExpired)})
	if ReasonOf(fmt.Errorf("ctx: %w", err)) != ReasonExpired || !errors.Is(err, jwt.ErrTokenExpired) {
		t.Fatal("Error does not unwrap to its reason and cause")
	}
}

func TestConfigValidate(t *testing.T) {
	tests := []struct {
		field string
		mod   func(*Config)
	}{
		{"keys", func(c *Config) { c.Keys, c.HMACSecret = nil, nil }},
		{"HMACSecret", func(c *Config) { c.HMACSecret = []byte("short") }},
		{"Keys[1]", func(c *Config) { c.Keys = append(c.Keys[:1], Key{}) }},
		{"JWKS", func(c *Config) { c.JWKS = "ftp://x/jwks" }},
		{"JWKSRefresh", func(c *Config) { c.JWKS, c.JWKSRefresh = "/x", 0 }},
		{"JWKSMinInterval", func(c *Config) { c.JWKS, c.JWKSMinInterval = "/x", time.Hour }},
		{"JWKSTimeout", func(c *Config) { c.JWKS, c.JWKSTimeout = "/x", 0 }},
		{"Leeway", func(c *Config) { c.Leeway = -time.Second }},
		{"MaxPatterns", func(c *Config) { c.MaxPatterns = 256 }},
		{"MaxInfo", func(c *Config) { c.MaxInfo = 1 << 20 }},
	}
	good := testConfig()
	if err := good.Validate(); err != nil {
		t.Fatal(err)
	}
	for _, tt := range tests {
		c := testConfig()
		tt.mod(&c)
		err := c.Validate()
		if !errors.Is(err, ErrConfig) || !strings.Contains(err.Error(), tt.field+":") {
			t.Errorf("%s: %v", tt.field, err)
		}
		if _, err := New(c); !errors.Is(err, ErrConfig) {
			t.Errorf("New with bad %s: %v", tt.field, err)
		}
	}
}

// tamper changes the payload's first letter a into b, keeping the signature.
func tamper(tok string) string {
	parts := strings.Split(tok, ".")
	p, err := base64.RawURLEncoding.DecodeString(parts[1])
	if err != nil {
		panic(err)
	}
	return parts[0] + "." + enc64(strings.Replace(string(p), "a", "b", 1)) + "." + parts[2]
}

func mustHMAC(t *testing.T, secret string) Key {
	k, err := HMACKey([]byte(secret), "")
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// mintWith signs payload with a jwt method wsedge's Mint does not offer.
func mintWith(t *testing.T, m jwt.SigningMethod, key any, payload string, hdr ...string) string {
	t.Helper()
	tok := jwt.New(m)
	for i := 0; i+1 < len(hdr); i += 2 {
		tok.Header[hdr[i]] = hdr[i+1]
	}
	h, err := tok.SigningString()
	if err != nil {
		t.Fatal(err)
	}
	h = h[:strings.IndexByte(h, '.')+1] + enc64(payload)
	sig, err := m.Sign(h, key)
	if err != nil {
		t.Fatal(err)
	}
	return h + "." + enc64(string(sig))
}
