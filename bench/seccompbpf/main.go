// Command seccompbpf writes the compiled BPF program of an Airlock seccomp
// profile (default: "default") to stdout as raw struct sock_filter
// records, the format bwrap --seccomp FD reads. The benchmarks use it so
// that bubblewrap runs the same syscall filter as the pod.
package main

import (
	"encoding/binary"
	"fmt"
	"os"

	"github.com/airlock-dev/airlock/internal/seccomp"
)

func main() {
	name := "default"
	if len(os.Args) > 1 {
		name = os.Args[1]
	}
	pol, err := seccomp.Profile(name)
	if err != nil {
		fmt.Fprintln(os.Stderr, "seccompbpf:", err)
		os.Exit(1)
	}
	prog, err := seccomp.Compile(pol)
	if err != nil {
		fmt.Fprintln(os.Stderr, "seccompbpf:", err)
		os.Exit(1)
	}
	out := make([]byte, 0, 8*len(prog))
	for _, ins := range prog {
		out = binary.NativeEndian.AppendUint16(out, ins.Code)
		out = append(out, ins.Jt, ins.Jf)
		out = binary.NativeEndian.AppendUint32(out, ins.K)
	}
	if _, err := os.Stdout.Write(out); err != nil {
		fmt.Fprintln(os.Stderr, "seccompbpf:", err)
		os.Exit(1)
	}
}
