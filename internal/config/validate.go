package config

import (
	"errors"
	"fmt"
	"net/netip"
	"path"
	"regexp"
	"strconv"
	"strings"
	"sync"

	"github.com/airlock-dev/airlock/internal/errdefs"
)

// check is one named validation rule. It returns "" when the config obeys
// it, else one human sentence (without the field name).
type check struct {
	field string
	fn    func(*Config) string
}

// checks are run in order; every failing one is reported.
var checks = []check{
	{"version", checkVersionField},
	{"filesystem.cow", func(c *Config) string { return pathList(c.Filesystem.Cow, homeOrAbs) }},
	{"filesystem.readonly", func(c *Config) string { return pathList(c.Filesystem.Readonly, homeOrAbs) }},
	{"filesystem.hide", func(c *Config) string { return pathList(c.Filesystem.Hide, anyPath) }},
	{"filesystem.tmpfs", func(c *Config) string { return pathList(c.Filesystem.Tmpfs, absOnly) }},
	{"filesystem.writable", func(c *Config) string { return pathList(c.Filesystem.Writable, homeOrAbs) }},
	{"filesystem.sockets", func(c *Config) string { return pathList(c.Filesystem.Sockets, homeOrAbs) }},
	{"diff.ignore", func(c *Config) string { return pathList(c.Diff.Ignore, anyPath) }},
	{"run.command", checkCommand},
	{"run.env", checkEnv},
	{"run.workdir", checkWorkdir},
	{"run.hostname", checkHostname},
	{"resources", checkResources},
	{"security.seccomp", checkSeccomp},
	{"security.downgrade", func(c *Config) string { return oneOfList(c.Security.Downgrade, Downgradable) }},
	{"network.mode", func(c *Config) string { return oneOf(c.Network.Mode, "filtered", "none", "host") }},
	{"network.allow", func(c *Config) string { return hostList(c.Network.Allow) }},
	{"network.deny", func(c *Config) string { return hostList(c.Network.Deny) }},
	{"network.presets", func(c *Config) string { return oneOfList(c.Network.Presets, Presets) }},
	{"network.ports", checkPorts},
	{"network.allow_private", checkCIDRs},
	{"network.dns.mode", func(c *Config) string { return oneOf(c.Network.DNS.Mode, "allow", "deny", "monitor") }},
	{"network.dns.upstream", checkUpstream},
	{"network.publish", checkPublish},
}

// Validate runs every check and joins the failures, one line each, as
// "field: sentence". The error wraps errdefs.ErrInvalid.
func (c *Config) Validate() error {
	var errs []error
	for _, ch := range checks {
		if msg := ch.fn(c); msg != "" {
			errs = append(errs, errdefs.Invalid("%s: %s", ch.field, msg))
		}
	}
	return errors.Join(errs...)
}

func checkVersionField(c *Config) string {
	if c.Version != Version {
		return fmt.Sprintf("must be %d, got %d", Version, c.Version)
	}
	return ""
}

// Path rules: which forms a list accepts.
const (
	absOnly   = 1 << iota // /abs/path
	homeOnly              // ~ or ~/rel
	relOnly               // workspace-relative
	homeOrAbs = absOnly | homeOnly
	anyPath   = absOnly | homeOnly | relOnly
)

func pathList(list []string, allowed int) string {
	for _, p := range list {
		if msg := checkPath(p, allowed); msg != "" {
			return fmt.Sprintf("%q %s", p, msg)
		}
	}
	return ""
}

func checkPath(p string, allowed int) string {
	if p == "" {
		return "is empty"
	}
	if strings.ContainsAny(p, "\x00\n") {
		return "contains a NUL or newline"
	}
	for _, part := range strings.Split(p, "/") {
		if part == ".." {
			return "contains \"..\"; write the path without it"
		}
	}
	var form int
	switch {
	case strings.HasPrefix(p, "/"):
		form = absOnly
	case p == "~" || strings.HasPrefix(p, "~/"):
		form = homeOnly
	case strings.HasPrefix(p, "~"):
		return "uses ~user, which is not supported; write ~/ or an absolute path"
	default:
		form = relOnly
	}
	if allowed&form == 0 {
		return "must be " + pathForms(allowed)
	}
	return ""
}

func pathForms(allowed int) string {
	switch allowed {
	case absOnly:
		return "an absolute path"
	case homeOrAbs:
		return "an absolute path or start with ~/"
	}
	return "a path"
}

func checkCommand(c *Config) string {
	for _, a := range c.Run.Command {
		if strings.ContainsRune(a, 0) {
			return "an argument contains a NUL byte"
		}
	}
	if len(c.Run.Command) > 0 && c.Run.Command[0] == "" {
		return "the program name is empty"
	}
	return ""
}

// The patterns are compiled on first use, not in every airlock process.
var envName = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`) })

func checkEnv(c *Config) string {
	for k, v := range c.Run.Env {
		if !envName().MatchString(k) {
			return fmt.Sprintf("%q is not a valid variable name (letters, digits and _, not starting with a digit)", k)
		}
		if strings.ContainsRune(v, 0) {
			return fmt.Sprintf("the value of %s contains a NUL byte", k)
		}
	}
	return ""
}

func checkWorkdir(c *Config) string {
	if c.Run.Workdir == "" {
		return ""
	}
	return pathList([]string{c.Run.Workdir}, anyPath)
}

// hostLabel is one DNS label; its length (at most 63) is checked apart.
var hostLabel = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^[a-z0-9]([a-z0-9-]*[a-z0-9])?$`) })

