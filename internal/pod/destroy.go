package pod

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/airlock-dev/airlock/internal/atomicfile"
	"github.com/airlock-dev/airlock/internal/errdefs"
)

// Destroy removes the pod called name and everything in its directory.
// A running pod is refused with errdefs.ErrBusy unless force, which
// SIGKILLs the supervisor and waits for its run lock to drop.
//
// Removal never leaves the pod's directory: the directory is first
// renamed to a hidden trash name (so the pod vanishes at once), then
// deleted through an os.Root, which unlinks symlinks instead of following
// them and removes hard links without touching their other names. A pod
// with anything still mounted beneath it is refused: deleting through a
// stale bind mount would delete host files.
func (s *Store) Destroy(name string, force bool) error {
	// Not Get: a pod whose pod.yaml or state.json is corrupt must still be
	// destroyable.
	if err := ValidateName(name); err != nil {
		return err
	}
	p := &Pod{Name: name, Dir: s.podDir(name)}
	if st, err := os.Lstat(p.Dir); err != nil || !st.IsDir() {
		return errdefs.NotFound("no pod named %q; airlock ls lists pods", name)
	}
	if err := p.stop(force); err != nil {
		return err
	}
	unlock, err := p.Lock()
	if err != nil {
		return err
	}
	defer unlock()
	if pid, running := p.Running(); running { // started again meanwhile
		return errdefs.Busy("pod %s started again (pid %d); stop it and retry", name, pid)
	}
	p.dropLayer() // a disk-capped pod's image
	if m := mountsUnder(p.Dir); len(m) > 0 {
		return errdefs.Busy("pod %s still has a mount at %s; unmount it (umount -l %s) and retry", name, m[0], m[0])
	}
	trash := ".trash-" + name + "-" + randomSuffix()
	if err := os.Rename(p.Dir, filepath.Join(s.podsDir(), trash)); err != nil {
		return fmt.Errorf("destroying pod %s: %w", name, err)
	}
	return s.removeTrash(trash)
}

// stop refuses a running pod, or kills its supervisor when force.
func (p *Pod) stop(force bool) error {
	pid, running := p.Running()
	if !running {
		return nil
	}
	if !force {
		return errdefs.Busy("pod %s is running (supervisor pid %d); stop it first or destroy with --force", p.Name, pid)
	}
	if pid > 0 && pid != os.Getpid() {
		_ = syscall.Kill(pid, syscall.SIGKILL)
	}
	if !p.waitStopped(10 * time.Second) {
		return errdefs.Busy("pod %s is still running after SIGKILL to pid %d; check the process and retry", p.Name, pid)
	}
	return nil
}

// removeTrash deletes pods/<trash> without following symlinks out of it.
func (s *Store) removeTrash(trash string) error {
	root, err := os.OpenRoot(s.podsDir())
	if err != nil {
		return fmt.Errorf("destroying pod: %w", err)
	}
	defer root.Close()
	if err := root.RemoveAll(trash); err != nil {
		return fmt.Errorf("removing %s (the pod is gone; delete the rest by hand): %w", filepath.Join(s.podsDir(), trash), err)
	}
	return atomicfile.SyncDir(s.podsDir())
}

// mountsUnder lists mount points at or beneath dir.
func mountsUnder(dir string) []string {
	data, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	var out []string
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) > 4 && within(unescapeMount(f[4]), dir) {
			out = append(out, unescapeMount(f[4]))
		}
	}
	return out
}

// unescapeMount undoes mountinfo's octal escapes (\040 for space, ...).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			var v byte
			ok := true
			for _, c := range s[i+1 : i+4] {
				if c < '0' || c > '7' {
					ok = false
					break
				}
				v = v*8 + byte(c-'0')
			}
			if ok {
				b.WriteByte(v)
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}
