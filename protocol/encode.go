package protocol

import "strconv"

// The Append* functions encode replies and pushes by appending to dst and
// returning the extended slice, like strconv.Append*. They never allocate
// when dst has enough spare capacity; the result aliases dst. String
// arguments (channels, client and user ids, epochs, reasons, messages) are
// JSON-escaped; []byte data and info arguments are JSON values embedded
// verbatim, so they must be valid JSON (as Decode returns them).

// AppendOK appends a success reply {"id":id,"ok":true,"result":result}.
// A nil result is left out: {"id":id,"ok":true}.
func AppendOK(dst []byte, id uint64, result []byte) []byte {
	dst = appendReplyHead(dst, id)
	if result != nil {
		dst = append(dst, `,"result":`...)
		dst = append(dst, result...)
	}
	return append(dst, '}')
}

// AppendError appends an error reply
// {"id":id,"error":{"code":code,"message":msg}}. id 0 answers a command
// whose id could not be read.
func AppendError(dst []byte, id uint64, code Code, msg string) []byte {
	dst = append(dst, `{"id":`...)
	dst = strconv.AppendUint(dst, id, 10)
	dst = append(dst, `,"error":{"code":`...)
	dst = strconv.AppendUint(dst, uint64(code), 10)
	dst = append(dst, `,"message":`...)
	dst = appendString(dst, msg)
	return append(dst, "}}"...)
}

// AppendPositionResult appends the reply to a publish, or to a subscribe
// without recovery: {"id":id,"ok":true,"result":{"offset":offset,"epoch":epoch}}.
// For a channel without history (epoch "") the result is {}.
func AppendPositionResult(dst []byte, id uint64, offset uint64, epoch string) []byte {
	dst = appendReplyHead(dst, id)
	dst = append(dst, `,"result":{`...)
	if epoch != "" {
		dst = appendPosition(dst, offset, epoch)
	}
	return append(dst, "}}"...)
}

// AppendRecoveryOpen starts the reply to a subscribe or history command that
// carried "since": {"id":id,"ok":true,"result":{"offset":offset,
// "epoch":epoch,"recovered":recovered,"publications":[ . Continue with one
// AppendPublicationItem per publication and finish with AppendListClose.
func AppendRecoveryOpen(dst []byte, id uint64, offset uint64, epoch string, recovered bool) []byte {
	dst = appendReplyHead(dst, id)
	dst = append(dst, `,"result":{`...)
	dst = appendPosition(dst, offset, epoch)
	dst = append(dst, `,"recovered":`...)
	dst = strconv.AppendBool(dst, recovered)
	return append(dst, `,"publications":[`...)
}

// AppendHistoryOpen starts the reply to a history command without "since":
// {"id":id,"ok":true,"result":{"offset":offset,"epoch":epoch,"publications":[ .
// Continue with AppendPublicationItem and finish with AppendListClose.
func AppendHistoryOpen(dst []byte, id uint64, offset uint64, epoch string) []byte {
	dst = appendReplyHead(dst, id)
	dst = append(dst, `,"result":{`...)
	dst = appendPosition(dst, offset, epoch)
	return append(dst, `,"publications":[`...)
}

// AppendPublicationItem appends the i-th (from 0) element of a publications
// list: {"offset":offset,"data":data}, preceded by a comma unless i is 0.
func AppendPublicationItem(dst []byte, i int, offset uint64, data []byte) []byte {
	if i > 0 {
		dst = append(dst, ',')
	}
	dst = append(dst, `{"offset":`...)
	dst = strconv.AppendUint(dst, offset, 10)
	dst = append(dst, `,"data":`...)
	dst = append(dst, data...)
	return append(dst, '}')
}

// AppendPresenceOpen starts the reply to a presence command:
// {"id":id,"ok":true,"result":{"clients":[ . Continue with one
// AppendPresenceItem per client and finish with AppendListClose.
func AppendPresenceOpen(dst []byte, id uint64) []byte {
	dst = appendReplyHead(dst, id)
	return append(dst, `,"result":{"clients":[`...)
}

// AppendPresenceItem appends the i-th (from 0) element of a presence list:
// {"client":client,"user":user,"info":info}, info left out when empty,
// preceded by a comma unless i is 0.
func AppendPresenceItem(dst []byte, i int, client, user string, info []byte) []byte {
	if i > 0 {
		dst = append(dst, ',')
	}
	dst = appendClientInfo(dst, client, user, info)
	return append(dst, '}')
}

