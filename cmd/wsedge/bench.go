package main

import (
	"fmt"
	"os"
)

// runBench is replaced by the bench package's entry point (issue: wsedge bench).
func runBench(args []string) int {
	fmt.Fprintln(os.Stderr, "wsedge bench: not built yet")
	return 2
}
