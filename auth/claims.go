package auth

import (
	"errors"
	"fmt"
	"math"
	"time"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/golang-jwt/jwt/v5"
	"github.com/valyala/fastjson"

	"github.com/wsedge/wsedge/protocol"
)

// MaxSubLen is the longest accepted user id: the personal channel
// "user:<sub>" must fit in a channel name (protocol.MaxChannelLen).
const MaxSubLen = 250

// Claim bits, for refusing a claim that appears twice: two "sub" members
// could be read differently by the issuer and by us.
const (
	cSub = 1 << iota
	cExp
	cNbf
	cIat
	cIss
	cAud
	cChannels
	cPublish
	cSubs
	cInfo
)

var errNotObject = errors.New("claims are not a JSON object")

// claims is the decoding target handed to jwt's parser: it implements
// jwt.Claims for the library's exp/nbf/aud/iss checks, and json.Unmarshaler
// so that encoding/json (which the library calls) hands it the raw payload
// instead of decoding by reflection. fastjson then reads the members in one
// pass; byte slices alias the parser's buffer and are copied only when an
// Identity keeps them. One claims is used by one Verify call at a time
// (taken from the Verifier's pool).
//
// Type errors and limits are recorded in bad rather than returned, so that
// they are reported (as bad_claims) only once the signature has verified: a
// forged token is a bad signature whatever its payload.
type claims struct {
	jp  fastjson.Parser
	lim limits

	decoded bool
	named   uint16 // claims that appeared, null or not
	seen    uint16 // claims that appeared with a value
	bad     error

	sub           []byte
	exp, nbf, iat jwt.NumericDate
	iss           string
	aud           jwt.ClaimStrings
	channels      [][]byte
	publish       [][]byte
	subs          [][]byte
	info          []byte

	strs []byte // decoded strings; sized so that appends never move it
	raw  []byte // scratch for one value's JSON text
	key  []byte // intern key
	buf  []byte // the Identity's data string, built here
}

// limits are the per-token bounds a Verifier applies.
type limits struct {
	maxPatterns int
	maxInfo     int
	wantAud     bool // decode aud into strings (only then: it allocates)
	wantIss     bool
}

func (c *claims) reset() {
	c.decoded = false
	c.named, c.seen = 0, 0
	c.bad = nil
	c.sub = nil
	c.exp, c.nbf, c.iat = jwt.NumericDate{}, jwt.NumericDate{}, jwt.NumericDate{}
	c.iss = ""
	c.aud = c.aud[:0]
	c.channels = c.channels[:0]
	c.publish = c.publish[:0]
	c.subs = c.subs[:0]
	c.info = c.info[:0]
	c.strs = c.strs[:0]
}

func (c *claims) has(bit uint16) bool { return c.seen&bit != 0 }

func (c *claims) fail(format string, args ...any) {
	if c.bad == nil {
		c.bad = fmt.Errorf(format, args...)
	}
}

// UnmarshalJSON reads the payload. Only a payload that is not a JSON object
// is an error here (malformed); everything else is judged after the
// signature.
func (c *claims) UnmarshalJSON(data []byte) error {
	v, err := c.jp.ParseBytes(data)
	if err != nil {
		return err
	}
	o, err := v.Object()
	if err != nil {
		return errNotObject
	}
	c.decoded = true
	// Decoded strings are never longer than the payload: with this
	// capacity, decoding never grows strs.
	if cap(c.strs) < len(data) {
		c.strs = make([]byte, 0, len(data))
	}
	o.Visit(c.member)
	return nil
}

