package auth

import "errors"

// Reason says why a token was refused. Each reason has a short text for the
// body of the 401 response and a stable label for metrics; both are part of
// the package's contract (operators alert on the labels). A plain value,
// usable from any goroutine.
type Reason uint8

// Reasons, one per failure. The zero Reason is not a refusal.
const (
	ReasonMissing      Reason = iota + 1 // no token in the request
	ReasonMalformed                      // not three base64url segments of JSON, oversized, bad header
	ReasonAlgNone                        // alg "none": never accepted
	ReasonAlgMismatch                    // alg not accepted, or not the algorithm of the key it names
	ReasonUnknownKid                     // no key with the token's kid (a JWKS refresh may be under way)
	ReasonBadSignature                   // the signature does not verify
	ReasonExpired                        // exp (plus leeway) has passed
	ReasonNotYetValid                    // nbf (minus leeway) has not come
	ReasonAudience                       // aud missing or not the configured audience
	ReasonIssuer                         // iss missing or not the configured issuer
	ReasonMissingSub                     // no sub, or an empty one
	ReasonMissingExp                     // no exp: every token must expire
	ReasonBadClaims                      // a claim of the wrong type, over a limit, or a bad pattern
	numReasons
)

var reasonText = [numReasons][2]string{
	ReasonMissing:      {"missing", "no token"},
	ReasonMalformed:    {"malformed", "malformed token"},
	ReasonAlgNone:      {"alg_none", "unsigned token"},
	ReasonAlgMismatch:  {"alg_mismatch", "algorithm not accepted"},
	ReasonUnknownKid:   {"unknown_kid", "unknown key"},
	ReasonBadSignature: {"bad_signature", "bad signature"},
	ReasonExpired:      {"expired", "token expired"},
	ReasonNotYetValid:  {"not_yet_valid", "token not yet valid"},
	ReasonAudience:     {"audience", "wrong audience"},
	ReasonIssuer:       {"issuer", "wrong issuer"},
	ReasonMissingSub:   {"missing_sub", "no subject"},
	ReasonMissingExp:   {"missing_exp", "no expiry"},
	ReasonBadClaims:    {"bad_claims", "bad claims"},
}

// Label is the reason's metric label (snake_case, stable).
func (r Reason) Label() string {
	if r == 0 || r >= numReasons {
		return "unknown"
	}
	return reasonText[r][0]
}

// Text is the short human text the engine sends in the 401 body. It names the
// failure without echoing anything from the token.
func (r Reason) Text() string {
	if r == 0 || r >= numReasons {
		return "unauthorized"
	}
	return reasonText[r][1]
}

// Error makes a Reason usable as a sentinel: errors.Is(err, ReasonExpired).
func (r Reason) Error() string { return "auth: " + r.Text() }

// Reasons lists every reason, for creating the metric series up front.
func Reasons() []Reason {
	rs := make([]Reason, 0, numReasons-1)
	for r := Reason(1); r < numReasons; r++ {
		rs = append(rs, r)
	}
	return rs
}

// ReasonOf returns the reason of an error returned by Verify, or 0 if err is
// nil or not an authentication failure.
func ReasonOf(err error) Reason {
	var r Reason
	if errors.As(err, &r) {
		return r
	}
	return 0
}

// Error is what Verify returns: the reason, and the library's error behind it
// for the debug log. Error() starts with the reason's text; the detail may
// quote parts of the token's header (alg, kid) but never the token itself.
// Read-only once returned, from any goroutine: refusals without detail
// share one value.
type Error struct {
	Reason Reason
	Err    error // the cause, possibly nil
}

func (e *Error) Error() string {
	if e.Err == nil {
		return e.Reason.Error()
	}
	return e.Reason.Error() + ": " + e.Err.Error()
}

// Unwrap exposes both the Reason (errors.Is(err, ReasonExpired)) and the
// cause (errors.Is(err, jwt.ErrTokenExpired)).
func (e *Error) Unwrap() []error {
	if e.Err == nil {
		return []error{e.Reason}
	}
	return []error{e.Reason, e.Err}
}
