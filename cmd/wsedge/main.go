// Command wsedge is the WebSocket edge server and its tools.
//
// main only dispatches to subcommands; each lives in its own file and owns
// its flags.
package main

import (
	"fmt"
	"os"
)

// commands maps a subcommand to its entry point. Each returns the process
// exit code.
var commands = map[string]func(args []string) int{
	"serve":   runServe,
	"publish": runPublish,
	"bench":   runBench,
	"token":   runToken,
	"tune":    runTune,
	"upgrade": runUpgrade,
	"version": runVersion,
}

func usage() {
	fmt.Fprintf(os.Stderr, `usage: wsedge <command> [flags]

commands:
  serve     run the WebSocket edge server
  publish   publish messages through the ingest socket or the HTTP API
  bench     run the load generator against a server
  token     mint a JWT for a client (development secret unless --key)
  tune      check host limits against the sysctl profile; plan capacity
  upgrade   start a new wsedge that takes a running one's connections over
  version   print the version
`)
}

func main() {
	if len(os.Args) < 2 {
		usage()
		os.Exit(2)
	}
	cmd, ok := commands[os.Args[1]]
	if !ok {
		if os.Args[1] == "-h" || os.Args[1] == "--help" || os.Args[1] == "help" {
			usage()
			os.Exit(0)
		}
		fmt.Fprintf(os.Stderr, "wsedge: unknown command %q\n", os.Args[1])
		usage()
		os.Exit(2)
	}
	os.Exit(cmd(os.Args[2:]))
}