func (c *claims) member(k []byte, v *fastjson.Value) {
	var bit uint16
	switch string(k) {
	case "sub":
		bit = cSub
	case "exp":
		bit = cExp
	case "nbf":
		bit = cNbf
	case "iat":
		bit = cIat
	case "iss":
		bit = cIss
	case "aud":
		bit = cAud
	case "channels":
		bit = cChannels
	case "publish":
		bit = cPublish
	case "subs":
		bit = cSubs
	case "info":
		bit = cInfo
	default:
		return
	}
	if c.named&bit != 0 {
		c.fail("claim %q appears twice", k)
		return
	}
	c.named |= bit
	switch bit {
	case cInfo:
		c.infoClaim(v)
		return
	case cSub, cIss, cAud:
		// Strings are read from their JSON text before anything else
		// looks at them (see str).
		s, kind := c.str(v)
		switch {
		case kind == jsonNull:
			return
		case kind == jsonBadString:
			c.fail("%s: a string with an unpaired surrogate or a bad escape", k)
			return
		case kind == jsonString:
			c.seen |= bit
			c.strClaim(bit, s)
			return
		case bit != cAud:
			c.fail("%s: not a string", k)
			return
		}
	}
	if v.Type() == fastjson.TypeNull {
		return // null is absence; a required claim is then missing
	}
	c.seen |= bit
	switch bit {
	case cExp:
		c.exp = c.date("exp", v)
	case cNbf:
		c.nbf = c.date("nbf", v)
	case cIat:
		c.iat = c.date("iat", v)
	case cAud:
		c.audience(v)
	case cChannels:
		c.channels = c.list("channels", v, c.channels)
	case cPublish:
		c.publish = c.list("publish", v, c.publish)
	case cSubs:
		c.subs = c.list("subs", v, c.subs)
	}
}

// infoClaim keeps the info claim as compact JSON. The value is written back
// before anything inspects it: fastjson re-encodes a string it has
// unescaped with Go quoting (\x01), which is not JSON, while an untouched
// value comes back as it was parsed, blanks removed. The validity check
// holds that assumption, since the engine sends info to clients verbatim.
func (c *claims) infoClaim(v *fastjson.Value) {
	c.info = v.MarshalTo(c.info[:0])
	switch {
	case string(c.info) == "null":
		c.info = c.info[:0]
		return
	case len(c.info) > c.lim.maxInfo:
		c.fail("info: %d bytes of JSON, at most %d", len(c.info), c.lim.maxInfo)
	case fastjson.ValidateBytes(c.info) != nil:
		c.fail("info: cannot be re-encoded as JSON")
	}
	c.seen |= cInfo
}

// maxDate bounds exp, nbf and iat to about year 36800, far inside int64
// nanoseconds' reach when the library adds the leeway.
const maxDate = 1 << 40

func (c *claims) date(name string, v *fastjson.Value) jwt.NumericDate {
	f, err := v.Float64()
	if err != nil || v.Type() != fastjson.TypeNumber {
		c.fail("%s: not a number", name)
		return jwt.NumericDate{}
	}
	// RFC 7519 NumericDate may have a fraction; seconds are enough here
	// and flooring never lengthens a token's life by more than a second's part.
	f = math.Floor(max(min(f, maxDate), -maxDate))
	return jwt.NumericDate{Time: time.Unix(int64(f), 0)}
}

// strClaim stores a string claim read by str.
func (c *claims) strClaim(bit uint16, s []byte) {
	switch bit {
	case cSub:
		c.sub = s
	case cIss:
		if c.lim.wantIss {
			c.iss = string(s)
		}
	case cAud:
		if c.lim.wantAud {
			c.aud = append(c.aud, string(s))
		}
	}
}

// audience reads an aud that is not a single string: an array of strings.
func (c *claims) audience(v *fastjson.Value) {
	a, err := v.Array()
	if err != nil {
		c.fail("aud: not a string or an array of strings")
		return
	}
	if len(a) > c.lim.maxPatterns {
		c.fail("aud: %d entries, at most %d", len(a), c.lim.maxPatterns)
		return
	}
	for _, e := range a {
		s, kind := c.str(e)
		if kind != jsonString {
			c.fail("aud: not a string or an array of strings")
			return
		}
		c.strClaim(cAud, s)
	}
}

func (c *claims) list(name string, v *fastjson.Value, dst [][]byte) [][]byte {
	a, err := v.Array()
	if err != nil {
		c.fail("%s: not an array of strings", name)
		return dst
	}
	if len(a) > c.lim.maxPatterns {
		c.fail("%s: %d entries, at most %d", name, len(a), c.lim.maxPatterns)
		return dst
	}
	for _, e := range a {
		s, kind := c.str(e)
		if kind != jsonString {
			c.fail("%s: not an array of strings (or a string with an unpaired surrogate)", name)
			return dst
		}
		if len(s) > protocol.MaxChannelLen {
			c.fail("%s: an entry of %d bytes, at most %d", name, len(s), protocol.MaxChannelLen)
			return dst
		}
		dst = append(dst, s)
	}
	return dst
}

