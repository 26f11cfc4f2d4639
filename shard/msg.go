package shard

// Msg is a message for a loop's Inbox: what to do (Kind, defined by the
// engine), to which connection, with which frame. Ptr carries anything
// else (a subscribe request, a tick); storing a pointer in it does not
// allocate.
//
// Ownership: a Msg is a value, copied into the inbox and out to the
// consumer; whoever holds it owns it. Whoever pushes a Msg with a Frame
// passes one reference with it, which the consumer releases.
type Msg struct {
	Kind  uint8
	Conn  uint64
	Frame *Frame
	Ptr   any
	// Epoch is the history stream's epoch of a publication (engine
	// defined); a string header copy, it does not allocate.
	Epoch string
}
