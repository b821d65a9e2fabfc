package seccomp

import (
	"encoding/binary"
	"fmt"
	"math/rand"
	"testing"

	"golang.org/x/sys/unix"
)

// run interprets a classic BPF seccomp program over one seccomp_data, the
// way the kernel does, failing the test on anything the kernel would refuse.
func run(t testing.TB, prog []unix.SockFilter, arch, nr uint32, args [6]uint64) uint32 {
	var data [dataSize]byte
	binary.LittleEndian.PutUint32(data[offNr:], nr)
	binary.LittleEndian.PutUint32(data[offArch:], arch)
	for i, a := range args {
		binary.LittleEndian.PutUint64(data[offArgs+8*i:], a)
	}
	var acc uint32
	for pc := 0; pc < len(prog); pc++ {
		ins := prog[pc]
		switch ins.Code {
		case unix.BPF_LD | unix.BPF_W | unix.BPF_ABS:
			acc = binary.LittleEndian.Uint32(data[ins.K:])
		case unix.BPF_ALU | unix.BPF_AND | unix.BPF_K:
			acc &= ins.K
		case unix.BPF_RET | unix.BPF_K:
			return ins.K
		case unix.BPF_JMP | unix.BPF_JA:
			pc += int(ins.K)
		case unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K:
			pc += branch(acc == ins.K, ins)
		case unix.BPF_JMP | unix.BPF_JGE | unix.BPF_K:
			pc += branch(acc >= ins.K, ins)
		case unix.BPF_JMP | unix.BPF_JGT | unix.BPF_K:
			pc += branch(acc > ins.K, ins)
		case unix.BPF_JMP | unix.BPF_JSET | unix.BPF_K:
			pc += branch(acc&ins.K != 0, ins)
		default:
			t.Fatalf("pc %d: unknown opcode %#x", pc, ins.Code)
		}
	}
	t.Fatalf("program fell off its end")
	return 0
}

func branch(c bool, ins unix.SockFilter) int {
	if c {
		return int(ins.Jt)
	}
	return int(ins.Jf)
}

// interesting returns argument values near the ones the rules compare.
func interesting(p *Policy) []uint64 {
	vals := []uint64{0, 1, 0xffffffff, 1 << 32, ^uint64(0), 0xdeadbeef00000000}
	for _, r := range p.Rules {
		for _, c := range r.Args {
			for _, hi := range []uint64{0, 0xdeadbeef << 32, 1 << 63} {
				vals = append(vals, c.Value|hi, c.Value^1, c.mask()&^c.Value, c.Value|c.mask())
			}
		}
	}
	return vals
}

// checkAgainstEval compares the compiled programs with Policy.Eval for n
// random (arch, nr, args) tuples biased towards the values that matter:
// CompileNotify with the policy itself, Compile with its Unwatched form.
func checkAgainstEval(t *testing.T, p *Policy, n int, seed int64) {
	t.Helper()
	watched, err := CompileNotify(p)
	if err != nil {
		t.Fatal(err)
	}
	checkProgram(t, watched, p, n, seed)
	plain, err := Compile(p)
	if err != nil {
		t.Fatal(err)
	}
	unwatched := p.Unwatched()
	if unwatched.Watches() {
		t.Fatalf("policy %s: Unwatched still has notify rules", p.Name)
	}
	checkProgram(t, plain, unwatched, n, seed)
	if !p.Watches() {
		return
	}
	for _, ins := range plain {
		if ins.Code == unix.BPF_RET|unix.BPF_K && ins.K == unix.SECCOMP_RET_USER_NOTIF {
			t.Fatalf("policy %s: Compile returns USER_NOTIF, which would block on a listener nobody serves", p.Name)
		}
	}
}

func checkProgram(t *testing.T, prog []unix.SockFilter, p *Policy, n int, seed int64) {
	t.Helper()
	rnd := rand.New(rand.NewSource(seed))
	vals := interesting(p)
	names := p.Syscalls()
	arches := []uint32{unix.AUDIT_ARCH_X86_64, unix.AUDIT_ARCH_X86_64, unix.AUDIT_ARCH_X86_64, unix.AUDIT_ARCH_I386, unix.AUDIT_ARCH_AARCH64}
	for i := 0; i < n; i++ {
		arch := arches[rnd.Intn(len(arches))]
		var nr uint32
		switch rnd.Intn(4) {
		case 0, 1:
			nr = x86_64Numbers()[names[rnd.Intn(len(names))]]
		case 2:
			nr = uint32(rnd.Intn(600))
		default:
			nr = rnd.Uint32()
		}
		if rnd.Intn(10) == 0 {
			nr |= x32SyscallBit
		}
		var args [6]uint64
		for j := range args {
			if rnd.Intn(2) == 0 {
				args[j] = vals[rnd.Intn(len(vals))]
			} else {
				args[j] = rnd.Uint64() >> uint(rnd.Intn(64))
			}
		}
		want := retValue(p.Eval(arch, nr, args))
		if got := run(t, prog, arch, nr, args); got != want {
			t.Fatalf("policy %s arch %#x nr %d args %#x: program returns %#x, Eval says %#x", p.Name, arch, nr, args, got, want)
		}
	}
}

func TestCompiledMatchesEval(t *testing.T) {
	for _, name := range []string{"default", "strict"} {
		p, err := Profile(name)
		if err != nil {
			t.Fatal(err)
		}
		checkAgainstEval(t, p, 20000, 1)
	}
}

