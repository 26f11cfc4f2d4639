// Package broker owns what nodes share: per-channel history streams with
// offsets and epochs (for recovery after a reconnect), cross-node delivery of
// publications, and presence. Broker and PresenceManager are narrow
// interfaces; Memory implements both for a single node, Redis for a
// cluster, and package brokertest is the one conformance suite both pass
// unchanged.
//
// The engine calls Memory on its event loops (its calls never block: see
// NeverBlocks) and Redis from a fixed pool of worker goroutines, never from
// a loop; every implementation is safe for concurrent use. Publications
// reach the engine through the Handler set once with SetHandler, which the
// broker calls in offset order per channel, on its own goroutines (Memory:
// the publisher's, while holding the channel's lock), so the handler must be
// fast and never block: the engine only pushes onto lock-free shard inboxes
// there. The package imports nothing of the project.
package broker
