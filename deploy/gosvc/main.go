// Command gosvc is rlctl's Go test-bed: `gosvc serve` is a service with
// tunable CPU, allocation, lock and downstream cost, Prometheus metrics and a
// runtime-knob admin API; `gosvc loadgen` is an open-loop load generator that
// measures latency from each request's intended send time; `gosvc proxy` is a
// round-robin balancer that injects network faults (delay, loss, partition,
// bandwidth) set at run time through a JSON admin API.
package main

import (
	"fmt"
	"io"
	"os"
	"runtime"

	"gosvc/internal/loadgen"
	"gosvc/internal/proxy"
	"gosvc/internal/server"
)

const usage = `usage: gosvc <command> [flags]

commands:
  serve     run the test-bed service (gosvc serve -h for flags)
  loadgen   run open-loop load against a URL (gosvc loadgen -h for flags)
  proxy     balance across replicas and inject network faults (gosvc proxy -h for flags)
  version   print the Go version gosvc was built with
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr))
}

func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "serve":
		return server.RunServe(args[1:], stdout, stderr)
	case "loadgen":
		return loadgen.Run(args[1:], stdin, stdout, stderr)
	case "proxy":
		return proxy.Run(args[1:], stdout, stderr)
	case "version":
		fmt.Fprintln(stdout, "gosvc", runtime.Version())
		return 0
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, usage)
		return 0
	}
	fmt.Fprintf(stderr, "gosvc: unknown command %q\n%s", args[0], usage)
	return 2
}