// AppendListClose finishes a reply started by AppendRecoveryOpen,
// AppendHistoryOpen or AppendPresenceOpen: ]}} .
func AppendListClose(dst []byte) []byte {
	return append(dst, "]}}"...)
}

// AppendPresenceStatsResult appends the reply to a presence_stats command:
// {"id":id,"ok":true,"result":{"clients":clients,"users":users}}.
func AppendPresenceStatsResult(dst []byte, id uint64, clients, users int) []byte {
	dst = appendReplyHead(dst, id)
	dst = append(dst, `,"result":{"clients":`...)
	dst = strconv.AppendInt(dst, int64(clients), 10)
	dst = append(dst, `,"users":`...)
	dst = strconv.AppendInt(dst, int64(users), 10)
	return append(dst, "}}"...)
}

// AppendPublication appends a publication push
// {"channel":channel,"offset":offset,"data":data}; offset is left out when
// 0 (a channel without history has no offsets).
func AppendPublication(dst []byte, channel string, offset uint64, data []byte) []byte {
	dst = append(dst, `{"channel":`...)
	dst = appendString(dst, channel)
	if offset != 0 {
		dst = append(dst, `,"offset":`...)
		dst = strconv.AppendUint(dst, offset, 10)
	}
	dst = append(dst, `,"data":`...)
	dst = append(dst, data...)
	return append(dst, '}')
}

// AppendJoin appends a join push
// {"join":{"channel":channel,"client":client,"user":user,"info":info}},
// info left out when empty.
func AppendJoin(dst []byte, channel, client, user string, info []byte) []byte {
	return appendPresenceEvent(dst, `{"join":{"channel":`, channel, client, user, info)
}

// AppendLeave appends a leave push, shaped like AppendJoin's under "leave".
func AppendLeave(dst []byte, channel, client, user string, info []byte) []byte {
	return appendPresenceEvent(dst, `{"leave":{"channel":`, channel, client, user, info)
}

// AppendDisconnect appends a disconnect push
// {"disconnect":{"code":code,"reason":reason,"reconnect":reconnect}}.
func AppendDisconnect(dst []byte, code DisconnectCode, reason string, reconnect bool) []byte {
	return AppendDisconnectDelay(dst, code, reason, reconnect, 0)
}

// AppendDisconnectDelay is AppendDisconnect with a reconnect delay: a
// "delay" member of delayMs milliseconds, the least a client waits before
// it reconnects (left out when 0). A draining server spreads it over a
// window so its clients do not all come back at once.
func AppendDisconnectDelay(dst []byte, code DisconnectCode, reason string, reconnect bool, delayMs uint64) []byte {
	dst = append(dst, `{"disconnect":{"code":`...)
	dst = strconv.AppendUint(dst, uint64(code), 10)
	dst = append(dst, `,"reason":`...)
	dst = appendString(dst, reason)
	dst = append(dst, `,"reconnect":`...)
	dst = strconv.AppendBool(dst, reconnect)
	if delayMs > 0 {
		dst = append(dst, `,"delay":`...)
		dst = strconv.AppendUint(dst, delayMs, 10)
	}
	return append(dst, "}}"...)
}

// AppendPing appends the application-level ping push {"ping":{}}.
func AppendPing(dst []byte) []byte {
	return append(dst, `{"ping":{}}`...)
}

// AppendLagged appends a lag notice {"lagged":{"channel":channel,"offset":offset}}:
// publications after offset (the last one delivered on this subscription)
// were dropped for this client; it recovers them with history since
// {offset, epoch} or by resubscribing with since.
func AppendLagged(dst []byte, channel string, offset uint64) []byte {
	dst = append(dst, `{"lagged":{"channel":`...)
	dst = appendString(dst, channel)
	dst = append(dst, `,"offset":`...)
	dst = strconv.AppendUint(dst, offset, 10)
	return append(dst, "}}"...)
}

// AppendReset appends a stream reset notice
// {"reset":{"channel":channel,"offset":offset,"epoch":epoch}}: the
// channel's history stream was lost and restarted with a new epoch while
// the client stayed subscribed. Publications of the old stream after the
// last one the client applied may be lost (treat it like recovered:
// false); its position is now {offset, epoch}, and the publications that
// follow continue from there.
func AppendReset(dst []byte, channel string, offset uint64, epoch string) []byte {
	dst = append(dst, `{"reset":{"channel":`...)
	dst = appendString(dst, channel)
	dst = append(dst, `,"offset":`...)
	dst = strconv.AppendUint(dst, offset, 10)
	dst = append(dst, `,"epoch":`...)
	dst = appendString(dst, epoch)
	return append(dst, "}}"...)
}

