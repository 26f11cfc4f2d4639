package protocol

import (
	"errors"
	"strconv"
)

// Code is the code of an error reply, a plain value. The values follow HTTP
// status codes so that operators and clients read them without a table; the
// table is in docs/PROTOCOL.md.
type Code uint16

// Error reply codes.
const (
	CodeBadRequest       Code = 400 // bad JSON, unknown op, missing or bad field, bad channel name
	CodeUnauthorized     Code = 401 // a refresh token that does not verify or names another user
	CodePermissionDenied Code = 403 // the connection's permissions do not allow the command
	CodeUnknownNamespace Code = 404 // the channel's namespace is not configured
	CodeConflict         Code = 409 // already subscribed / not subscribed
	CodeTooLarge         Code = 413 // publication data or history limit over the configured maximum
	CodeRateLimited      Code = 429 // too many commands; persisting closes the connection with 1008
	CodeInternal         Code = 500 // a server bug or an unexpected broker error
	CodeUnavailable      Code = 503 // the broker (history, presence, cluster) is unavailable; retry later
)

// Canonical messages for replies whose cause is not a decoding error. The
// engine may use others; clients must act on the code, not the message.
const (
	MsgPermissionDenied  = "permission denied"
	MsgUnknownNamespace  = "unknown namespace"
	MsgAlreadySubscribed = "already subscribed"
	MsgNotSubscribed     = "not subscribed"
	MsgTooLarge          = "too large"
	MsgRateLimited       = "rate limited"
	MsgInternal          = "internal error"
	MsgUnavailable       = "unavailable"
	MsgOverloaded        = "overloaded"
	MsgTooManySubs       = "too many subscriptions"
)

// Sentinel errors wrapped by *Error, for errors.Is.
var (
	ErrBadJSON      = errors.New("protocol: bad JSON")
	ErrNotObject    = errors.New("protocol: message is not a JSON object")
	ErrUnknownOp    = errors.New("protocol: unknown op")
	ErrMissingField = errors.New("protocol: missing field")
	ErrBadField     = errors.New("protocol: bad field")
	ErrBadChannel   = errors.New("protocol: bad channel name")
)

// Error is a decoding error that the engine answers with an error reply
// {"id":ID,"error":{"code":Code,"message":Message}} while keeping the
// connection. ID is 0 when the command's id could not be read; a reply with
// id 0 therefore refers to a command the server could not identify.
//
// An Error is immutable once returned and safe to share between goroutines.
type Error struct {
	ID      uint64
	Code    Code
	Message string // client-facing, short, stable
	Err     error  // one of the sentinel errors, possibly wrapped with detail
}

func (e *Error) Error() string {
	s := e.Err.Error()
	if e.ID != 0 {
		s += " (command id " + strconv.FormatUint(e.ID, 10) + ")"
	}
	return s
}

// AppendReply appends the error reply for e (see AppendError). It does not
// allocate when dst has room.
func (e *Error) AppendReply(dst []byte) []byte {
	return AppendError(dst, e.ID, e.Code, e.Message)
}

// Unwrap returns the sentinel error.
func (e *Error) Unwrap() error { return e.Err }

// DisconnectCode, a plain value, is the code of a disconnect push, sent just before the
// server closes the connection so that every client (including browsers,
// which cannot always see close codes) learns why and whether to reconnect.
// The close frame that follows carries the WebSocket code the engine chooses
// (1001 on drain, 1008 policy, 1013 slow consumer) or the same 4xxx code when
// there is no standard one. All are in the 4000-4999 range that RFC 6455
// reserves for applications.
type DisconnectCode uint16

// Disconnect codes. Reconnect says whether a client should reconnect (with
// backoff) after receiving the code.
const (
	DisconnectNormal       DisconnectCode = 4000 // server closed the connection without a more specific reason
	DisconnectShutdown     DisconnectCode = 4001 // node draining or restarting; reconnect elsewhere
	DisconnectBadProtocol  DisconnectCode = 4002 // client violated the protocol repeatedly
	DisconnectInvalidToken DisconnectCode = 4003 // token invalid or revoked
	DisconnectTokenExpired DisconnectCode = 4004 // token expired and was not refreshed
	DisconnectSlow         DisconnectCode = 4005 // outbound queue overflowed (slow-consumer policy "close")
	DisconnectRateLimited  DisconnectCode = 4006 // rate limit exceeded persistently
	DisconnectForced       DisconnectCode = 4007 // disconnected by the application (ingest "disconnect user")
	DisconnectNoPong       DisconnectCode = 4008 // no traffic within the heartbeat timeout
	DisconnectNotReading   DisconnectCode = 4009 // replies left unread past the outbound bound for the outbound timeout
)

// Reconnect reports the reconnect hint documented for the code.
func (c DisconnectCode) Reconnect() bool {
	switch c {
	case DisconnectBadProtocol, DisconnectInvalidToken, DisconnectForced:
		return false
	}
	return true
}
