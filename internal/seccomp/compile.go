package seccomp

import (
	"fmt"
	"sort"

	"golang.org/x/sys/unix"

	"github.com/airlock-dev/airlock/internal/errdefs"
)

// Layout of struct seccomp_data, which the filter reads.
const (
	offNr   = 0
	offArch = 4
	offArgs = 16
	// dataSize is sizeof(struct seccomp_data).
	dataSize = 64
	// x32SyscallBit marks x32 ABI numbers; nothing at or above it is native.
	x32SyscallBit = 0x40000000
	// maxInsns is BPF_MAXINSNS: the kernel refuses longer programs.
	maxInsns = 4096
)

// Compile turns the policy into a classic BPF program for x86_64:
//
//	arch check -> x32 check -> binary search over syscall-number ranges
//	-> per-syscall rule blocks -> shared RET instructions
//
// Syscalls whose verdict does not depend on arguments jump straight to a
// shared RET, so the kernel's per-syscall action cache can skip the filter.
//
// Notify rules get their Fallback: the program needs no listener.
func Compile(p *Policy) ([]unix.SockFilter, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	return compile(p.Unwatched())
}

// CompileNotify is Compile with Notify rules returning
// SECCOMP_RET_USER_NOTIF. The program must be installed with
// SECCOMP_FILTER_FLAG_NEW_LISTENER and the listener served: every
// notification blocks its thread until it is answered (or the listener
// is closed, when the kernel fails the call with ENOSYS).
func CompileNotify(p *Policy) ([]unix.SockFilter, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	return compile(p)
}

func compile(p *Policy) ([]unix.SockFilter, error) {
	g := &gen{rets: map[uint32]label{}}
	eperm := g.retLabel(Verdict{Errno, unix.EPERM})
	native := g.newLabel()
	g.stmt(unix.BPF_LD|unix.BPF_W|unix.BPF_ABS, offArch)
	g.jump(unix.BPF_JEQ, unix.AUDIT_ARCH_X86_64, native, eperm)
	g.bind(native)
	g.stmt(unix.BPF_LD|unix.BPF_W|unix.BPF_ABS, offNr)
	search := g.newLabel()
	g.jump(unix.BPF_JGE, x32SyscallBit, eperm, search)
	g.bind(search)
	blocks := g.planBlocks(p)
	g.search(g.ranges(p, blocks))
	for _, b := range blocks {
		g.emitBlock(p, b)
	}
	g.emitRets()
	prog, err := g.assemble()
	if err != nil {
		return nil, fmt.Errorf("compiling policy %q: %w", p.Name, err)
	}
	if err := validateProg(prog); err != nil {
		return nil, fmt.Errorf("compiling policy %q produced a bad program (a compiler bug; report it): %w", p.Name, err)
	}
	return prog, nil
}

// block is the rule chain of one syscall whose verdict depends on arguments.
type block struct {
	nr    uint32
	rules []Rule
	entry label
}

// planBlocks groups rules by syscall number, keeping their order and
// dropping rules after the first unconditional one (they cannot match).
func (g *gen) planBlocks(p *Policy) map[uint32]*block {
	blocks := map[uint32]*block{}
	for _, r := range p.Rules {
		nr := x86_64Numbers()[r.Name]
		b := blocks[nr]
		if b == nil {
			b = &block{nr: nr}
			blocks[nr] = b
		}
		if !unconditional(b.rules) {
			b.rules = append(b.rules, r)
		}
	}
	for _, b := range blocks {
		if len(b.rules[0].Args) == 0 {
			b.entry = g.retLabel(b.rules[0].verdict())
		} else {
			b.entry = g.newLabel()
		}
	}
	return blocks
}

// rng maps syscall numbers [start, next range's start) to a target.
type rng struct {
	start  uint32
	target label
}

// ranges covers [0, x32SyscallBit) with runs of equal targets.
func (g *gen) ranges(p *Policy, blocks map[uint32]*block) []rng {
	def := g.retLabel(p.defaultVerdict())
	nrs := make([]uint32, 0, len(blocks))
	for nr := range blocks {
		nrs = append(nrs, nr)
	}
	sort.Slice(nrs, func(i, j int) bool { return nrs[i] < nrs[j] })
	out := []rng{{0, def}}
	add := func(start uint32, t label) {
		if last := &out[len(out)-1]; last.start == start {
			last.target = t
		} else if last.target != t {
			out = append(out, rng{start, t})
		}
		// Merge with the run before if the replacement made them equal.
		if n := len(out); n > 1 && out[n-2].target == out[n-1].target {
			out = out[:n-1]
		}
	}
	for _, nr := range nrs {
		add(nr, blocks[nr].entry)
		add(nr+1, def)
	}
	return out
}

// search emits a balanced binary search over the ranges with the syscall
// number in the accumulator.
func (g *gen) search(rs []rng) {
	if len(rs) == 1 {
		g.ja(rs[0].target)
		return
	}
	mid := len(rs) / 2
	left, right := rs[:mid], rs[mid:]
	lt, rt := g.entry(left), g.entry(right)
	g.jump(unix.BPF_JGE, right[0].start, rt, lt)
	if len(left) > 1 {
		g.bind(lt)
		g.search(left)
	}
	if len(right) > 1 {
		g.bind(rt)
		g.search(right)
	}
}

func (g *gen) entry(rs []rng) label {
	if len(rs) == 1 {
		return rs[0].target
	}
	return g.newLabel()
}

