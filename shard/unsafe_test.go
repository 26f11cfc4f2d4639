package shard

import "unsafe"

// unsafeString returns a string that aliases b, as a zero-copy parser would.
func unsafeString(b []byte) string { return unsafe.String(unsafe.SliceData(b), len(b)) }
