package seccomp

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
	"golang.org/x/sys/unix"

	"github.com/airlock-dev/airlock/internal/errdefs"
)

// FileVersion is the policy file format this package reads.
const FileVersion = 1

// Profile returns a built-in profile ("default" or "strict") or, when name
// looks like a path (contains a slash or ends in .yaml, .yml or .json), the
// policy in that file. The file form is YAML (JSON is accepted as the
// subset it is); see docs/seccomp.md for the schema.
func Profile(name string) (*Policy, error) {
	switch name {
	case "default", "":
		return defaultPolicy(), nil
	case "strict":
		return strictPolicy(), nil
	}
	if !looksLikePath(name) {
		return nil, errdefs.NotFound("unknown seccomp profile %q: use default, strict or a path to a policy file", name)
	}
	data, err := os.ReadFile(name)
	if err != nil {
		return nil, fmt.Errorf("reading seccomp policy file: %w", err)
	}
	p, err := ParseFile(data)
	if err != nil {
		return nil, fmt.Errorf("seccomp policy file %s: %w", name, err)
	}
	return p, nil
}

func looksLikePath(name string) bool {
	return strings.Contains(name, "/") || strings.HasSuffix(name, ".yaml") ||
		strings.HasSuffix(name, ".yml") || strings.HasSuffix(name, ".json")
}

type filePolicy struct {
	Version      int        `yaml:"version"`
	Name         string     `yaml:"name"`
	Default      string     `yaml:"default"`
	DefaultErrno string     `yaml:"default_errno"`
	Rules        []fileRule `yaml:"rules"`
}

type fileRule struct {
	Name   string   `yaml:"name"`
	Names  []string `yaml:"names"`
	Action string   `yaml:"action"`
	Errno  string   `yaml:"errno"`
	// Fallback is a notify rule's action without a listener: errno
	// (the default) or allow.
	Fallback string    `yaml:"fallback"`
	Args     []fileArg `yaml:"args"`
	Reason   string    `yaml:"reason"`
}

type fileArg struct {
	Index *int   `yaml:"index"`
	Op    string `yaml:"op"`
	Mask  uint64 `yaml:"mask"`
	Value uint64 `yaml:"value"`
}

// ParseFile parses a policy file strictly: unknown fields, unknown
// syscalls, actions, ops or errnos, and rules without a reason are errors
// that name the rule.
func ParseFile(data []byte) (*Policy, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	var f filePolicy
	if err := dec.Decode(&f); err != nil {
		return nil, errdefs.Invalid("parsing: %v", err)
	}
	var extra any
	if err := dec.Decode(&extra); !errors.Is(err, io.EOF) {
		return nil, errdefs.Invalid("more than one YAML document: put the whole policy in one")
	}
	p, err := f.policy()
	if err != nil {
		return nil, err
	}
	return p, p.Validate()
}

func (f *filePolicy) policy() (*Policy, error) {
	if f.Version != FileVersion {
		return nil, errdefs.Invalid("version is %d: this Airlock reads version %d (set `version: %d`)", f.Version, FileVersion, FileVersion)
	}
	if f.Name == "" {
		return nil, errdefs.Invalid("the policy has no name: add `name: ...`")
	}
	p := &Policy{Name: f.Name}
	var err error
	if p.Default, err = ParseAction(f.Default); err != nil {
		return nil, fmt.Errorf("default: %w", err)
	}
	if p.DefaultErrno, err = parseErrno(f.DefaultErrno); err != nil {
		return nil, fmt.Errorf("default_errno: %w", err)
	}
	for i, fr := range f.Rules {
		rules, err := fr.rules()
		if err != nil {
			return nil, fmt.Errorf("rule %d (%s): %w", i+1, fr.label(), err)
		}
		p.Rules = append(p.Rules, rules...)
	}
	return p, nil
}

func (fr fileRule) label() string {
	if fr.Name != "" {
		return fr.Name
	}
	return strings.Join(fr.Names, ",")
}

// rules expands one file rule into one Rule per syscall name.
func (fr fileRule) rules() ([]Rule, error) {
	names := fr.Names
	if (fr.Name == "") == (len(fr.Names) == 0) {
		return nil, errdefs.Invalid("give exactly one of name or names")
	}
	if fr.Name != "" {
		names = []string{fr.Name}
	}
	base := Rule{Reason: fr.Reason}
	var err error
	if base.Action, err = ParseAction(fr.Action); err != nil {
		return nil, err
	}
	if base.Errno, err = parseErrno(fr.Errno); err != nil {
		return nil, err
	}
	if base.Fallback, err = parseFallback(fr.Fallback); err != nil {
		return nil, err
	}
	if fr.Fallback != "" && base.Action != Notify {
		return nil, errdefs.Invalid("fallback is set but the action is %s: only notify rules have one", base.Action)
	}
	if fr.Errno != "" && base.Action != Errno && (base.Action != Notify || base.Fallback != FallbackErrno) {
		return nil, errdefs.Invalid("errno is set but the action is %s, not errno (or notify falling back to errno)", base.Action)
	}
	for j, a := range fr.Args {
		c, err := a.cond()
		if err != nil {
			return nil, fmt.Errorf("args[%d]: %w", j, err)
		}
		base.Args = append(base.Args, c)
	}
	out := make([]Rule, len(names))
	for i, n := range names {
		r := base
		r.Name = n
		if err := r.validate(); err != nil {
			return nil, err
		}
		out[i] = r
	}
	return out, nil
}

func (a fileArg) cond() (ArgCond, error) {
	if a.Index == nil {
		return ArgCond{}, errdefs.Invalid("index is missing (0-5)")
	}
	for op, n := range opNames {
		if n == a.Op {
			return ArgCond{Index: *a.Index, Op: Op(op), Mask: a.Mask, Value: a.Value}, nil
		}
	}
	return ArgCond{}, errdefs.Invalid("unknown op %q: use eq, ne or any_set", a.Op)
}

func parseFallback(s string) (Fallback, error) {
	if s == "" {
		return FallbackErrno, nil
	}
	for f, n := range fallbackNames {
		if n == s {
			return Fallback(f), nil
		}
	}
	return 0, errdefs.Invalid("unknown fallback %q: use errno or allow", s)
}

// parseErrno accepts a name (EPERM) or a number; empty means the default.
func parseErrno(s string) (unix.Errno, error) {
	if s == "" {
		return 0, nil
	}
	if n, err := strconv.ParseUint(s, 0, 16); err == nil {
		return unix.Errno(n), nil
	}
	for e := unix.Errno(1); e < 4096; e++ {
		if unix.ErrnoName(e) == s {
			return e, nil
		}
	}
	return 0, errdefs.Invalid("unknown errno %q: use a name such as EPERM or a number", s)
}
