package bench

import (
	"bytes"
	"strconv"
	"time"
)

// A subscribe the server refuses with 503 (its broker queue is full under
// a connect burst: "overloaded", or the broker is down: "unavailable") is
// sent again after a jittered exponential backoff, as docs/PROTOCOL.md
// asks of clients, up to maxSubTries times (the setup timeout bounds it too); each resend is counted
// (Stats.SubRetries) and only the last refusal is an error. The loop keeps
// the refused subscribes in a slice it scans when the earliest is due: it
// is empty unless the server refuses, and short beside the connections
// when it does.

const (
	maxSubTries   = 40 // about 80 s of backoff at the 2 s cap
	retryBaseWait = 50 * int64(time.Millisecond)
	retryMaxWait  = 2 * int64(time.Second)
)

var keyCode503 = []byte(`"code":503`)

// subRetry is a refused subscribe waiting to be sent again.
type subRetry struct {
	c   *conn
	at  int64 // unix nanos
	all bool  // the subscribe to the all channel (id 2), else to its own (id 1)
}

// retrySubscribe reports whether the error reply msg to c's subscribe (the
// all channel's when all) is worth another try, and if so schedules it.
func (l *loop) retrySubscribe(c *conn, msg []byte, all bool, now int64) bool {
	if l.stopping || c.subTries >= maxSubTries || !bytes.Contains(msg, keyCode503) {
		return false
	}
	wait := min(retryBaseWait<<c.subTries, retryMaxWait)
	wait += int64(nextRand(&l.rng) % uint64(wait))
	c.subTries++
	at := now + wait
	l.retries = append(l.retries, subRetry{c: c, at: at, all: all})
	if l.retryNext == 0 || at < l.retryNext {
		l.retryNext = at
	}
	l.stats.SubRetries++
	return true
}

// runRetries sends the refused subscribes that are due.
func (l *loop) runRetries(now int64) {
	keep := l.retries[:0]
	next := int64(0)
	for _, r := range l.retries {
		switch {
		case r.c.state != stOpen:
			// closed meanwhile: its pending subscribe was released then
		case r.at <= now:
			l.sendSubscribe(r.c, r.all)
		default:
			keep = append(keep, r)
			if next == 0 || r.at < next {
				next = r.at
			}
		}
	}
	clear(l.retries[len(keep):])
	l.retries, l.retryNext = keep, next
}

// sendSubscribe sends c's subscribe to its channel (id 1) or to the all
// channel (id 2).
func (l *loop) sendSubscribe(c *conn, all bool) bool {
	b := append(l.wbuf[:0], `{"id":`...)
	if all {
		b = append(b, '2')
	} else {
		b = append(b, '1')
	}
	b = append(b, `,"op":"subscribe","channel":`...)
	if all {
		b = strconv.AppendQuote(b, l.w.cfg.AllChannel)
	} else {
		b = append(b, l.w.chanJSON(int(c.ch))...)
	}
	l.wbuf = append(b, '}')
	return l.sendText(c, l.wbuf)
}
