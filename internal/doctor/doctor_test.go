package doctor

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/nftables"

	"github.com/airlock-dev/airlock/internal/cgroup"
	"github.com/airlock-dev/airlock/internal/statedir"
	"github.com/airlock-dev/airlock/internal/testutil"
)

// TestRunHere: this machine has every feature, so every check is ok and
// the cgroup check names the hybrid v1 layout.
func TestRunHere(t *testing.T) {
	testutil.RequireRoot(t)
	results := Run()
	byName := map[string]Result{}
	for _, r := range results {
		byName[r.Name] = r
		t.Logf("%-30s %-7s %s", r.Name, r.Status, r.Detail)
		if r.Status != OK {
			t.Errorf("%s: %s: %s (fix: %s)", r.Name, r.Status, r.Detail, r.Fix)
		}
	}
	if len(results) != len(Checks()) {
		t.Fatalf("%d results for %d checks", len(results), len(Checks()))
	}
	if d := byName["cgroups"].Detail; !strings.HasPrefix(d, "v1 (hybrid)") {
		t.Errorf("cgroups detail %q, want it to start with v1 (hybrid)", d)
	}
	if d := byName["landlock"].Detail; d != "Landlock ABI 7" {
		t.Errorf("landlock detail %q", d)
	}
	if !CanRunPods(results) {
		t.Error("CanRunPods = false on a machine with everything")
	}
}

// TestProbesLeaveNothing: the mount and nf_tables probes change only
// their own namespaces — no mount, temp dir or table survives on the host.
func TestProbesLeaveNothing(t *testing.T) {
	testutil.RequireRoot(t)
	for _, c := range []func() Result{checkOverlay, checkOverlayUserNS, checkNftables} {
		if r := c(); r.Status != OK {
			t.Fatalf("%+v", r)
		}
	}
	mi, _ := os.ReadFile("/proc/self/mountinfo")
	if strings.Contains(string(mi), ".airlock-doctor-") || strings.Contains(string(mi), "overlay overlay") && strings.Contains(string(mi), "airlock-doctor") {
		t.Errorf("a probe mount is visible on the host:\n%s", mi)
	}
	left, _ := filepath.Glob(filepath.Join(existingParent(statedir.Default()), ".airlock-doctor-*"))
	if len(left) > 0 {
		t.Errorf("probe directories left behind: %v", left)
	}
	c, err := nftables.New()
	if err != nil {
		t.Fatal(err)
	}
	tables, err := c.ListTables()
	if err != nil {
		t.Fatal(err)
	}
	for _, tb := range tables {
		if tb.Name == "airlock_doctor" {
			t.Errorf("the nf_tables probe's table exists in the host's namespace")
		}
	}
}

func TestUserNSPolicy(t *testing.T) {
	cases := []struct {
		max, clone, apparmor string
		blocked              bool
	}{
		{"96365", "", "", false},
		{"0", "", "", true},
		{"15000", "0", "", true},
		{"15000", "1", "0", false},
		{"15000", "1", "1", true},
		{"", "", "", false},
	}
	for _, c := range cases {
		if got, why := userNSPolicy(c.max, c.clone, c.apparmor); got != c.blocked {
			t.Errorf("userNSPolicy(%q, %q, %q) = %v (%s), want %v", c.max, c.clone, c.apparmor, got, why, c.blocked)
		}
	}
}

func TestKernelVersion(t *testing.T) {
	cases := map[string][2]int{"6.18.44-fc-v657": {6, 18}, "5.4.0-150-generic": {5, 4}, "4.19": {4, 19}, "6.1+": {6, 1}}
	for rel, want := range cases {
		maj, min, ok := kernelVersion(rel)
		if !ok || maj != want[0] || min != want[1] {
			t.Errorf("kernelVersion(%q) = %d.%d %v", rel, maj, min, ok)
		}
	}
	if _, _, ok := kernelVersion("garbage"); ok {
		t.Error("kernelVersion(garbage) parsed")
	}
}

func TestParsers(t *testing.T) {
	fs := "nodev\tsysfs\nnodev\ttmpfs\n\text4\nnodev\toverlay\n"
	if !hasFilesystem(fs, "overlay") || !hasFilesystem(fs, "ext4") || hasFilesystem(fs, "btrfs") || hasFilesystem(fs, "nodev") {
		t.Error("hasFilesystem misreads /proc/filesystems")
	}
	status := "Name:\tx\nNoNewPrivs:\t0\nSeccomp:\t2\nSeccomp_filters:\t1\n"
	if got := seccompField(status); got != "2" {
		t.Errorf("seccompField = %q", got)
	}
	if got := seccompField("Name:\tx\n"); got != "" {
		t.Errorf("seccompField without the field = %q", got)
	}
}

