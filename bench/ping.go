package bench

import (
	"strconv"
	"time"
)

// A broadcast subscriber with --ping-rate is also an echo client of a
// protocol server: it sends the ping command, which every server of
// wsedge.v1.json answers with {"id":N,"ok":true}. The id is the send time
// in unix nanoseconds, so the reply alone gives the round trip and a
// subscriber keeps no per-ping state; it cannot collide with the subscribe
// id (1).

// startPing puts c's pings on the loop's pacer, on a random phase.
func (l *loop) startPing(c *conn, now int64) {
	period := int64(float64(time.Second) / l.w.cfg.PingRate)
	l.schedule(c, now, period, int64(nextRand(&l.rng)%uint64(period)))
}

// sendPing sends one ping command on c. It allocates only if the loop's
// buffers must grow.
func (l *loop) sendPing(c *conn) {
	b := append(l.wbuf[:0], `{"id":`...)
	b = strconv.AppendInt(b, nowNanos(), 10)
	b = append(b, `,"op":"ping"}`...)
	l.wbuf = b
	if l.sendText(c, b) {
		l.stats.Pings++
	}
}

// onPong counts the reply to the ping sent at id (unix nanos).
func (l *loop) onPong(now, id int64, ok bool) {
	if !ok {
		l.stats.PingErrors++
		return
	}
	l.stats.Pongs++
	record(l.plat, now-id)
}
