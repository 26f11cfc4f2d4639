// Package frame implements RFC 6455 framing for wsedge on top of the
// gobwas/ws primitives: an incremental, zero-copy parser that runs over the
// bytes an event loop hands it, incremental UTF-8 validation, close codes,
// and allocation-free header encoding for server frames.
//
// A Parser belongs to one connection and is used only by the goroutine that
// owns that connection (its gnet event loop). It never reads ahead: callers
// pass whatever bytes arrived and discard exactly what Parse reports as
// consumed. Payload slices handed to a Handler alias the caller's buffer and
// are valid only until the callback returns.
package frame
