// Package bench is the load generator behind `wsedge bench`: it opens
// WebSocket connections to a server, drives one of the modes (idle, echo,
// broadcast, connect) for a bounded time, and reports HDR latency
// percentiles, delivery accounting and the server's memory per connection.
// cmd/wsedge parses flags into a Config and calls Run; Run's caller owns the
// goroutine it runs on.
//
// The client is event-driven so it is not the bottleneck it measures: each
// process runs a few loops (one goroutine each, an epoll instance over
// non-blocking sockets, edge-triggered), and a connection is a small struct
// with no goroutine and no buffer of its own until a partial frame or
// unsent bytes need one. A run spreads over --procs child processes (this
// executable re-run with "bench --child", talking JSON lines over
// stdin/stdout) because one process may open only 20,000 files here, and over
// source addresses 127.0.0.2… so it does not run out of ephemeral ports. The
// parent merges the children's histograms exactly (HdrHistogram V2 encoding,
// lossless). The client's own cost is reported with every run (its RSS per
// connection, its CPU, and the lag of its paced sends); measured here it is
// about 0.8 KiB of RSS per idle connection, 7 µs of CPU per broadcast
// delivery and 8 µs per closed-loop echo round trip (BENCHMARKS.md).
//
// Broadcast can spread its subscribers round-robin over several channels
// (--channels; subscriber g is on channel g % N, named <channel>-1 …), with
// the publishes shared by one or more publisher connections, and add slow
// subscribers (--slow) that stop reading after subscribing; delivery is
// accounted per channel with per-channel sequence numbers, and the slow ones
// are reported apart (closed by the server or not), next to the server's RSS
// sampled every 100 ms. With --ping-rate the subscribers also send the
// protocol's ping command, an echo a protocol server answers.
//
// Connections can authenticate (TokenConfig, token.go): one token for all
// (--token), or with --token-key one token per connection, sub "u<N>"
// unique across the processes, minted by each process for its own
// connections before it dials so that signing is never part of what is
// measured, and kept back to back in one arena (the token's bytes plus 4
// per connection). A token goes in the Authorization header, the query or
// the subprotocol list; a subs claim makes the server subscribe the
// connection at open, and the bench waits for those subscribed pushes
// before the measured phase. Connect mode reports the server's CPU time
// per handshake, read from /proc.
//
// A broadcast run against a cluster (everyone.go, nodes.go, retry.go) can
// add an "everyone" channel every subscriber also subscribes to, with a
// broadcast to it every --all-every measured apart (per-delivery HDR
// histogram, time until the last delivery of each, missing and duplicated
// per connection); sample each node's RSS and goroutines and the kernel's
// socket memory when the run starts, when every connection is ready and at
// the end of the measured phase; and drain the nodes (SIGTERM) at the end,
// each client counting its disconnect push and close code. Subscribes the
// server refuses with 503 are sent again after a backoff. bench/million.sh
// runs it all at a million connections.
//
// Any mode can carry hostile clients (AttackConfig, attack*.go) beside the
// measured ones: slowloris handshakes, never-reading subscribers, history
// floods, oversize and overflowing frames, connection churn. Each kind is
// bounded in count or rate and each connection in lifetime; they run only
// in the measured phase, on one extra loop per process, from source
// addresses of their own, and every one of them is accounted for by how it
// ended (close code, HTTP status, EOF, reset, held). Meanwhile the parent
// samples the server's /metrics every second (RSS, goroutines) and ends
// the run early if the server exits or its RSS passes --abort-rss.
package bench
