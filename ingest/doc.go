// Package ingest is wsedge's ingest protocol for internal services: the
// binary wire format spoken over the ingest Unix socket (docs/INGEST.md,
// byte by byte), its allocation-free decoder and encoders, and Client, the
// Go client that services use to publish with acknowledgements.
//
// The engine (engine/ingest*.go) serves the socket on gnet event loops and
// calls ParseRequest and the Append* encoders on those loops; Client runs on
// the caller's goroutines plus one reader and one writer goroutine per
// Client. The package imports nothing of the project.
package ingest
