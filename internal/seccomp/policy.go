// Package seccomp is Airlock's syscall wall: a policy written as data (one
// Rule per syscall condition, each with the Reason it exists) and a compiler
// from that policy to a classic BPF program that the in-pod init installs
// last, just before it execs the agent.
//
// Invariants:
//   - Only the native x86_64 ABI reaches the rule table. Any other audit
//     architecture (the i386 ABI through int 0x80) and every x32 number
//     (nr & __X32_SYSCALL_BIT) return ERRNO(EPERM): the process survives and
//     sees the call fail, it is never let through.
//   - Rules for one syscall are tried in the order written; the first whose
//     argument conditions all hold decides. No rule matching means the
//     policy's Default, which for the built-in profiles is ERRNO(EPERM):
//     the profiles are allowlists.
//   - Conditions on arguments the kernel reads as int compare only the low
//     32 bits (the kernel ignores the high ones, so must we, or an attacker
//     slips past a deny rule by setting them).
//   - The compiled program is validated before it is returned: every jump
//     lands inside the program, it ends in RET and fits BPF_MAXINSNS.
//   - Eval is the policy's meaning in plain Go; tests hold the compiled
//     program to it for thousands of random inputs.
//   - A Notify rule blocks the calling thread until someone answers, so it
//     compiles to SECCOMP_RET_USER_NOTIF only when asked for (CompileNotify,
//     whose caller installs the filter with a listener and serves it).
//     Compile, for every other use, gives each Notify rule its Fallback:
//     nothing ever waits on a listener that does not exist.
package seccomp

import (
	"fmt"
	"sort"
	"strings"

	"golang.org/x/sys/unix"

	"github.com/airlock-dev/airlock/internal/errdefs"
)

// Action is what the kernel does with a matching syscall.
type Action int

const (
	// Allow lets the syscall run.
	Allow Action = iota
	// Errno fails the syscall with Rule.Errno (EPERM when zero).
	Errno
	// Kill ends the whole process (SECCOMP_RET_KILL_PROCESS).
	Kill
	// Log lets the syscall run and records it in the audit log.
	Log
	// Notify hands the syscall to the supervisor (SECCOMP_RET_USER_NOTIF),
	// which audits it and answers for the kernel; without a listener the
	// rule's Fallback applies instead.
	Notify
)

// The names are arrays indexed by the constants, not maps: static data
// that costs nothing when the binary starts.
var actionNames = [...]string{Allow: "allow", Errno: "errno", Kill: "kill", Log: "log", Notify: "notify"}

func (a Action) valid() bool { return a >= 0 && int(a) < len(actionNames) }

// Fallback is what a Notify rule does when the program is compiled
// without a listener. The zero value fails the call, so a rule that
// forgets to say fails closed.
type Fallback int

const (
	// FallbackErrno fails the syscall with Rule.Errno (EPERM when zero).
	FallbackErrno Fallback = iota
	// FallbackAllow lets it run: for a call the notification only watches
	// (another wall, such as the network namespace, decides it).
	FallbackAllow
)

var fallbackNames = [...]string{FallbackErrno: "errno", FallbackAllow: "allow"}

func (f Fallback) valid() bool { return f >= 0 && int(f) < len(fallbackNames) }

func (f Fallback) String() string {
	if f.valid() {
		return fallbackNames[f]
	}
	return fmt.Sprintf("Fallback(%d)", int(f))
}

func (a Action) String() string {
	if a.valid() {
		return actionNames[a]
	}
	return fmt.Sprintf("Action(%d)", int(a))
}

// ParseAction is the inverse of Action.String.
func ParseAction(s string) (Action, error) {
	for a, n := range actionNames {
		if n == s {
			return Action(a), nil
		}
	}
	return 0, errdefs.Invalid("unknown action %q: use allow, errno, kill, log or notify", s)
}

// Op is how an ArgCond compares an argument.
type Op int

const (
	// Eq holds when arg & Mask == Value.
	Eq Op = iota
	// Ne holds when arg & Mask != Value.
	Ne
	// AnySet holds when arg & Mask != 0 (Value is unused).
	AnySet
)

var opNames = [...]string{Eq: "eq", Ne: "ne", AnySet: "any_set"}

func (o Op) valid() bool { return o >= 0 && int(o) < len(opNames) }

func (o Op) String() string {
	if o.valid() {
		return opNames[o]
	}
	return fmt.Sprintf("Op(%d)", int(o))
}

