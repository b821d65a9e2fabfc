package sandbox_test

import (
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/airlock-dev/airlock/internal/errdefs"
	"github.com/airlock-dev/airlock/internal/layer"
	"github.com/airlock-dev/airlock/internal/sandbox"
)

func indexOf(t *testing.T, ms []sandbox.Mount, kind sandbox.MountKind, target string) int {
	t.Helper()
	for i, m := range ms {
		if m.Kind == kind && m.Target == target {
			return i
		}
	}
	t.Fatalf("no %s mount at %s in %+v", kind, target, ms)
	return -1
}

func TestPlanViewOrder(t *testing.T) {
	base := t.TempDir() // under /tmp
	home := filepath.Join(base, "home")
	ws := filepath.Join(home, "proj")
	secret := filepath.Join(home, ".ssh")
	for _, d := range []string{ws, secret} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	ms, err := sandbox.PlanView(sandbox.ViewConfig{
		ReadOnly: []string{"/usr", "/etc", home},
		// Listed child first: the plan must still mount the parent first.
		Roots: []layer.Root{
			{Name: "workspace", Host: ws, Upper: "/s/ws/u", Work: "/s/ws/w"},
			{Name: "home", Host: home, Upper: "/s/h/u", Work: "/s/h/w"},
		},
		Hide: []string{secret, filepath.Join(home, "missing")},
	})
	if err != nil {
		t.Fatal(err)
	}
	tmp := indexOf(t, ms, sandbox.KindTmpfs, "/tmp")
	roHome := indexOf(t, ms, sandbox.KindBind, home)
	homeOv := indexOf(t, ms, sandbox.KindOverlay, home)
	wsOv := indexOf(t, ms, sandbox.KindOverlay, ws)
	hide := indexOf(t, ms, sandbox.KindHide, secret)
	if !(tmp < roHome && roHome < homeOv && homeOv < wsOv && homeOv < hide) {
		t.Errorf("wrong order: /tmp %d, ro home %d, home overlay %d, workspace overlay %d, hide %d", tmp, roHome, homeOv, wsOv, hide)
	}
	for _, m := range ms {
		if m.Target == filepath.Join(home, "missing") {
			t.Errorf("missing hidden path planned: %+v", m)
		}
	}
	for _, k := range []sandbox.MountKind{sandbox.KindProc, sandbox.KindSys, sandbox.KindDev} {
		indexOf(t, ms, k, "/"+map[sandbox.MountKind]string{sandbox.KindProc: "proc", sandbox.KindSys: "sys", sandbox.KindDev: "dev"}[k])
	}
	indexOf(t, ms, sandbox.KindTmpfs, "/run")
}

func TestPlanViewSymlinks(t *testing.T) {
	base := t.TempDir()
	real := filepath.Join(base, "real")
	if err := os.MkdirAll(filepath.Join(real, "aws"), 0o755); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(base, "link")
	if err := os.Symlink("real", link); err != nil {
		t.Fatal(err)
	}
	awsLink := filepath.Join(base, ".aws")
	if err := os.Symlink(filepath.Join(real, "aws"), awsLink); err != nil {
		t.Fatal(err)
	}
	ms, err := sandbox.PlanView(sandbox.ViewConfig{ReadOnly: []string{link}, Hide: []string{awsLink}})
	if err != nil {
		t.Fatal(err)
	}
	sl := ms[indexOf(t, ms, sandbox.KindSymlink, link)]
	if sl.Source != "real" {
		t.Errorf("symlink source %q, want the link text", sl.Source)
	}
	if !ms[indexOf(t, ms, sandbox.KindBind, real)].ReadOnly {
		t.Errorf("symlink target not bound read-only")
	}
	// The hide lands on what the link points to, so the link leads nowhere.
	indexOf(t, ms, sandbox.KindHide, filepath.Join(real, "aws"))
}

func TestPlanViewRejects(t *testing.T) {
	bad := []sandbox.ViewConfig{
		{ReadOnly: []string{"usr"}},
		{Hide: []string{"/"}},
		{Tmpfs: []string{"/proc/sys"}},
		{Writable: []string{"/dev"}},
		{Roots: []layer.Root{{Host: "/etc", Upper: "relative", Work: "/w"}}},
		{Roots: []layer.Root{{Host: "/etc/hostname", Upper: "/u", Work: "/w"}}},
		{Sockets: []string{"/etc/hostname"}},
	}
	for _, v := range bad {
		if _, err := sandbox.PlanView(v); !errors.Is(err, errdefs.ErrInvalid) {
			t.Errorf("PlanView(%+v) = %v, want ErrInvalid", v, err)
		}
	}
	if _, err := sandbox.PlanView(sandbox.ViewConfig{Writable: []string{"/nonexistent-airlock"}}); err == nil {
		t.Errorf("a missing writable path was accepted")
	}
}