func checkHostname(c *Config) string {
	h := c.Run.Hostname
	if h == "" {
		return ""
	}
	if len(h) > 64 || !validDNSName(strings.ToLower(h)) {
		return fmt.Sprintf("%q is not a valid host name (letters, digits, - and ., at most 64 characters)", h)
	}
	return ""
}

func validDNSName(h string) bool {
	if h == "" || len(h) > 253 {
		return false
	}
	for _, l := range strings.Split(h, ".") {
		if len(l) > 63 || !hostLabel().MatchString(l) {
			return false
		}
	}
	return true
}

func checkResources(c *Config) string {
	r := c.Resources
	switch {
	case r.Memory < 0 || r.Swap < 0 || r.IO.ReadBPS < 0 || r.IO.WriteBPS < 0 || r.Disk.Bytes < 0:
		return "sizes must not be negative (0 means unlimited)"
	case r.Memory > 0 && r.Memory < 4*MiB:
		return fmt.Sprintf("memory %s is too small to start a process; use at least 4MiB or 0 for unlimited", r.Memory)
	case r.CPUs < 0 || r.CPUs != r.CPUs || r.CPUs > 1<<16:
		return "cpus must be a number of CPUs between 0 (unlimited) and 65536"
	case r.Pids < 0:
		return "pids must not be negative (0 means unlimited)"
	case r.Timeout < 0:
		return "timeout must not be negative (0 means none)"
	case r.Disk.Inodes < 0:
		return "disk.inodes must not be negative (0 means unlimited)"
	}
	return ""
}

func checkSeccomp(c *Config) string {
	s := c.Security.Seccomp
	if s == "default" || s == "strict" || path.IsAbs(s) || strings.HasPrefix(s, "~/") {
		return ""
	}
	return fmt.Sprintf("%q must be \"default\", \"strict\" or the absolute path of a policy file", s)
}

func oneOf(v string, allowed ...string) string {
	if contains(allowed, v) {
		return ""
	}
	return fmt.Sprintf("%q must be one of %s", v, strings.Join(allowed, ", "))
}

func oneOfList(vs, allowed []string) string {
	for _, v := range vs {
		if msg := oneOf(v, allowed...); msg != "" {
			return msg
		}
	}
	return ""
}

// hostList accepts host names and "*.example.com" wildcards. IP literals
// are refused: the network wall matches names, and an allowed address
// would bypass the resolver.
func hostList(hosts []string) string {
	for _, h := range hosts {
		name := strings.TrimSuffix(strings.ToLower(h), ".")
		name = strings.TrimPrefix(name, "*.")
		if _, err := netip.ParseAddr(name); err == nil {
			return fmt.Sprintf("%q is an IP address; list host names (use network.allow_private for address ranges)", h)
		}
		if !validDNSName(name) {
			return fmt.Sprintf("%q is not a host name or a *.domain wildcard", h)
		}
	}
	return ""
}

func checkPorts(c *Config) string {
	for _, p := range c.Network.Ports {
		if p < 1 || p > 65535 {
			return fmt.Sprintf("%d is not a port number (1-65535)", p)
		}
	}
	return ""
}

func checkCIDRs(c *Config) string {
	for _, s := range c.Network.AllowPrivate {
		if _, err := netip.ParsePrefix(s); err != nil {
			return fmt.Sprintf("%q is not a CIDR range such as 10.0.0.0/8", s)
		}
	}
	return ""
}

func checkUpstream(c *Config) string {
	for _, s := range c.Network.DNS.Upstream {
		if _, err := netip.ParseAddr(s); err == nil {
			continue
		}
		if _, err := netip.ParseAddrPort(s); err == nil {
			continue
		}
		return fmt.Sprintf("%q is not an IP address or IP:port", s)
	}
	return ""
}

// checkPublish accepts what `airlock run -p` does: ParsePublish.
func checkPublish(c *Config) string {
	for _, s := range c.Network.Publish {
		if _, _, err := ParsePublish(s); err != nil {
			return err.Error()
		}
	}
	return ""
}

// ParsePublish reads a port publication, "[HOST_IP:]HOST_PORT:POD_PORT",
// as network.publish and `airlock run -p` both take it. Without HOST_IP
// the host side binds 127.0.0.1: a dev server in the pod is reachable
// from the host's browser, not from the host's network. An IPv6 host
// address goes in brackets: "[::1]:8080:80".
func ParsePublish(s string) (host netip.AddrPort, podPort int, err error) {
	bad := errdefs.Invalid("publish %q: use [HOST_IP:]HOST_PORT:POD_PORT, such as 8080:80 or 0.0.0.0:8080:80", s)
	i := strings.LastIndex(s, ":")
	if i < 0 {
		return host, 0, bad
	}
	hostPart, podPart := s[:i], s[i+1:]
	if !strings.Contains(hostPart, ":") {
		hostPart = "127.0.0.1:" + hostPart
	}
	host, err = netip.ParseAddrPort(hostPart)
	p, perr := strconv.ParseUint(podPart, 10, 16)
	if err != nil || perr != nil || p == 0 || host.Port() == 0 || host.Addr().Zone() != "" {
		return netip.AddrPort{}, 0, bad
	}
	return host, int(p), nil
}
