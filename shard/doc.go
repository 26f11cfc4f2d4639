// Package shard holds the low-level state of wsedge's fan-out: the
// reference-counted encoded Frame that one publish shares across every
// subscriber, the bounded per-connection outbound Queue of frame references
// that is written with one Writev, the Inbox (a lock-free bounded
// multi-producer single-consumer ring with an ordered overflow list) through
// which other goroutines reach a loop, the node-wide Hub of channel → shards
// with subscribers, and the per-shard Index of channel → local subscribers.
// It imports nothing of the project and not gnet: Writer is the two methods
// of gnet.Conn it needs.
//
// The engine calls it. Queue and Index belong to one event loop goroutine
// and are used without locks; a Frame is built by one goroutine and then
// shared read-only by all; Inbox.Push and the Hub are for any goroutine,
// Inbox.Drain for the loop that owns the inbox. Each exported type states
// its owner, and each hot-path method states whether it allocates (the
// fan-out path does not: 1 publish to N subscribers is one pooled buffer
// and N references).
package shard
