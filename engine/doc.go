// Package engine is wsedge's network core: the gnet event handler, the
// incremental HTTP upgrade, the per-connection state machine, the heartbeat
// wheel and the graceful drain.
//
// gnet runs N event loops; each owns its sockets and one loop value (the
// shard of per-connection state), and everything about a connection runs on
// its loop's goroutine without locks. Other goroutines (signal handling, the
// ticker, later the broker and ingest) reach a loop only through
// gnet's EventLoop.Execute. There is no goroutine per connection.
package engine
