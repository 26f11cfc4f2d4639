// Package broker owns what nodes share: per-channel history streams with
// offsets and epochs (for recovery after a reconnect), cross-node delivery of
// publications, and presence. Broker and PresenceManager are narrow
// interfaces; Memory implements both for a single node, a Redis
// implementation will implement them for a cluster, and package brokertest
// is the one conformance suite both must pass unchanged.
//
// The engine calls it from its service goroutines (ingest, admin API) and
// event loops; every implementation is safe for concurrent use. Publications
// reach the engine through the Handler set once with SetHandler, which the
// broker calls in offset order per channel, on its own goroutines (Memory:
// the publisher's, while holding the channel's lock), so the handler must be
// fast and never block: the engine only pushes onto lock-free shard inboxes
// there. The package imports nothing of the project.
package broker
