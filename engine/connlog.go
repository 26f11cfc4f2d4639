package engine

import (
	"log/slog"
	"time"
)

// connLogsPerTick bounds the per-connection summaries a loop logs per tick
// (50 ms); beyond it they are counted and reported as one line, so a mass
// disconnect does not flood the log.
const connLogsPerTick = 20

// logClose writes the summary of a closed WebSocket connection: how long it
// lived, what it moved each way, how it ended. Runs on the loop goroutine.
func (l *loop) logClose(c *conn, err error) {
	log := l.srv.log
	if !log.Enabled(ctx, slog.LevelInfo) {
		return
	}
	if l.logBudget <= 0 {
		l.logSuppressed++
		return
	}
	l.logBudget--
	by := "client"
	switch {
	case c.serverClose:
		by = "server"
	case c.closeCode == 0:
		by = "transport" // no close frame: reset, EOF or a write error
	}
	attrs := []slog.Attr{
		slog.String("remote", c.gc.RemoteAddr().String()),
		slog.Duration("duration", time.Duration(l.wheel.now-c.opened)*wheelTick),
		slog.Uint64("bytes_in", c.stats.bytesIn),
		slog.Uint64("bytes_out", c.stats.bytesOut),
		slog.Uint64("msgs_in", uint64(c.stats.msgsIn)),
		slog.Uint64("msgs_out", uint64(c.stats.msgsOut)),
		slog.Int("close_code", int(c.closeCode)),
		slog.String("closed_by", by),
	}
	if c.sess != nil {
		attrs = append(attrs, slog.String("client", c.sess.clientID()), slog.String("user", c.sess.user),
			slog.Int("subscriptions", len(c.sess.subs)))
	}
	if err != nil {
		attrs = append(attrs, slog.String("err", err.Error()))
	}
	log.LogAttrs(ctx, slog.LevelInfo, "connection closed", attrs...)
}

// refillLogBudget runs on each tick and reports what was suppressed.
func (l *loop) refillLogBudget() {
	if l.logSuppressed > 0 {
		l.srv.log.Info("connection logs suppressed", "count", l.logSuppressed, "shard", l.idx)
		l.logSuppressed = 0
	}
	l.logBudget = connLogsPerTick
}
