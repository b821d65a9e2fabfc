// Package config is the pod config file, airlock.yaml: its schema as plain
// structs, its defaults, a strict parser and a validator made of small
// named checks.
//
// Invariants:
//   - Parsing is strict: an unknown field, a value of the wrong type, a
//     YAML anchor or alias, a second document or a file over MaxFileSize is
//     an error naming the file and line. Nothing is silently ignored.
//   - A parsed config starts from Default(); the file only overrides.
//   - Every error wraps errdefs.ErrInvalid and reads as one line.
//
// The format is versioned: "version: 1" is required, and a later version
// is refused rather than half-understood.
package config

import (
	"os"
	"path/filepath"
)

// Version is the only config file format this build understands.
const Version = 1

// FileName is the config file looked for at the root of a workspace.
const FileName = "airlock.yaml"

// Config is one pod's configuration.
type Config struct {
	Version    int        `yaml:"version" json:"version"`
	Filesystem Filesystem `yaml:"filesystem" json:"filesystem"`
	Diff       Diff       `yaml:"diff" json:"diff"`
	Run        Run        `yaml:"run" json:"run"`
	Resources  Resources  `yaml:"resources" json:"resources"`
	Security   Security   `yaml:"security" json:"security"`
	Network    Network    `yaml:"network" json:"network"`
}

// Filesystem describes the pod's view of the host file system. Paths
// starting with "~" are relative to the home directory; relative paths in
// Hide are relative to the workspace.
type Filesystem struct {
	Cow      []string `yaml:"cow" json:"cow"`           // copy-on-write host dirs besides the workspace
	Readonly []string `yaml:"readonly" json:"readonly"` // host dirs visible read-only
	Hide     []string `yaml:"hide" json:"hide"`         // paths replaced by an empty file or dir
	Tmpfs    []string `yaml:"tmpfs" json:"tmpfs"`       // private, empty, in memory
	Writable []string `yaml:"writable" json:"writable"` // rw bind mounts: writes reach the host
	Sockets  []string `yaml:"sockets" json:"sockets"`   // host unix sockets granted to the pod
}

// Diff tunes what `airlock diff` shows.
type Diff struct {
	Ignore []string `yaml:"ignore" json:"ignore"` // noise paths left out of diff
}

// Run describes the command a pod runs.
type Run struct {
	Command  []string          `yaml:"command" json:"command"` // empty: the user's shell
	Env      map[string]string `yaml:"env" json:"env"`
	Workdir  string            `yaml:"workdir" json:"workdir"`   // empty: caller's place in the workspace
	Hostname string            `yaml:"hostname" json:"hostname"` // empty: the pod name
}

// Resources are the pod's limits; zero means unlimited unless noted.
type Resources struct {
	Memory  ByteSize `yaml:"memory" json:"memory"`
	Swap    ByteSize `yaml:"swap" json:"swap"`
	CPUs    float64  `yaml:"cpus" json:"cpus"`
	Pids    int64    `yaml:"pids" json:"pids"`
	IO      IO       `yaml:"io" json:"io"`
	Timeout Duration `yaml:"timeout" json:"timeout"`
	Disk    Disk     `yaml:"disk" json:"disk"`
}

// IO limits the pod's block I/O rate, in bytes per second.
type IO struct {
	ReadBPS  ByteSize `yaml:"read_bps" json:"read_bps"`
	WriteBPS ByteSize `yaml:"write_bps" json:"write_bps"`
}

// Disk limits what the pod's layer may hold.
type Disk struct {
	Bytes  ByteSize `yaml:"bytes" json:"bytes"`
	Inodes int64    `yaml:"inodes" json:"inodes"`
}

// Security selects the syscall and file-access walls.
type Security struct {
	Seccomp   string   `yaml:"seccomp" json:"seccomp"` // "default", "strict" or a policy file path
	Landlock  bool     `yaml:"landlock" json:"landlock"`
	Downgrade []string `yaml:"downgrade" json:"downgrade"` // walls the user accepts running without
}

// Network is the pod's egress policy.
type Network struct {
	Mode         string   `yaml:"mode" json:"mode"` // "filtered", "none" or "host"
	Allow        []string `yaml:"allow" json:"allow"`
	Deny         []string `yaml:"deny" json:"deny"`
	Presets      []string `yaml:"presets" json:"presets"`
	Ports        []int    `yaml:"ports" json:"ports"`
	AllowPrivate []string `yaml:"allow_private" json:"allow_private"` // CIDRs
	DNS          DNS      `yaml:"dns" json:"dns"`
	Publish      []string `yaml:"publish" json:"publish"` // "HOST_IP:HOST_PORT:POD_PORT"
}

// DNS configures the pod's resolver.
type DNS struct {
	Mode     string   `yaml:"mode" json:"mode"`         // "allow", "deny" or "monitor"
	Upstream []string `yaml:"upstream" json:"upstream"` // empty: the host's resolv.conf
}

// Walls that security.downgrade may name.
var Downgradable = []string{"seccomp", "landlock", "cgroups", "network", "disk-quota"}

// Presets are the host sets network.presets may name. The supervisor holds
// the hosts of each; the two lists must agree.
var Presets = []string{"anthropic", "crates", "debian", "github", "go", "google-ai", "npm", "openai", "pypi"}

// Default returns the configuration a pod gets without a config file.
func Default() *Config {
	return &Config{
		Version: Version,
		Filesystem: Filesystem{
			Cow:      []string{"~"},
			Readonly: []string{"/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/opt"},
			Hide: []string{"~/.ssh", "~/.aws", "~/.gnupg", "~/.config/gcloud", "~/.docker", "~/.kube",
				"~/.netrc", "~/.git-credentials", "~/.password-store", ".env"},
			Tmpfs:    []string{"/tmp", "/run"},
			Writable: []string{},
			Sockets:  []string{},
		},
		Diff: Diff{Ignore: []string{"~/.cache", "~/.npm/_cacache", "~/.cache/go-build", "~/go/pkg/mod/cache",
			"~/.bash_history", "~/.zsh_history", "~/.python_history", "~/.lesshst", "~/.viminfo"}},
		Run: Run{Command: []string{}, Env: map[string]string{}},
		Resources: Resources{
			Pids: 4096,
			Disk: Disk{Bytes: 10 * GiB, Inodes: 1_000_000},
		},
		Security: Security{Seccomp: "default", Landlock: true, Downgrade: []string{}},
		Network: Network{
			Mode:         "filtered",
			Allow:        []string{},
			Deny:         []string{},
			Presets:      []string{},
			Ports:        []int{80, 443},
			AllowPrivate: []string{},
			DNS:          DNS{Mode: "allow", Upstream: []string{}},
			Publish:      []string{},
		},
	}
}

// FindInWorkspace returns the path of ws/airlock.yaml when it is a regular
// file (a symlink planted there by someone else is not followed).
func FindInWorkspace(ws string) (path string, found bool) {
	p := filepath.Join(ws, FileName)
	st, err := os.Lstat(p)
	if err != nil || !st.Mode().IsRegular() {
		return "", false
	}
	return p, true
}
