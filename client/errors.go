package client

import (
	"errors"
	"fmt"
	"time"
)

// Errors returned by the Client's methods; server error replies are
// *Error, a refusal to reconnect is *DisconnectError.
var (
	// ErrClosed: the client was closed (or ended after a disconnect that
	// forbids reconnecting) before the call completed.
	ErrClosed = errors.New("client: closed")
	// ErrQueueFull: a publish issued while disconnected found the offline
	// queue full; nothing was queued.
	ErrQueueFull = errors.New("client: offline queue full")
	// ErrTimeout: no reply within the command timeout (or the publish
	// waited in the offline queue that long). A publish that timed out
	// after it was sent may still have been applied.
	ErrTimeout = errors.New("client: command timed out")
	// ErrConnectionLost: the connection ended after the command was sent
	// and before its reply. A publish may or may not have been applied;
	// the client never resends it by itself, so it is never applied twice.
	ErrConnectionLost = errors.New("client: connection lost before the reply")
	// ErrOffline: a publish while disconnected with the offline queue off.
	ErrOffline = errors.New("client: not connected")
	// ErrBadData: publish data that is not one valid JSON value.
	ErrBadData = errors.New("client: data is not valid JSON")
	// ErrBadChannel: a channel name the protocol rejects.
	ErrBadChannel = errors.New("client: bad channel name")
	// ErrAlreadySubscribed: Subscribe on a channel this client has a
	// subscription to.
	ErrAlreadySubscribed = errors.New("client: already subscribed")
	// ErrRefused: the server refused the upgrade for good (HTTP 400, 401,
	// 403, 404); the client does not retry.
	ErrRefused = errors.New("client: connection refused by the server")
)

// Error is a server's error reply to a command.
type Error struct {
	Code    int    // 400, 403, 404, 409, 413, 429, 500, 503 (docs/PROTOCOL.md)
	Message string // for humans; act on Code
}

func (e *Error) Error() string { return fmt.Sprintf("client: server error %d: %s", e.Code, e.Message) }

// DisconnectError is the server's disconnect push that ended the client:
// one with reconnect false (4002 bad protocol, 4003 invalid token, 4007
// forced).
type DisconnectError struct {
	Code      int
	Reason    string
	Reconnect bool
	Delay     time.Duration
}

func (e *DisconnectError) Error() string {
	return fmt.Sprintf("client: disconnected by the server: %d %s", e.Code, e.Reason)
}

// Is lets errors.Is(err, ErrClosed) hold for a terminal disconnect.
func (e *DisconnectError) Is(target error) bool { return target == ErrClosed && !e.Reconnect }

func errorf(format string, args ...any) error { return fmt.Errorf("client: "+format, args...) }
