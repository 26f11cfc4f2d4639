//go:build race

package frame

// raceEnabled skips allocation tests: under -race sync.Pool drops items on
// purpose, so pooled paths allocate.
const raceEnabled = true
