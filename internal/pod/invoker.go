package pod

import (
	"os"
	"os/user"
	"path/filepath"
	"strconv"

	"golang.org/x/sys/unix"
)

// Invoker is the person a command acts for: the caller, except that
// root reached through sudo acts for the user who ran sudo (SUDO_UID,
// SUDO_GID) in a workspace that user owns. There the agent works on
// their files as them: it can write where they can, and what it creates
// is theirs. A workspace root owns (a demo, a CI checkout) keeps root.
type Invoker struct {
	UID, GID int
	Name     string // the sudo user's name; "" without sudo or when the user database does not know the uid
	Home     string // absolute, symlink-resolved; "" when unknown
	Sudo     bool   // the identity came from sudo's variables
}

// InvokerFor works out the invoker for a pod of workspace. A SUDO_UID of
// 0 or one that is not a number is ignored (root stays root).
func InvokerFor(workspace string) Invoker {
	if os.Geteuid() == 0 {
		uid, uerr := strconv.Atoi(os.Getenv("SUDO_UID"))
		gid, gerr := strconv.Atoi(os.Getenv("SUDO_GID"))
		var st unix.Stat_t
		if uerr == nil && gerr == nil && uid > 0 && gid >= 0 &&
			unix.Stat(workspace, &st) == nil && int(st.Uid) == uid {
			inv := Invoker{UID: uid, GID: gid, Sudo: true}
			if u, err := user.LookupId(strconv.Itoa(uid)); err == nil {
				inv.Name, inv.Home = u.Username, resolveHome(u.HomeDir)
			}
			return inv
		}
	}
	inv := Invoker{UID: os.Getuid(), GID: os.Getgid()}
	if h, err := os.UserHomeDir(); err == nil {
		inv.Home = resolveHome(h)
	}
	return inv
}

// resolveHome returns h absolute and symlink-free, or "" when it is not
// an existing directory (a passwd entry such as /nonexistent).
func resolveHome(h string) string {
	if !filepath.IsAbs(h) {
		return ""
	}
	r, err := filepath.EvalSymlinks(h)
	if err != nil {
		return ""
	}
	if fi, err := os.Stat(r); err != nil || !fi.IsDir() {
		return ""
	}
	return r
}
