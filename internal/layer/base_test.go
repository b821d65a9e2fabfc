package layer

import (
	"os"
	"path/filepath"
	"testing"
)

func TestRecordBase(t *testing.T) {
	p := newPod(t, func(h string) {
		put(t, filepath.Join(h, "calm"), "v1\n", 0o644)
		put(t, filepath.Join(h, "busy"), "v1\n", 0o644)
		put(t, filepath.Join(h, "dir/f"), "v1\n", 0o644)
	})
	start := p.runStart()
	put(t, p.in("calm"), "pod\n", 0o644)
	put(t, p.in("busy"), "pod\n", 0o644)
	put(t, p.in("dir/f"), "pod\n", 0o644)
	put(t, p.in("added"), "pod\n", 0o644)
	put(t, p.host("busy"), "host during run\n", 0o644)
	p.unmount()
	chk(t, RecordBase([]Root{p.root}, p.base, start))
	b, err := LoadBase(p.base)
	chk(t, err)
	calm, ok := b.Lookup("workspace", "calm")
	if !ok || calm.Absent || calm.ChangedDuringRun || calm.Size != 3 || calm.Ino != lstatT(t, p.host("calm")).Ino {
		t.Errorf("calm = %+v", calm)
	}
	if e, _ := b.Lookup("workspace", "busy"); !e.ChangedDuringRun {
		t.Errorf("busy = %+v, want changed during run", e)
	}
	if e, _ := b.Lookup("workspace", "added"); !e.Absent {
		t.Errorf("added = %+v, want absent", e)
	}
	if e, ok := b.Lookup("workspace", "dir"); !ok || e.Type != "dir" {
		t.Errorf("dir = %+v", e)
	}
	// A later host change does not overwrite the first record; a path
	// rolled back out of the layer is forgotten.
	put(t, p.host("calm"), "host later\n", 0o644)
	chk(t, os.Remove(filepath.Join(p.root.Upper, "added")))
	chk(t, RecordBase([]Root{p.root}, p.base, p.runStart()))
	b, err = LoadBase(p.base)
	chk(t, err)
	if e, _ := b.Lookup("workspace", "calm"); e != calm {
		t.Errorf("calm re-recorded: %+v", e)
	}
	if _, ok := b.Lookup("workspace", "added"); ok {
		t.Errorf("added still recorded after leaving the layer")
	}
	var nilBase *Base
	if _, ok := nilBase.Lookup("workspace", "calm"); ok {
		t.Errorf("nil base has records")
	}
}

func TestLoadBaseMissingAndCorrupt(t *testing.T) {
	dir := t.TempDir()
	b, err := LoadBase(filepath.Join(dir, "none.json"))
	if err != nil || len(b.Roots) != 0 {
		t.Errorf("missing base: %+v %v", b, err)
	}
	bad := filepath.Join(dir, "bad.json")
	chk(t, os.WriteFile(bad, []byte("{nope"), 0o600))
	if _, err := LoadBase(bad); err == nil {
		t.Errorf("corrupt base loaded")
	}
}
