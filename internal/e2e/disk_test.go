package e2e

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/airlock-dev/airlock/internal/testutil"
)

// diskConfig caps the layer at 32 MiB and about 600 inodes.
const diskConfig = "version: 1\nresources:\n  disk:\n    bytes: 32MiB\n    inodes: 600\n"

// imageHolder names the loop device still holding a pod's layer image.
func imageHolder(img string) string {
	devs, _ := filepath.Glob("/sys/block/loop*/loop/backing_file")
	for _, f := range devs {
		if b, err := os.ReadFile(f); err == nil && strings.HasPrefix(string(b), img) {
			return f
		}
	}
	return ""
}

// TestDiskCapFillIsENOSPC: an agent that writes past resources.disk (bytes,
// then inodes) gets ENOSPC inside the pod; the host holds at most the cap,
// the run's records survive, once the layer is rolled back the pod runs
// again, and destroy leaves no mount and no loop device.
func TestDiskCapFillIsENOSPC(t *testing.T) {
	e := newEnv(t)
	e.write("airlock.yaml", diskConfig)
	e.must("init", "p")
	r := e.run("", "run", "p", "--", "sh", "-c", `
dd if=/dev/zero of=big bs=1M count=64 2>&1; echo "dd=$?"
rm -f big
i=0; while [ $i -lt 2000 ]; do printf "" > f$i || break; i=$((i+1)); done; echo "files=$i"`)
	if !strings.Contains(r.stdout, "No space left on device") || strings.Contains(r.stdout, "dd=0") {
		t.Errorf("writing 64 MiB into a 32 MiB layer did not end in ENOSPC:\n%s", r.stdout)
	}
	if !strings.Contains(r.stderr, "No space left on device") || !strings.Contains(r.stdout, "files=") || strings.Contains(r.stdout, "files=2000") {
		t.Errorf("2000 files in a 600-inode layer did not end in ENOSPC:\nstdout %s\nstderr %s", r.stdout, r.stderr)
	}
	img := filepath.Join(e.home, "pods", "p", "layer.img")
	var st syscall.Stat_t
	if err := syscall.Stat(img, &st); err != nil {
		t.Fatalf("no layer image: %v", err)
	}
	if used := st.Blocks * 512; used > 34<<20 {
		t.Errorf("the layer image takes %d bytes of the host's disk, more than the 32 MiB cap", used)
	}
	if !strings.Contains(e.must("status", "p").stdout, "disk-quota up") {
		t.Errorf("status does not show the disk wall up")
	}
	if v := e.run("", "audit", "verify", "p"); v.code != 0 {
		t.Errorf("audit trail damaged: %s", v.stderr)
	}
	if !strings.Contains(e.must("audit", "p", "--action", "run.exit").stdout, "run.exit") {
		t.Errorf("the run's exit is not in the audit trail")
	}
	e.must("rollback", "p")
	if r := e.run("", "run", "p", "--", "sh", "-c", "echo ok > after"); r.code != 0 {
		t.Errorf("the pod does not run again after rollback: %d %s", r.code, r.stderr)
	}
	if !strings.Contains(e.must("diff", "p").stdout, "after") {
		t.Errorf("the layer lost the new file")
	}
	e.must("destroy", "p")
	if testutil.Mounted(e.home) {
		t.Errorf("the layer is still mounted after destroy")
	}
	if h := imageHolder(img); h != "" {
		t.Errorf("a loop device still holds the destroyed pod's image: %s", h)
	}
}

// TestDiskCapSupervisorKilled: SIGKILL of the supervisor of a capped pod
// loses nothing the agent wrote, diff from another terminal sees it while
// the pod runs, the next run finds the layer intact, and destroy --force
// leaves no mount and no loop device.
func TestDiskCapSupervisorKilled(t *testing.T) {
	e := newEnv(t)
	e.write("airlock.yaml", diskConfig)
	e.must("init", "p")
	cmd := exec.Command(bin, "run", "p", "--", "sh", "-c", "echo agent > written; exec sleep 60")
	cmd.Dir = e.ws
	cmd.Env = append(os.Environ(), "AIRLOCK_HOME="+e.home)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	defer func() {
		_ = cmd.Process.Kill()
		<-done
	}()
	waitFor(t, func() bool { return strings.Contains(e.run("", "diff", "p").stdout, "written") })
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	<-done
	deadline := time.Now().Add(10 * time.Second)
	for strings.Contains(e.run("", "status", "p").stdout, "running") && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	r := e.run("", "run", "p", "--", "cat", "written")
	if r.code != 0 || !strings.Contains(r.stdout, "agent") {
		t.Errorf("after the kill the layer lost the agent's file: %d %q %s", r.code, r.stdout, r.stderr)
	}
	img := filepath.Join(e.home, "pods", "p", "layer.img")
	e.must("destroy", "--force", "p")
	if testutil.Mounted(e.home) {
		t.Errorf("a mount is left after destroy")
	}
	waitFor(t, func() bool { return imageHolder(img) == "" })
}
