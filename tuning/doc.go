// Package tuning owns what decides how many connections a host can hold:
// it reads and raises RLIMIT_NOFILE and reads the listen backlog ceiling
// and the ephemeral port range for serve (limits.go), ships the sysctl
// profile for a million-connection host (sysctl.conf, parsed by
// profile.go), compares a live host with it and computes the connection
// ceiling each limit implies (check.go, `wsedge tune check`), and turns
// per-connection costs into a capacity plan (plan.go, `wsedge tune plan`).
//
// Its functions are called from the goroutine that runs serve or the tune
// command; they touch no shared state. Check reads every file under a
// root directory, so tests run it on fake /proc and /sys trees.
package tuning
