// Package tuning reads and adjusts the host limits that decide how many
// connections one wsedge process can hold: RLIMIT_NOFILE, the listen
// backlog ceiling and the ephemeral port range.
//
// Its functions are called once at startup from the goroutine that runs
// serve; they touch no shared state.
package tuning
