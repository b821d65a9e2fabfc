package seccomp

import (
	"golang.org/x/sys/unix"

	"github.com/airlock-dev/airlock/internal/errdefs"
)

// label names a position in the program before positions are known.
type label int

type itemKind int

const (
	kStmt itemKind = iota // one instruction with no jump
	kJump                 // conditional jump to jt / jf
	kJA                   // unconditional jump
	kBind                 // marks where a label points
)

type item struct {
	kind   itemKind
	op     uint16
	k      uint32
	jt, jf label
	// longT/longF: the target is more than 255 instructions away, so the
	// jump goes to a JA right after it (JA takes a 32-bit offset).
	longT, longF bool
}

// gen assembles a program from items with symbolic labels.
type gen struct {
	items    []item
	nlabels  int
	rets     map[uint32]label
	retOrder []uint32
}

func (g *gen) newLabel() label { g.nlabels++; return label(g.nlabels - 1) }

func (g *gen) bind(l label) { g.items = append(g.items, item{kind: kBind, jt: l}) }

func (g *gen) stmt(op uint16, k uint32) {
	g.items = append(g.items, item{kind: kStmt, op: op, k: k})
}

// jump emits "if A op k goto jt else goto jf"; op is a BPF_J* comparison.
func (g *gen) jump(op uint16, k uint32, jt, jf label) {
	g.items = append(g.items, item{kind: kJump, op: unix.BPF_JMP | op | unix.BPF_K, k: k, jt: jt, jf: jf})
}

func (g *gen) ja(l label) { g.items = append(g.items, item{kind: kJA, jt: l}) }

func b2i(b bool) int {
	if b {
		return 1
	}
	return 0
}

func (it *item) size() int {
	switch it.kind {
	case kBind:
		return 0
	case kJump:
		return 1 + b2i(it.longT) + b2i(it.longF)
	default:
		return 1
	}
}

// layout computes each item's position and each label's position.
func (g *gen) layout() (pos []int, lbl []int, err error) {
	pos = make([]int, len(g.items))
	lbl = make([]int, g.nlabels)
	for i := range lbl {
		lbl[i] = -1
	}
	p := 0
	for i := range g.items {
		pos[i] = p
		if g.items[i].kind == kBind {
			lbl[g.items[i].jt] = p
		}
		p += g.items[i].size()
	}
	for i, x := range lbl {
		if x < 0 {
			return nil, nil, errdefs.Invalid("label %d never placed", i)
		}
	}
	return pos, lbl, nil
}

// relax marks conditional jumps whose targets are out of 8-bit reach as
// long until none is left; positions only grow, so this terminates.
func (g *gen) relax() (pos, lbl []int, err error) {
	for {
		if pos, lbl, err = g.layout(); err != nil {
			return nil, nil, err
		}
		changed := false
		for i := range g.items {
			it := &g.items[i]
			if it.kind != kJump {
				continue
			}
			if !it.longT && lbl[it.jt]-(pos[i]+1) > 255 {
				it.longT, changed = true, true
			}
			if !it.longF && lbl[it.jf]-(pos[i]+1) > 255 {
				it.longF, changed = true, true
			}
		}
		if !changed {
			return pos, lbl, nil
		}
	}
}

// dropFallthroughJAs removes jumps to the very next instruction.
func (g *gen) dropFallthroughJAs() {
	kept := g.items[:0]
	for i, it := range g.items {
		if it.kind == kJA && g.boundAhead(i+1, it.jt) {
			continue
		}
		kept = append(kept, it)
	}
	g.items = kept
}

// boundAhead reports whether l is bound among the labels starting at i,
// before the next real instruction.
func (g *gen) boundAhead(i int, l label) bool {
	for ; i < len(g.items) && g.items[i].kind == kBind; i++ {
		if g.items[i].jt == l {
			return true
		}
	}
	return false
}

func (g *gen) assemble() ([]unix.SockFilter, error) {
	g.dropFallthroughJAs()
	pos, lbl, err := g.relax()
	if err != nil {
		return nil, err
	}
	var out []unix.SockFilter
	for i, it := range g.items {
		next := pos[i] + 1
		off := func(l label) (int, error) {
			d := lbl[l] - next
			if d < 0 {
				return 0, errdefs.Invalid("backward jump at instruction %d", pos[i])
			}
			return d, nil
		}
		switch it.kind {
		case kStmt:
			out = append(out, unix.SockFilter{Code: it.op, K: it.k})
		case kJA:
			d, err := off(it.jt)
			if err != nil {
				return nil, err
			}
			out = append(out, unix.SockFilter{Code: unix.BPF_JMP | unix.BPF_JA, K: uint32(d)})
		case kJump:
			ins, err := g.jumpInsns(it, next, lbl)
			if err != nil {
				return nil, err
			}
			out = append(out, ins...)
		}
	}
	return out, nil
}

// jumpInsns emits a conditional jump and its trampolines, if any: a long
// target is reached through a JA placed right after the jump.
func (g *gen) jumpInsns(it item, next int, lbl []int) ([]unix.SockFilter, error) {
	var tramps []unix.SockFilter
	short := func(long bool, l label) (uint8, error) {
		if long {
			tramp := next + len(tramps)
			d := lbl[l] - (tramp + 1)
			if d < 0 {
				return 0, errdefs.Invalid("backward jump at instruction %d", next-1)
			}
			tramps = append(tramps, unix.SockFilter{Code: unix.BPF_JMP | unix.BPF_JA, K: uint32(d)})
			return uint8(tramp - next), nil
		}
		d := lbl[l] - next
		if d < 0 || d > 255 {
			return 0, errdefs.Invalid("jump offset %d out of range at instruction %d", d, next-1)
		}
		return uint8(d), nil
	}
	jt, err := short(it.longT, it.jt)
	if err != nil {
		return nil, err
	}
	jf, err := short(it.longF, it.jf)
	if err != nil {
		return nil, err
	}
	return append([]unix.SockFilter{{Code: it.op, Jt: jt, Jf: jf, K: it.k}}, tramps...), nil
}
