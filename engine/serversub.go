package engine

import "math/rand/v2"

// A subscription of a token's subs claim that the broker could not make
// (its queue full during a connect burst, or the broker down) is not
// dropped: the client has no way to ask for it again (the channel may be
// one it may not subscribe to itself), so the loop retries it, with a
// delay that doubles from 100 ms to 5 s (jittered), for as long as the
// connection is open. The retry list holds at most one entry per
// (connection, channel) of a claim: it is bounded by the connections'
// subscriptions.

// serverSubRetry is a token subscription waiting for its next attempt.
type serverSubRetry struct {
	c     *conn
	sess  *session // the connection's session when it failed (a reused conn has another)
	ns    *Namespace
	ch    string
	due   int64 // wheel tick of the next attempt
	delay int64 // ticks of the last wait
}

const (
	serverSubFirstRetry = 1  // ticks (100 ms)
	serverSubMaxRetry   = 50 // ticks (5 s)
	serverSubPerTick    = 512
)

// retryServerSub schedules another attempt at a failed token subscription.
func (l *loop) retryServerSub(op *brokerOp) {
	delay := int64(serverSubFirstRetry)
	if op.retry > 0 {
		delay = min(2*op.retry, serverSubMaxRetry)
	}
	l.srv.m.ServerSubRetry.Inc()
	l.subRetries = append(l.subRetries, serverSubRetry{
		c: op.c, sess: op.c.sess, ns: op.ns, ch: op.ch,
		due:   l.wheel.now + delay/2 + rand.Int64N(delay/2+1),
		delay: delay,
	})
}

// runServerSubRetries makes the attempts that are due; called on tick.
func (l *loop) runServerSubRetries() {
	if len(l.subRetries) == 0 {
		return
	}
	now, done := l.wheel.now, 0
	keep := l.subRetries[:0]
	for _, r := range l.subRetries {
		if r.c.state != stateOpen || r.c.sess != r.sess {
			continue // gone
		}
		if r.due > now || done >= serverSubPerTick {
			keep = append(keep, r)
			continue
		}
		done++
		l.batch = r.c
		err := l.serverSubscribeRetry(r.c, r.ns, []byte(r.ch), r.delay)
		l.endBatch()
		if err != nil {
			l.srv.log.Warn("token subscription", "channel", r.ch, "err", err)
		}
	}
	clear(l.subRetries[len(keep):])
	l.subRetries = keep
}
