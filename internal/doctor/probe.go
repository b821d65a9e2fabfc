package doctor

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/google/nftables"
	"golang.org/x/sys/unix"

	"github.com/airlock-dev/airlock/internal/statedir"
)

// Some checks must run in a process created inside fresh namespaces (a Go
// process cannot unshare a user namespace once it has threads). They
// re-execute the running binary with probeEnv set; this package's init
// performs the probe and exits before main (or the test runner) starts.
// Each probe only touches namespaces its own process created, so the
// host's mounts and firewall rules are never changed.
const (
	probeEnv    = "AIRLOCK_DOCTOR_PROBE"
	probeDirEnv = "AIRLOCK_DOCTOR_DIR"
)

func init() {
	name := os.Getenv(probeEnv)
	if name == "" {
		return
	}
	if err := runProbe(name); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	os.Exit(0)
}

// runProbe is the child side.
func runProbe(name string) error {
	switch name {
	case "true":
		return nil
	case "overlay":
		return overlayProbe(os.Getenv(probeDirEnv), "")
	case "overlay-userxattr":
		return overlayProbe(os.Getenv(probeDirEnv), ",userxattr")
	case "nftables":
		return nftablesProbe()
	}
	return fmt.Errorf("unknown doctor probe %q", name)
}

// overlayProbe mounts an overlay with dir/upper as upper layer, writes
// through it, checks the write landed in upper and unmounts. The caller
// created this process in a new mount namespace; making it private first
// keeps the mount from propagating to the host.
func overlayProbe(dir, extra string) error {
	if err := unix.Mount("", "/", "", unix.MS_PRIVATE|unix.MS_REC, ""); err != nil {
		return fmt.Errorf("making the probe's mounts private: %w", err)
	}
	merged := filepath.Join(dir, "merged")
	opts := fmt.Sprintf("lowerdir=%s/lower,upperdir=%s/upper,workdir=%s/work%s", dir, dir, dir, extra)
	if err := unix.Mount("overlay", merged, "overlay", 0, opts); err != nil {
		return fmt.Errorf("mount -t overlay -o %s: %w", opts, err)
	}
	defer unix.Unmount(merged, unix.MNT_DETACH)
	if err := os.WriteFile(filepath.Join(merged, "probe"), []byte("ok"), 0o644); err != nil {
		return fmt.Errorf("writing through the overlay: %w", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "upper", "probe")); err != nil {
		return fmt.Errorf("the write did not reach the upper layer: %w", err)
	}
	return nil
}

// nftablesProbe creates and deletes a table in the probe's own, fresh
// network namespace.
func nftablesProbe() error {
	c, err := nftables.New()
	if err != nil {
		return fmt.Errorf("opening nf_tables netlink: %w", err)
	}
	t := c.AddTable(&nftables.Table{Family: nftables.TableFamilyINet, Name: "airlock_doctor"})
	if err := c.Flush(); err != nil {
		return fmt.Errorf("creating an nf_tables table: %w", err)
	}
	c.DelTable(t)
	if err := c.Flush(); err != nil {
		return fmt.Errorf("deleting an nf_tables table: %w", err)
	}
	return nil
}

// probe runs the named probe in a child made with attr; the error carries
// the child's own explanation.
func probe(name string, attr *syscall.SysProcAttr, env ...string) error {
	exe, err := os.Executable()
	if err != nil {
		exe = "/proc/self/exe"
	}
	// Exec through an inherited descriptor: a probe running as nobody may
	// not be able to reach the binary by path (a build dir, root's home).
	f, err := os.Open(exe)
	if err != nil {
		return fmt.Errorf("opening %s to re-execute it: %w", exe, err)
	}
	defer f.Close()
	cmd := exec.Command("/proc/self/fd/3")
	cmd.ExtraFiles = []*os.File{f}
	cmd.Env = append(append(os.Environ(), probeEnv+"="+name), env...)
	cmd.SysProcAttr = attr
	attr.Pdeathsig = syscall.SIGKILL
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		return err // clone refused: the namespace is not available
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err = <-done:
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		<-done
		return errors.New("the probe did not finish in 10 s")
	}
	if msg := strings.TrimSpace(stderr.String()); err != nil && msg != "" {
		return errors.New(lastLine(msg))
	}
	return err
}

func lastLine(s string) string {
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		return s[i+1:]
	}
	return s
}

// userNSAttr creates a child in a new user namespace (plus extra flags)
// as an unprivileged user would: mapped to uid/gid hostID outside, root inside.
func userNSAttr(extra uintptr, hostUID, hostGID int) *syscall.SysProcAttr {
	attr := &syscall.SysProcAttr{
		Cloneflags:  syscall.CLONE_NEWUSER | extra,
		UidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: hostUID, Size: 1}},
		GidMappings: []syscall.SysProcIDMap{{ContainerID: 0, HostID: hostGID, Size: 1}},
	}
	if os.Geteuid() == 0 {
		// Become the mapped user, so that root's privileges outside do not
		// hide what an ordinary user would be refused.
		attr.Credential = &syscall.Credential{Uid: 0, Gid: 0, NoSetGroups: true}
	}
	return attr
}

// unprivilegedIDs are the outside ids a user namespace probe maps to:
// the caller's own, or nobody's when running as root.
func unprivilegedIDs() (int, int) {
	if os.Geteuid() == 0 {
		return 65534, 65534
	}
	return os.Geteuid(), os.Getegid()
}

// overlayDirs prepares lower/upper/work/merged in a temporary directory
// on the file system of the state directory (of the temporary directory
// when root probes for another user), owned by uid/gid.
func overlayDirs(uid, gid int) (string, func(), error) {
	base := existingParent(statedir.Default())
	if os.Geteuid() == 0 && uid != 0 {
		// Root probing for an ordinary user: the state directory is
		// private (0700), which that user cannot even enter.
		base = os.TempDir()
	}
	dir, err := os.MkdirTemp(base, ".airlock-doctor-")
	if err != nil {
		dir, err = os.MkdirTemp("", ".airlock-doctor-")
		if err != nil {
			return "", nil, err
		}
	}
	cleanup := func() { _ = os.RemoveAll(dir) }
	for _, d := range []string{"", "lower", "upper", "work", "merged"} {
		p := filepath.Join(dir, d)
		if err := os.MkdirAll(p, 0o755); err == nil && os.Geteuid() == 0 {
			err = os.Chown(p, uid, gid)
		}
		if err != nil {
			cleanup()
			return "", nil, err
		}
	}
	return dir, cleanup, nil
}

func existingParent(p string) string {
	for {
		if st, err := os.Stat(p); err == nil && st.IsDir() {
			return p
		}
		parent := filepath.Dir(p)
		if parent == p {
			return os.TempDir()
		}
		p = parent
	}
}