// Low32 is the Mask for an argument the kernel declares as a 32-bit int.
const Low32 = 0xffffffff

// ArgCond is one test on one syscall argument. A zero Mask means all 64 bits.
type ArgCond struct {
	Index int
	Op    Op
	Mask  uint64
	Value uint64
}

func (c ArgCond) mask() uint64 {
	if c.Mask == 0 {
		return ^uint64(0)
	}
	return c.Mask
}

// holds reports whether the condition is true for the argument vector.
func (c ArgCond) holds(args [6]uint64) bool {
	v := args[c.Index] & c.mask()
	switch c.Op {
	case Eq:
		return v == c.Value
	case Ne:
		return v != c.Value
	default:
		return v != 0
	}
}

func (c ArgCond) String() string {
	m := ""
	if c.Mask != 0 {
		m = fmt.Sprintf(" & %#x", c.Mask)
	}
	switch c.Op {
	case AnySet:
		return fmt.Sprintf("arg%d%s != 0", c.Index, m)
	case Ne:
		return fmt.Sprintf("arg%d%s != %#x", c.Index, m, c.Value)
	default:
		return fmt.Sprintf("arg%d%s == %#x", c.Index, m, c.Value)
	}
}

// Rule decides one syscall when all its Args hold (always, when none).
type Rule struct {
	Name   string
	Action Action
	// Errno is returned by an Errno rule, and by a Notify rule that falls
	// back to FallbackErrno (EPERM when zero).
	Errno unix.Errno
	// Fallback is what a Notify rule does without a listener.
	Fallback Fallback
	Args     []ArgCond
	Reason   string
}

func (r Rule) errno() unix.Errno {
	if r.Errno == 0 {
		return unix.EPERM
	}
	return r.Errno
}

// matches reports whether every condition of the rule holds.
func (r Rule) matches(args [6]uint64) bool {
	for _, c := range r.Args {
		if !c.holds(args) {
			return false
		}
	}
	return true
}

// Verdict is the outcome of one syscall under a policy.
type Verdict struct {
	Action Action
	Errno  unix.Errno // set when Action is Errno
}

func (v Verdict) String() string {
	if v.Action == Errno {
		return fmt.Sprintf("errno(%s)", errnoName(v.Errno))
	}
	return v.Action.String()
}

func (r Rule) verdict() Verdict {
	if r.Action == Errno {
		return Verdict{Errno, r.errno()}
	}
	return Verdict{Action: r.Action}
}

// unwatched is the rule as it applies without a listener.
func (r Rule) unwatched() Rule {
	if r.Action != Notify {
		return r
	}
	if r.Fallback == FallbackAllow {
		r.Action, r.Errno = Allow, 0
	} else {
		r.Action = Errno
	}
	r.Fallback = FallbackErrno
	return r
}

// Policy is a whole syscall wall: rules plus what happens to everything else.
type Policy struct {
	Name    string
	Default Action
	// DefaultErrno is returned when Default is Errno (EPERM when zero).
	DefaultErrno unix.Errno
	Rules        []Rule
}

func (p *Policy) defaultVerdict() Verdict {
	return Rule{Action: p.Default, Errno: p.DefaultErrno}.verdict()
}

// Unwatched returns a copy of the policy in which every Notify rule is
// replaced by its fallback: what the policy means when nobody listens.
func (p *Policy) Unwatched() *Policy {
	q := *p
	q.Rules = make([]Rule, len(p.Rules))
	for i, r := range p.Rules {
		q.Rules[i] = r.unwatched()
	}
	return &q
}

// Watches reports whether some rule hands its syscall to a listener.
func (p *Policy) Watches() bool {
	for _, r := range p.Rules {
		if r.Action == Notify {
			return true
		}
	}
	return false
}

// Validate checks every rule and names the first bad one.
func (p *Policy) Validate() error {
	if !p.Default.valid() {
		return errdefs.Invalid("policy %q: unknown default action %d", p.Name, p.Default)
	}
	if p.Default == Notify {
		return errdefs.Invalid("policy %q: the default cannot be notify: name the syscalls the supervisor should see in rules", p.Name)
	}
	for i, r := range p.Rules {
		if err := r.validate(); err != nil {
			return fmt.Errorf("policy %q rule %d (%s): %w", p.Name, i+1, r.Name, err)
		}
	}
	return nil
}

