// Package supervisor owns a running pod on the host side: it turns the
// pod's config into a sandbox spec (filesystem view, seccomp program,
// Landlock rules, cgroup, network wall), starts the in-pod init, enforces
// the time budget, writes the audit trail, and records the conflict base
// when the pod stops.
//
// Walls fail closed (invariant 7): a wall that cannot be built stops the
// run with ErrUnsupported unless the user listed it in security.downgrade
// or --downgrade, and every accepted downgrade is audited.
package supervisor

import (
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/airlock-dev/airlock/internal/pod"
)

// passEnv lists host environment variables the agent inherits. Everything
// else (tokens, cloud keys, agent sockets) stays on the host: secrets reach
// the agent only through the vault.
var passEnv = []string{
	"PATH", "HOME", "USER", "LOGNAME", "SHELL", "TERM", "COLORTERM", "LANG",
	"LANGUAGE", "TZ", "EDITOR", "VISUAL", "PAGER", "GOPATH", "GOROOT",
	"GOFLAGS", "GOPROXY", "GOTOOLCHAIN", "CARGO_HOME", "RUSTUP_HOME",
	"JAVA_HOME", "NVM_DIR", "PYENV_ROOT", "VIRTUAL_ENV", "CC", "CXX",
}

// BuildEnv returns the agent's environment: the pass-through subset of
// host, then config env, then -e flags (later wins), sorted.
func BuildEnv(host []string, cfgEnv map[string]string, flags []string, hostname string) []string {
	m := map[string]string{}
	for _, kv := range host {
		k, v, ok := strings.Cut(kv, "=")
		if ok && (contains(passEnv, k) || strings.HasPrefix(k, "LC_")) {
			m[k] = v
		}
	}
	if m["PATH"] == "" {
		m["PATH"] = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
	}
	for k, v := range cfgEnv {
		m[k] = v
	}
	for _, kv := range flags {
		k, v, _ := strings.Cut(kv, "=")
		m[k] = v
	}
	m["AIRLOCK_POD"] = hostname
	out := make([]string, 0, len(m))
	for k, v := range m {
		out = append(out, k+"="+v)
	}
	sort.Strings(out)
	return out
}

// identityEnv makes HOME the home of the pod's view and, under sudo,
// USER and LOGNAME the invoker's, on top of the host environment: the
// agent runs as the person who ran sudo, so root's names would mislead.
func identityEnv(host []string, inv pod.Invoker, home string) []string {
	env := append([]string(nil), host...)
	if home != "" {
		env = append(env, "HOME="+home)
	}
	if inv.Sudo && inv.Name != "" {
		env = append(env, "USER="+inv.Name, "LOGNAME="+inv.Name)
	}
	return env
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// expandPath turns a config path into an absolute host path: "~" and "~/x"
// are home-relative, relative paths are workspace-relative.
func expandPath(p, home, workspace string) string {
	switch {
	case p == "~":
		return home
	case strings.HasPrefix(p, "~/"):
		return filepath.Join(home, p[2:])
	case filepath.IsAbs(p):
		return filepath.Clean(p)
	default:
		return filepath.Join(workspace, p)
	}
}

// homeDir is the invoking user's home directory.
func homeDir() string {
	if h, err := os.UserHomeDir(); err == nil {
		return h
	}
	return "/root"
}
