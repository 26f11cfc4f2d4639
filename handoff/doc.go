// Package handoff is the wire format of a connection handoff: a running
// wsedge process passes its live connections to a new one over a Unix
// socket, each as a file descriptor (SCM_RIGHTS) with a small, versioned
// record of its state (docs/DESIGN.md, "Handoff").
//
// It owns the encoding and the framing, nothing of the engine: engine
// fills and reads the records and runs both ends, each on one goroutine
// (the Link is not safe for concurrent use). Every decoder here refuses
// what it cannot read with an error and never misreads a record written by
// another version of the encoding: the peers compare versions in their
// first messages and refuse each other cleanly when they differ.
package handoff
