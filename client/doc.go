// Package client is the Go client of wsedge's protocol wsedge.v1.json
// (docs/PROTOCOL.md): it keeps one WebSocket connection to a server up,
// reconnecting with exponential backoff and full jitter, honouring the
// server's disconnect pushes (no reconnect after a refusal, no sooner than
// the delay a draining node names), resubscribing with the last position
// seen on each channel so that missed publications arrive in order and
// without duplicates, and queueing publishes issued while disconnected.
//
// A Client is safe for concurrent use. It runs three goroutines: a manager
// that dials, watches for silence and waits out the backoff, a reader per
// live connection, and a dispatcher that calls the application's handlers
// (publications, state changes) one at a time, in the order the events
// happened. Handlers may call the Client's methods, except Close, which
// waits for the dispatcher: call it from another goroutine. Close stops all
// three and returns when they have exited. The package imports only the
// protocol package of this module and gobwas/ws.
package client