// A synthetic policy with far more rules than any 8-bit jump can span,
// every syscall argument-filtered and with mixed actions, exercises the
// long-jump trampolines and every comparison.
func TestCompilerLongPolicy(t *testing.T) {
	rnd := rand.New(rand.NewSource(7))
	p := &Policy{Name: "long", Default: Errno, DefaultErrno: unix.EACCES}
	names := make([]string, 0, len(x86_64Numbers()))
	for n := range x86_64Numbers() {
		names = append(names, n)
	}
	for i := 0; i < 400; i++ {
		r := Rule{Name: names[rnd.Intn(len(names))], Action: Action(rnd.Intn(5)), Reason: "test"}
		if r.Action == Notify {
			r.Fallback = Fallback(rnd.Intn(2))
		}
		if r.Action == Errno || (r.Action == Notify && r.Fallback == FallbackErrno && rnd.Intn(2) == 0) {
			r.Errno = unix.Errno(1 + rnd.Intn(100))
		}
		for j := rnd.Intn(3); j > 0; j-- {
			r.Args = append(r.Args, randomCond(rnd))
		}
		p.Rules = append(p.Rules, r)
	}
	prog, err := Compile(p)
	if err != nil {
		t.Fatal(err)
	}
	if len(prog) < 600 || trampolines(prog) == 0 {
		t.Fatalf("program has %d instructions and %d trampolines; the test wants long jumps", len(prog), trampolines(prog))
	}
	checkAgainstEval(t, p, 30000, 2)
}

// trampolines counts conditional jumps that branch to a JA right after them.
func trampolines(prog []unix.SockFilter) int {
	n := 0
	for i, ins := range prog {
		if ins.Code&0x07 == unix.BPF_JMP && ins.Code != unix.BPF_JMP|unix.BPF_JA && i+2 < len(prog) &&
			(prog[i+1].Code == unix.BPF_JMP|unix.BPF_JA && (ins.Jt == 0 || ins.Jf == 0)) {
			n++
		}
	}
	return n
}

func randomCond(rnd *rand.Rand) ArgCond {
	masks := []uint64{0, Low32, 0xffffffff00000000, 0xf, 0x7e020080, 1 << 40}
	c := ArgCond{Index: rnd.Intn(6), Op: Op(rnd.Intn(3)), Mask: masks[rnd.Intn(len(masks))]}
	if c.Op != AnySet {
		c.Value = rnd.Uint64() & c.mask()
		if rnd.Intn(2) == 0 {
			c.Value &= 0xff
		}
	}
	return c
}

func TestAssemblerTrampolines(t *testing.T) {
	g := &gen{rets: map[uint32]label{}}
	far, near := g.newLabel(), g.newLabel()
	g.stmt(unix.BPF_LD|unix.BPF_W|unix.BPF_ABS, offNr)
	g.jump(unix.BPF_JEQ, 7, far, near)
	g.bind(near)
	for i := 0; i < 1000; i++ {
		g.stmt(unix.BPF_ALU|unix.BPF_AND|unix.BPF_K, 0xffffffff)
	}
	g.stmt(unix.BPF_RET|unix.BPF_K, 1)
	g.bind(far)
	g.stmt(unix.BPF_RET|unix.BPF_K, 2)
	prog, err := g.assemble()
	if err != nil {
		t.Fatal(err)
	}
	if err := validateProg(prog); err != nil {
		t.Fatal(err)
	}
	if got := run(t, prog, 0, 7, [6]uint64{}); got != 2 {
		t.Fatalf("nr 7 returned %d, want the far RET 2", got)
	}
	if got := run(t, prog, 0, 8, [6]uint64{}); got != 1 {
		t.Fatalf("nr 8 returned %d, want the near RET 1", got)
	}
}

func TestValidateProgRejects(t *testing.T) {
	ret := unix.SockFilter{Code: unix.BPF_RET | unix.BPF_K}
	for name, prog := range map[string][]unix.SockFilter{
		"empty":        nil,
		"no ret":       {{Code: unix.BPF_LD | unix.BPF_W | unix.BPF_ABS}},
		"jump past":    {{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, Jt: 5}, ret},
		"ja past":      {{Code: unix.BPF_JMP | unix.BPF_JA, K: 1}, ret},
		"load outside": {{Code: unix.BPF_LD | unix.BPF_W | unix.BPF_ABS, K: 64}, ret},
		"unaligned":    {{Code: unix.BPF_LD | unix.BPF_W | unix.BPF_ABS, K: 2}, ret},
		"odd opcode":   {{Code: unix.BPF_LDX | unix.BPF_W | unix.BPF_MEM}, ret},
		"too long":     make([]unix.SockFilter, maxInsns+1),
	} {
		if err := validateProg(prog); err == nil {
			t.Errorf("%s: program accepted", name)
		}
	}
}

// The x86_64 fast path: an allowed syscall needs no argument loads, so the
// kernel's constant-action cache can skip the filter entirely.
func TestProgramShape(t *testing.T) {
	for _, name := range []string{"default", "strict"} {
		p, _ := Profile(name)
		prog, err := Compile(p)
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: %d rules, %d instructions", name, len(p.Rules), len(prog))
		if len(prog) > 1000 {
			t.Errorf("%s compiles to %d instructions; the search tree should keep it small", name, len(prog))
		}
	}
}

func ExampleExplain() {
	p, _ := Profile("default")
	for _, s := range []string{"getpid", "mount", "clone3"} {
		a, _ := Explain(p, s)
		fmt.Println(s, a)
	}
	// Output:
	// getpid allow
	// mount errno(EPERM)
	// clone3 errno(ENOSYS)
}
