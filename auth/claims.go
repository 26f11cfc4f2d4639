package auth

import (
	"errors"
	"fmt"
	"math"
	"time"

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

	key []byte // intern key
	buf []byte // the Identity's data string, built here
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
	if bit == cInfo {
		c.infoClaim(v)
		return
	}
	if v.Type() == fastjson.TypeNull {
		return // null is absence; a required claim is then missing
	}
	c.seen |= bit
	switch bit {
	case cSub:
		s, err := v.StringBytes()
		if err != nil {
			c.fail("sub: not a string")
			return
		}
		c.sub = s
	case cExp:
		c.exp = c.date("exp", v)
	case cNbf:
		c.nbf = c.date("nbf", v)
	case cIat:
		c.iat = c.date("iat", v)
	case cIss:
		s, err := v.StringBytes()
		if err != nil {
			c.fail("iss: not a string")
			return
		}
		if c.lim.wantIss {
			c.iss = string(s)
		}
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

func (c *claims) audience(v *fastjson.Value) {
	switch v.Type() {
	case fastjson.TypeString:
		if c.lim.wantAud {
			s, _ := v.StringBytes()
			c.aud = append(c.aud, string(s))
		}
	case fastjson.TypeArray:
		a, _ := v.Array()
		if len(a) > c.lim.maxPatterns {
			c.fail("aud: %d entries, at most %d", len(a), c.lim.maxPatterns)
			return
		}
		for _, e := range a {
			s, err := e.StringBytes()
			if err != nil {
				c.fail("aud: not a string or an array of strings")
				return
			}
			if c.lim.wantAud {
				c.aud = append(c.aud, string(s))
			}
		}
	default:
		c.fail("aud: not a string or an array of strings")
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
		s, err := e.StringBytes()
		if err != nil {
			c.fail("%s: not an array of strings", name)
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
