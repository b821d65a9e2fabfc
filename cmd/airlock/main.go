// Command airlock runs AI coding agents in copy-on-write pods.
package main

import (
	"os"

	"github.com/airlock-dev/airlock/internal/cli"
	"github.com/airlock-dev/airlock/internal/sandbox/inside"
)

func main() {
	// The in-pod init is this same binary re-executed inside the new
	// namespaces; dispatch before anything else initialises.
	if len(os.Args) > 1 && os.Args[1] == inside.Arg {
		inside.Main()
	}
	os.Exit(cli.Main(os.Args[1:]))
}
