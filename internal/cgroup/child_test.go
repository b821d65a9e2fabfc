package cgroup

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"syscall"
	"testing"
	"time"
)

// childEnv selects what the re-executed test binary does instead of testing.
const childEnv = "AIRLOCK_CGROUP_TEST_CHILD"

func TestMain(m *testing.M) {
	if mode := os.Getenv(childEnv); mode != "" {
		runChild(mode)
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// runChild waits for a line on stdin (so the parent can move it into the
// group before it starts) and then misbehaves as asked.
func runChild(mode string) {
	_, _ = bufio.NewReader(os.Stdin).ReadString('\n')
	switch mode {
	case "balloon":
		balloon()
	case "spin":
		spin()
	case "sleep":
		time.Sleep(time.Hour)
	}
}

// balloon allocates and touches memory 1 MiB at a time, keeping all of
// it, up to 512 MiB; under a smaller limit the kernel must OOM-kill it.
func balloon() {
	var keep [][]byte
	for i := 0; i < 512; i++ {
		b := make([]byte, 1<<20)
		for j := 0; j < len(b); j += 4096 {
			b[j] = byte(i)
		}
		keep = append(keep, b)
	}
	fmt.Println("balloon survived", len(keep), "MiB")
	os.Exit(3)
}

// spin keeps every CPU busy until killed.
func spin() {
	for i := 0; i < runtime.NumCPU(); i++ {
		go func() {
			for x := 0; ; x++ {
				_ = x
			}
		}()
	}
	select {}
}

// child is a started helper process waiting for go().
type child struct {
	cmd  *exec.Cmd
	in   *os.File
	done chan error
}

// startChild starts the test binary (or argv when given) stopped at its
// stdin gate; t.Cleanup kills and reaps it whatever happens.
func startChild(t *testing.T, mode string, argv ...string) *child {
	t.Helper()
	if len(argv) == 0 {
		argv = []string{os.Args[0], "-test.run=^$"}
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), childEnv+"="+mode)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdin = r
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	r.Close()
	c := &child{cmd: cmd, in: w, done: make(chan error, 1)}
	go func() { c.done <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		w.Close()
		select {
		case <-c.done:
		case <-time.After(10 * time.Second):
			t.Errorf("child %d did not exit", cmd.Process.Pid)
		}
	})
	return c
}

func (c *child) pid() int { return c.cmd.Process.Pid }
func (c *child) start()   { _, _ = c.in.WriteString("go\n") }

// wait returns how the child ended, or fails the test after d.
func (c *child) wait(t *testing.T, d time.Duration) error {
	t.Helper()
	select {
	case err := <-c.done:
		c.done <- err // keep it for the cleanup
		return err
	case <-time.After(d):
		t.Fatalf("child %d still running after %s", c.pid(), d)
		return nil
	}
}