// emitBlock emits the rule chain of one syscall: each rule's conditions
// in turn, a failed condition moving on to the next rule.
func (g *gen) emitBlock(p *Policy, b *block) {
	if len(b.rules[0].Args) == 0 {
		return // reached through its shared RET
	}
	g.bind(b.entry)
	for _, r := range b.rules {
		fail := g.newLabel()
		for _, c := range r.Args {
			pass := g.newLabel()
			g.cond(c, pass, fail)
			g.bind(pass)
		}
		g.ja(g.retLabel(r.verdict()))
		g.bind(fail)
	}
	if !unconditional(b.rules) {
		g.ja(g.retLabel(p.defaultVerdict()))
	}
}

// cond emits a test of one 64-bit argument as two 32-bit words (x86_64 is
// little-endian: the low word comes first).
func (g *gen) cond(c ArgCond, pass, fail label) {
	lo := uint32(offArgs + 8*c.Index)
	m, v := c.mask(), c.Value
	words := []struct{ off, mask, val uint32 }{
		{lo + 4, uint32(m >> 32), uint32(v >> 32)},
		{lo, uint32(m), uint32(v)},
	}
	if c.Op == Ne {
		pass, fail = fail, pass // Ne is Eq with the outcomes swapped
	}
	if c.Op == AnySet {
		g.anySet(words[:], pass, fail)
	} else {
		g.eq(words[:], pass, fail)
	}
}

type word = struct{ off, mask, val uint32 }

// eq: every masked word must equal its value.
func (g *gen) eq(words []word, pass, fail label) {
	for _, w := range words {
		if w.mask == 0 {
			continue
		}
		next := g.newLabel()
		g.load(w.off, w.mask)
		g.jump(unix.BPF_JEQ, w.val, next, fail)
		g.bind(next)
	}
	g.ja(pass)
}

// anySet: some masked word must have a bit set.
func (g *gen) anySet(words []word, pass, fail label) {
	for _, w := range words {
		if w.mask == 0 {
			continue
		}
		next := g.newLabel()
		g.stmt(unix.BPF_LD|unix.BPF_W|unix.BPF_ABS, w.off)
		g.jump(unix.BPF_JSET, w.mask, pass, next)
		g.bind(next)
	}
	g.ja(fail)
}

func (g *gen) load(off, mask uint32) {
	g.stmt(unix.BPF_LD|unix.BPF_W|unix.BPF_ABS, off)
	if mask != 0xffffffff {
		g.stmt(unix.BPF_ALU|unix.BPF_AND|unix.BPF_K, mask)
	}
}

// retValue is the filter's return value for a verdict.
func retValue(v Verdict) uint32 {
	switch v.Action {
	case Allow:
		return unix.SECCOMP_RET_ALLOW
	case Kill:
		return unix.SECCOMP_RET_KILL_PROCESS
	case Log:
		return unix.SECCOMP_RET_LOG
	case Notify:
		return unix.SECCOMP_RET_USER_NOTIF
	default:
		return unix.SECCOMP_RET_ERRNO | uint32(v.Errno)&unix.SECCOMP_RET_DATA
	}
}

func (g *gen) retLabel(v Verdict) label {
	k := retValue(v)
	if l, ok := g.rets[k]; ok {
		return l
	}
	l := g.newLabel()
	g.rets[k] = l
	g.retOrder = append(g.retOrder, k)
	return l
}

// emitRets places the shared RET instructions last, so that every jump
// to them is forward, as BPF requires.
func (g *gen) emitRets() {
	for _, k := range g.retOrder {
		g.bind(g.rets[k])
		g.stmt(unix.BPF_RET|unix.BPF_K, k)
	}
}

// validateProg is the compiler's own check of its output: every jump lands
// inside the program, only the instructions seccomp accepts appear, loads
// stay inside seccomp_data, and the last instruction returns.
func validateProg(prog []unix.SockFilter) error {
	n := len(prog)
	if n == 0 || n > maxInsns {
		return errdefs.Invalid("program has %d instructions; the kernel accepts 1 to %d", n, maxInsns)
	}
	for i, ins := range prog {
		if err := validateInsn(i, n, ins); err != nil {
			return err
		}
	}
	if prog[n-1].Code != unix.BPF_RET|unix.BPF_K {
		return errdefs.Invalid("program does not end in RET")
	}
	return nil
}

func validateInsn(i, n int, ins unix.SockFilter) error {
	switch ins.Code {
	case unix.BPF_LD | unix.BPF_W | unix.BPF_ABS:
		if ins.K%4 != 0 || ins.K >= dataSize {
			return errdefs.Invalid("instruction %d loads offset %d outside seccomp_data", i, ins.K)
		}
	case unix.BPF_ALU | unix.BPF_AND | unix.BPF_K, unix.BPF_RET | unix.BPF_K:
	case unix.BPF_JMP | unix.BPF_JA:
		if uint64(i)+1+uint64(ins.K) >= uint64(n) {
			return errdefs.Invalid("instruction %d jumps past the end", i)
		}
	case unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, unix.BPF_JMP | unix.BPF_JGE | unix.BPF_K,
		unix.BPF_JMP | unix.BPF_JGT | unix.BPF_K, unix.BPF_JMP | unix.BPF_JSET | unix.BPF_K:
		if i+1+int(ins.Jt) >= n || i+1+int(ins.Jf) >= n {
			return errdefs.Invalid("instruction %d jumps past the end", i)
		}
	default:
		return errdefs.Invalid("instruction %d has unexpected opcode %#x", i, ins.Code)
	}
	return nil
}
