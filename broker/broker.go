package broker

import (
	"context"
	"errors"
	"time"
)

// Errors returned by implementations, for errors.Is.
var (
	ErrClosed     = errors.New("broker: closed")
	ErrNoHandler  = errors.New("broker: Subscribe before SetHandler")
	ErrBadOptions = errors.New("broker: negative history size or TTL")
)

// Publication is one message of a channel, a value safe to copy and share
// between goroutines. Data is shared by the history, the handler and every
// History result: it is immutable, nobody may modify it, and it stays valid
// as long as it is referenced.
type Publication struct {
	Offset uint64 // 1, 2, ... within a stream; 0 on a channel without history
	Epoch  string // the stream's epoch; "" on a channel without history
	Data   []byte
}

// StreamPosition, a plain value, is a place in a channel's history stream: the offset of
// the last publication and the stream's epoch. A new epoch means the stream
// was lost and restarted (offsets start again at 1): offsets of different
// epochs are unrelated.
type StreamPosition struct {
	Offset uint64
	Epoch  string
}

// PublishOptions, a plain value, says how a publication is kept. They normally come from the
// channel's namespace and are the same for every publish on a channel.
type PublishOptions struct {
	// HistorySize keeps the last HistorySize publications of the channel.
	// 0 keeps none: the publication is only delivered, with offset 0, and
	// the channel's stream is not touched.
	HistorySize int
	// HistoryTTL drops a publication HistoryTTL after it was published, and
	// the whole stream (offset and epoch with it) HistoryTTL after its last
	// publication. 0 keeps them until they are trimmed by size or removed.
	HistoryTTL time.Duration
}

// HistoryRequest, a plain value built by the caller, selects publications
// from a channel's stream. The broker does not retain it or Since.
type HistoryRequest struct {
	// Since, when set, asks for the publications after Since.Offset in epoch
	// Since.Epoch (recovery), oldest first. Without it the newest
	// publications are returned, oldest first.
	Since *StreamPosition
	// Limit caps the number of publications: NoLimit (any negative value)
	// returns all that match, > 0 at most Limit (with Since: the Limit
	// oldest after Since.Offset; without: the Limit newest), 0 none (the
	// position and Recovered only). protocol.Command.Limit maps onto it
	// unchanged.
	Limit int
}

// NoLimit is HistoryRequest.Limit asking for every matching publication.
const NoLimit = -1

// HistoryResult is the answer to History, owned by the caller.
type HistoryResult struct {
	// Position is the stream's current position. History on a channel
	// without a stream creates an empty one, so Position.Epoch is never
	// empty and the next publication keeps it: a client that subscribed to
	// an empty channel can recover from {0, epoch}. An implementation may
	// bound the empty streams of channels nobody subscribes to and drop
	// them; the channel's next stream then has a new epoch, so recovery
	// from the old position answers Recovered false, never true.
	Position StreamPosition
	// Publications are in offset order, without gaps. A fresh slice the
	// caller owns; the Data inside is shared and immutable.
	Publications []Publication
	// Recovered is true only when Since was given, its epoch is the
	// stream's, and Publications holds every publication after
	// Since.Offset: none was lost to trimming or expiry and Limit did not
	// cut the list. The engine answers "recovered" with it; when false the
	// client must refetch its state.
	Recovered bool
}

// Handler receives every publication on a subscribed channel, including
// those published through this node. Per channel it is called in offset
// order without gaps (publications of channels without history come in
// publish order). It runs on a broker or publisher goroutine, possibly
// holding an internal lock: it must be fast, must not block, and must not
// call back into the broker.
type Handler func(channel string, pub Publication)

// Broker assigns offsets, keeps history and delivers publications between
// nodes. Implementations are safe for concurrent use; every method takes a
// context and returns its error (or ErrClosed after Close).
type Broker interface {
	// SetHandler sets the publication handler. Call it once, before the
	// first Subscribe.
	SetHandler(h Handler)
	// Subscribe makes the handler receive the channel's publications,
	// published on any node, from now on. Idempotent; it is not reference
	// counted. Returns ErrNoHandler before SetHandler.
	Subscribe(ctx context.Context, channel string) error
	// Unsubscribe stops delivery of the channel. Idempotent.
	Unsubscribe(ctx context.Context, channel string) error
	// Publish appends data to the channel's stream (when
	// opts.HistorySize > 0), assigning the next offset (the first is 1), and
	// delivers it to every node subscribed to the channel. The broker copies
	// data; the caller may reuse it on return. The returned position is the
	// publication's offset and epoch ({0, ""} without history).
	Publish(ctx context.Context, channel string, data []byte, opts PublishOptions) (StreamPosition, error)
	// History returns the channel's position and publications; see
	// HistoryRequest and HistoryResult.
	History(ctx context.Context, channel string, req HistoryRequest) (HistoryResult, error)
	// RemoveHistory drops the channel's stream: the next History or
	// Publish starts a new one with a new epoch.
	RemoveHistory(ctx context.Context, channel string) error
	// Close releases the broker's resources and goroutines. Idempotent;
	// later calls of other methods return ErrClosed.
	Close() error
}

// ClientInfo, a plain value, describes one connection present in a channel.
// Info is an optional JSON value supplied by the application (from the
// token); the manager copies it on AddPresence, and the Info of a returned
// ClientInfo is shared and immutable.
type ClientInfo struct {
	ClientID string
	UserID   string
	Info     []byte
}

// PresenceStats, a plain value, counts a channel's presence.
type PresenceStats struct {
	// NumClients counts connections.
	NumClients int
	// NumUsers counts the distinct non-empty user ids plus every anonymous
	// connection (empty UserID) on its own: nothing says two anonymous
	// connections are the same person, so a channel of 500 anonymous
	// viewers has 500 users, not one.
	NumUsers int
}

// PresenceManager tracks who is present in which channel. Implementations
// are safe for concurrent use. A cluster implementation may expire entries
// that are not refreshed (by calling AddPresence again) within its TTL; the
// memory one keeps them until removed.
type PresenceManager interface {
	// AddPresence adds or replaces info.ClientID in the channel.
	AddPresence(ctx context.Context, channel string, info ClientInfo) error
	// RemovePresence removes the client from the channel. Idempotent.
	RemovePresence(ctx context.Context, channel, clientID string) error
	// Presence returns the channel's clients by client id, in a fresh map
	// the caller owns (Info inside is shared and immutable).
	Presence(ctx context.Context, channel string) (map[string]ClientInfo, error)
	// PresenceStats returns the exact counts of clients and users, as
	// PresenceStats.NumUsers defines them.
	PresenceStats(ctx context.Context, channel string) (PresenceStats, error)
	// Close releases resources. Idempotent; later calls return ErrClosed.
	Close() error
}
