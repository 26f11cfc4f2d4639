//go:build race

package shard

// raceEnabled skips allocation tests: under -race sync.Pool drops items on
// purpose, so pooled paths allocate.
const raceEnabled = true