// AppendRefreshPush appends {"refresh":{}}: the connection's token has
// expired; the client sends the refresh command with a new one within the
// server's refresh window or is disconnected (4004).
func AppendRefreshPush(dst []byte) []byte {
	return append(dst, `{"refresh":{}}`...)
}

// AppendSubscribedPush appends
// {"subscribed":{"channel":channel,"offset":offset,"epoch":epoch}} for a
// subscription the server made itself (the token's subs claim); offset and
// epoch are left out on a channel without history.
func AppendSubscribedPush(dst []byte, channel string, offset uint64, epoch string) []byte {
	dst = append(dst, `{"subscribed":{"channel":`...)
	dst = appendString(dst, channel)
	if epoch != "" {
		dst = append(dst, `,"offset":`...)
		dst = strconv.AppendUint(dst, offset, 10)
		dst = append(dst, `,"epoch":`...)
		dst = appendString(dst, epoch)
	}
	return append(dst, "}}"...)
}

// AppendUnsubscribedPush appends {"unsubscribed":{"channel":channel}}: the
// server ended a subscription (a refreshed token no longer allows it).
func AppendUnsubscribedPush(dst []byte, channel string) []byte {
	dst = append(dst, `{"unsubscribed":{"channel":`...)
	dst = appendString(dst, channel)
	return append(dst, "}}"...)
}

// AppendCommand appends cmd as a client command with the fields its Op uses,
// in the form Decode reads: Decode(AppendCommand(nil, cmd)) gives back cmd.
// Clients (the Go client, the load generator) use it; cmd.Data must be a
// valid JSON value.
func AppendCommand(dst []byte, cmd *Command) []byte {
	dst = append(dst, `{"id":`...)
	dst = strconv.AppendUint(dst, cmd.ID, 10)
	dst = append(dst, `,"op":`...)
	dst = appendString(dst, cmd.Op.String())
	if cmd.Op.needsChannel() {
		dst = append(dst, `,"channel":`...)
		dst = appendString(dst, cmd.Channel)
	}
	switch cmd.Op {
	case OpPublish:
		dst = append(dst, `,"data":`...)
		dst = append(dst, cmd.Data...)
	case OpSubscribe, OpHistory:
		if cmd.HasSince {
			dst = append(dst, `,"since":{"offset":`...)
			dst = strconv.AppendUint(dst, cmd.Since.Offset, 10)
			dst = append(dst, `,"epoch":`...)
			dst = appendString(dst, cmd.Since.Epoch)
			dst = append(dst, '}')
		}
		if cmd.Op == OpHistory && cmd.Limit >= 0 {
			dst = append(dst, `,"limit":`...)
			dst = strconv.AppendInt(dst, int64(cmd.Limit), 10)
		}
	case OpRefresh:
		dst = append(dst, `,"token":`...)
		dst = appendString(dst, cmd.Token)
	}
	return append(dst, '}')
}

func appendReplyHead(dst []byte, id uint64) []byte {
	dst = append(dst, `{"id":`...)
	dst = strconv.AppendUint(dst, id, 10)
	return append(dst, `,"ok":true`...)
}

func appendPosition(dst []byte, offset uint64, epoch string) []byte {
	dst = append(dst, `"offset":`...)
	dst = strconv.AppendUint(dst, offset, 10)
	dst = append(dst, `,"epoch":`...)
	return appendString(dst, epoch)
}

func appendClientInfo(dst []byte, client, user string, info []byte) []byte {
	return appendClientFields(append(dst, '{'), client, user, info)
}

// appendClientFields appends "client":…,"user":…[,"info":…] without braces.
func appendClientFields(dst []byte, client, user string, info []byte) []byte {
	dst = append(dst, `"client":`...)
	dst = appendString(dst, client)
	dst = append(dst, `,"user":`...)
	dst = appendString(dst, user)
	if len(info) > 0 {
		dst = append(dst, `,"info":`...)
		dst = append(dst, info...)
	}
	return dst
}

func appendPresenceEvent(dst []byte, head, channel, client, user string, info []byte) []byte {
	dst = append(dst, head...)
	dst = appendString(dst, channel)
	dst = appendClientFields(append(dst, ','), client, user, info)
	return append(dst, "}}"...)
}
