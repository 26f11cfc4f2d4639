package protocol

// Op is a command operation, a plain value. The zero value is OpUnknown,
// which Decode never returns without an error.
type Op uint8

// Operations of wsedge.v1.json, named on the wire as String returns them.
const (
	OpUnknown Op = iota
	OpSubscribe
	OpUnsubscribe
	OpPublish
	OpHistory
	OpPresence
	OpPresenceStats
	OpPing
	OpRefresh
)

var opNames = [...]string{
	OpUnknown:       "unknown",
	OpSubscribe:     "subscribe",
	OpUnsubscribe:   "unsubscribe",
	OpPublish:       "publish",
	OpHistory:       "history",
	OpPresence:      "presence",
	OpPresenceStats: "presence_stats",
	OpPing:          "ping",
	OpRefresh:       "refresh",
}

// String returns the op's wire name ("subscribe", ...). It does not allocate.
func (o Op) String() string {
	if int(o) < len(opNames) {
		return opNames[o]
	}
	return "unknown"
}

// parseOp maps a wire name to its Op; it does not allocate.
func parseOp(b []byte) Op {
	switch string(b) {
	case "subscribe":
		return OpSubscribe
	case "unsubscribe":
		return OpUnsubscribe
	case "publish":
		return OpPublish
	case "history":
		return OpHistory
	case "presence":
		return OpPresence
	case "presence_stats":
		return OpPresenceStats
	case "ping":
		return OpPing
	case "refresh":
		return OpRefresh
	}
	return OpUnknown
}

// needsChannel reports whether the op requires the "channel" field.
func (o Op) needsChannel() bool {
	switch o {
	case OpSubscribe, OpUnsubscribe, OpPublish, OpHistory, OpPresence, OpPresenceStats:
		return true
	}
	return false
}
