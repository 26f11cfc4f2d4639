// Package protocol implements the client wire protocol wsedge.v1.json: one
// JSON object per WebSocket text frame, commands from the client with an id
// and exactly one reply each, and pushes from the server without an id. The
// message shapes, error codes and disconnect codes are documented as data in
// docs/PROTOCOL.md; this package is their single implementation.
//
// The engine calls it on its event-loop goroutines: each loop owns one
// Decoder (decoding reuses its buffers and is allocation-free in steady
// state), and the Append* encoders write into caller-owned buffers without
// allocating when the buffer has room, so a publication is encoded once and
// shared by every subscriber. The package imports nothing of the project.
package protocol