func TestCgroupResult(t *testing.T) {
	all := []string{"memory", "cpu", "pids", "io", "freezer"}
	cases := []struct {
		lay    cgroup.Layout
		status string
		prefix string
	}{
		{cgroup.Layout{Mode: cgroup.ModeV1, Hybrid: true, Usable: all}, OK, "v1 (hybrid): memory, cpu, pids, io, freezer usable"},
		{cgroup.Layout{Mode: cgroup.ModeV2, Usable: all}, OK, "v2: "},
		{cgroup.Layout{Mode: cgroup.ModeV1, Usable: []string{"memory", "cpu", "pids"}, Missing: []string{"io", "freezer"}}, Warn, "v1: memory, cpu, pids usable; missing io, freezer"},
		{cgroup.Layout{V2Root: "/sys/fs/cgroup", V2Controllers: []string{"hugetlb"}}, Missing, "no usable controllers"},
	}
	for _, c := range cases {
		r := cgroupResult(c.lay)
		if r.Status != c.status || !strings.HasPrefix(r.Detail, c.prefix) {
			t.Errorf("cgroupResult(%s) = %s %q, want %s %q", c.lay, r.Status, r.Detail, c.status, c.prefix)
		}
	}
}

func TestCanRunPodsAndText(t *testing.T) {
	results := []Result{
		{Name: "kernel", Status: OK, Detail: "Linux 6.18"},
		{Name: "overlayfs", Required: true, Status: Missing, Detail: "mount failed", Fix: "modprobe overlay"},
		{Name: "landlock", Status: Warn, Detail: "old ABI", Fix: "upgrade"},
	}
	if CanRunPods(results) {
		t.Error("CanRunPods with a required check missing")
	}
	var b bytes.Buffer
	WriteText(&b, results)
	want := "✓  kernel                Linux 6.18\n" +
		"✗  overlayfs (required)  mount failed\n" +
		"                           fix: modprobe overlay\n" +
		"!  landlock              old ABI\n" +
		"                           fix: upgrade\n" +
		"airlock cannot run pods here: missing overlayfs.\n"
	if b.String() != want {
		t.Errorf("WriteText:\n%s\nwant:\n%s", b.String(), want)
	}
	results[1].Status = OK
	if !CanRunPods(results) {
		t.Error("CanRunPods false with only a warning")
	}
}

// TestPanickingCheck: a broken check is reported, not fatal.
func TestPanickingCheck(t *testing.T) {
	r := run(Check{Name: "boom", Required: true, Check: func() Result { panic("oops") }})
	if r.Name != "boom" || !r.Required || r.Status != Missing || !strings.Contains(r.Detail, "oops") {
		t.Errorf("%+v", r)
	}
}

// TestMissingWallBlocks: run fails closed without a wall, so doctor must
// not say pods can run; it names the --downgrade that would start one.
func TestMissingWallBlocks(t *testing.T) {
	results := []Result{
		{Name: "kernel", Status: OK, Detail: "Linux 6.18"},
		{Name: "seccomp", Downgrade: "seccomp", Status: Missing, Detail: "no filters", Fix: "enable CONFIG_SECCOMP_FILTER"},
		{Name: "landlock", Downgrade: "landlock", Status: Warn, Detail: "old ABI"},
	}
	if CanRunPods(results) {
		t.Error("CanRunPods true with the seccomp wall missing: run would refuse")
	}
	var b bytes.Buffer
	WriteText(&b, results)
	for _, want := range []string{"✗  seccomp (wall)", "cannot run pods here: missing seccomp.", "pass --downgrade seccomp"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("doctor text lacks %q:\n%s", want, b.String())
		}
	}
	for _, c := range Checks() {
		if c.Name == "seccomp" && c.Downgrade != "seccomp" || c.Name == "landlock" && c.Downgrade != "landlock" || c.Name == "cgroups" && c.Downgrade != "cgroups" {
			t.Errorf("check %s does not name its wall for --downgrade: %q", c.Name, c.Downgrade)
		}
	}
}

// TestDiskCapMissing: without mkfs.ext4 or ext4 the capped layer cannot be
// made, which run refuses unless --downgrade disk-quota.
func TestDiskCapMissing(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the check only applies as root")
	}
	savedLook, savedPaths, savedFiles := execLookPath, mkfsPaths, hostFiles
	t.Cleanup(func() { execLookPath, mkfsPaths, hostFiles = savedLook, savedPaths, savedFiles })
	execLookPath = func(string) (string, error) { return "", os.ErrNotExist }
	mkfsPaths = []string{"/nonexistent/mkfs.ext4"}
	if r := checkDiskCap(); r.Status != Missing || !strings.Contains(r.Detail, "mkfs.ext4") || !strings.Contains(r.Fix, "--downgrade disk-quota") {
		t.Errorf("without mkfs: %+v", r)
	}
	execLookPath = func(string) (string, error) { return "/sbin/mkfs.ext4", nil }
	hostFiles = func(string) (string, error) { return "nodev\tproc\n\txfs\n", nil }
	if r := checkDiskCap(); r.Status != Missing || !strings.Contains(r.Detail, "ext4") {
		t.Errorf("without ext4: %+v", r)
	}
}