// Kinds of value str finds.
const (
	jsonOther = iota
	jsonNull
	jsonString
	jsonBadString
)

// str decodes a JSON string value strictly, into c.strs. fastjson's own
// unescaping is lenient where JSON decoders disagree: it keeps an unpaired
// surrogate escape as its six characters of text and drops the character
// after a high surrogate that is not followed by a low one, where
// encoding/json writes U+FFFD. The issuer's decoder and ours must agree on
// who the user is, so such strings are refused instead. The text comes from
// MarshalTo, which gives back an untouched string as it was parsed.
func (c *claims) str(v *fastjson.Value) ([]byte, int) {
	c.raw = v.MarshalTo(c.raw[:0])
	switch {
	case string(c.raw) == "null":
		return nil, jsonNull
	case len(c.raw) < 2 || c.raw[0] != '"':
		return nil, jsonOther
	}
	start := len(c.strs)
	out, ok := appendUnquoted(c.strs, c.raw[1:len(c.raw)-1])
	if !ok {
		return nil, jsonBadString
	}
	c.strs = out
	return out[start:len(out):len(out)], jsonString
}

// appendUnquoted appends the JSON string body s (without quotes), unescaped,
// to dst. It refuses bad escapes and unpaired surrogates.
func appendUnquoted(dst, s []byte) ([]byte, bool) {
	for i := 0; i < len(s); i++ {
		if s[i] != '\\' {
			dst = append(dst, s[i])
			continue
		}
		if i++; i == len(s) {
			return dst, false
		}
		switch s[i] {
		case '"', '\\', '/':
			dst = append(dst, s[i])
		case 'b':
			dst = append(dst, '\b')
		case 'f':
			dst = append(dst, '\f')
		case 'n':
			dst = append(dst, '\n')
		case 'r':
			dst = append(dst, '\r')
		case 't':
			dst = append(dst, '\t')
		case 'u':
			r, ok := hex4(s[i+1:])
			if !ok {
				return dst, false
			}
			i += 4
			if utf16.IsSurrogate(r) {
				lo, ok := rune(0), false
				if r < 0xdc00 && i+2 < len(s) && s[i+1] == '\\' && s[i+2] == 'u' {
					lo, ok = hex4(s[i+3:])
				}
				if !ok || lo < 0xdc00 || lo > 0xdfff {
					return dst, false
				}
				r = utf16.DecodeRune(r, lo)
				i += 6
			}
			dst = utf8.AppendRune(dst, r)
		default:
			return dst, false
		}
	}
	return dst, true
}

func hex4(s []byte) (rune, bool) {
	if len(s) < 4 {
		return 0, false
	}
	var r rune
	for _, c := range s[:4] {
		d, ok := unhex(c)
		if !ok {
			return 0, false
		}
		r = r<<4 | rune(d)
	}
	return r, true
}

func dateOrNil(d *jwt.NumericDate) *jwt.NumericDate {
	if d.Time.IsZero() {
		return nil
	}
	return d
}

// The jwt.Claims methods. They return pointers into c, so they do not
// allocate; the library uses them only during the Parse call.

func (c *claims) GetExpirationTime() (*jwt.NumericDate, error) { return dateOrNil(&c.exp), nil }
func (c *claims) GetNotBefore() (*jwt.NumericDate, error)      { return dateOrNil(&c.nbf), nil }
func (c *claims) GetIssuedAt() (*jwt.NumericDate, error)       { return dateOrNil(&c.iat), nil }
func (c *claims) GetIssuer() (string, error)                   { return c.iss, nil }
func (c *claims) GetSubject() (string, error)                  { return string(c.sub), nil }
func (c *claims) GetAudience() (jwt.ClaimStrings, error)       { return c.aud, nil }

// internKey encodes the three lists unambiguously (a count, then each entry
// with its length; entries are at most 255 bytes long by then) into c.key.
func (c *claims) internKey() []byte {
	k := c.key[:0]
	for _, l := range [...][][]byte{c.channels, c.publish, c.subs} {
		k = append(k, byte(len(l)))
		for _, s := range l {
			k = append(k, byte(len(s)))
			k = append(k, s...)
		}
	}
	c.key = k
	return k
}