func (r Rule) validate() error {
	if _, ok := x86_64Numbers()[r.Name]; !ok {
		return errdefs.Invalid("unknown x86_64 syscall %q: check the spelling against the syscall table", r.Name)
	}
	if !r.Action.valid() {
		return errdefs.Invalid("unknown action %d", r.Action)
	}
	if r.Errno > 0xffff {
		return errdefs.Invalid("errno %d does not fit in 16 bits", r.Errno)
	}
	if !r.Fallback.valid() {
		return errdefs.Invalid("unknown fallback %d", r.Fallback)
	}
	if r.Fallback != FallbackErrno && r.Action != Notify {
		return errdefs.Invalid("a fallback is set but the action is %s: only notify rules have one", r.Action)
	}
	if r.Errno != 0 && r.Action != Errno && (r.Action != Notify || r.Fallback != FallbackErrno) {
		return errdefs.Invalid("errno %d is set but the rule never fails with it (action %s)", r.Errno, r.Action)
	}
	if strings.TrimSpace(r.Reason) == "" {
		return errdefs.Invalid("no reason given: every rule must say why it exists")
	}
	for _, c := range r.Args {
		if err := c.validate(); err != nil {
			return err
		}
	}
	return nil
}

func (c ArgCond) validate() error {
	if c.Index < 0 || c.Index > 5 {
		return errdefs.Invalid("argument index %d out of range 0-5", c.Index)
	}
	if !c.Op.valid() {
		return errdefs.Invalid("unknown comparison %d", c.Op)
	}
	if c.Op != AnySet && c.Value&^c.mask() != 0 {
		return errdefs.Invalid("value %#x has bits outside mask %#x, so it can never match", c.Value, c.mask())
	}
	return nil
}

// Number returns the x86_64 number of a syscall name.
func Number(name string) (uint32, bool) {
	nr, ok := x86_64Numbers()[name]
	return nr, ok
}

// Eval is the policy's meaning in Go: the verdict for one syscall as the
// kernel would see it (audit arch, raw nr, six raw arguments).
func (p *Policy) Eval(arch, nr uint32, args [6]uint64) Verdict {
	if arch != unix.AUDIT_ARCH_X86_64 || nr >= x32SyscallBit {
		return Verdict{Errno, unix.EPERM}
	}
	for _, r := range p.Rules {
		if x86_64Numbers()[r.Name] == nr && r.matches(args) {
			return r.verdict()
		}
	}
	return p.defaultVerdict()
}

// Explain describes what the policy does with a syscall and why, for the
// docs and the CLI. Conditional rules are listed in the order they apply.
func Explain(p *Policy, syscall string) (action string, reason string) {
	if _, ok := x86_64Numbers()[syscall]; !ok {
		return "unknown", "not an x86_64 system call"
	}
	rules := p.rulesFor(syscall)
	if len(rules) == 0 {
		return p.defaultVerdict().String(), "not in the policy: the default action applies"
	}
	var acts, reasons []string
	for _, r := range rules {
		a := r.verdict().String()
		if r.Action == Notify {
			a += " (" + r.unwatched().verdict().String() + " without a listener)"
		}
		if len(r.Args) > 0 {
			a += " if " + condString(r.Args)
		}
		acts = append(acts, a)
		if !contains(reasons, r.Reason) {
			reasons = append(reasons, r.Reason)
		}
	}
	if !unconditional(rules) {
		acts = append(acts, "else "+p.defaultVerdict().String())
	}
	return strings.Join(acts, "; "), strings.Join(reasons, " ")
}

func (p *Policy) rulesFor(name string) []Rule {
	var out []Rule
	for _, r := range p.Rules {
		if r.Name == name {
			out = append(out, r)
		}
	}
	return out
}

// unconditional reports whether some rule in the list always matches, so
// the default can never be reached for that syscall.
func unconditional(rules []Rule) bool {
	for _, r := range rules {
		if len(r.Args) == 0 {
			return true
		}
	}
	return false
}

func condString(cs []ArgCond) string {
	parts := make([]string, len(cs))
	for i, c := range cs {
		parts[i] = c.String()
	}
	return strings.Join(parts, " && ")
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

// Syscalls returns the names the policy has rules for, sorted.
func (p *Policy) Syscalls() []string {
	seen := map[string]bool{}
	var out []string
	for _, r := range p.Rules {
		if !seen[r.Name] {
			seen[r.Name] = true
			out = append(out, r.Name)
		}
	}
	sort.Strings(out)
	return out
}

func errnoName(e unix.Errno) string {
	if n := unix.ErrnoName(e); n != "" {
		return n
	}
	return fmt.Sprintf("%d", int(e))
}
