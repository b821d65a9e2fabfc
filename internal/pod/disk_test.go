package pod

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/airlock-dev/airlock/internal/config"
	"github.com/airlock-dev/airlock/internal/testutil"
	"golang.org/x/sys/unix"
)

// TestDiskCappedLayer: a pod created with resources.disk keeps its layer
// in an image of that size, mounted from first use until destroy; what is
// written there survives an unmount (a host reboot), the image stays
// sparse on the host, and destroy leaves no mount and no loop device.
func TestDiskCappedLayer(t *testing.T) {
	testutil.RequireRoot(t)
	s, ws := newStore(t)
	cfg := config.Default()
	cfg.Resources.Disk = config.Disk{Bytes: 24 * config.MiB, Inodes: 300}
	p, err := s.Create("capped", ws, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.dropLayer() })
	if p.State.Layer != LayerExt4 {
		t.Fatalf("layer %q, want %q", p.State.Layer, LayerExt4)
	}
	if testutil.Mounted(s.Home) {
		t.Fatalf("Create mounted the layer; it is made on first use")
	}
	if err := p.OpenLayer(); err != nil {
		t.Fatal(err)
	}
	up := p.Roots()[0].Upper
	if !strings.HasPrefix(up, p.layerMount()+"/") {
		t.Fatalf("upper %s is not in the mounted image %s", up, p.layerMount())
	}
	var st unix.Statfs_t
	if err := unix.Statfs(up, &st); err != nil || st.Type != unix.EXT4_SUPER_MAGIC {
		t.Fatalf("upper is not on the ext4 image: %v type %x", err, st.Type)
	}
	if total := st.Blocks * uint64(st.Bsize); total > 24<<20 || total < 16<<20 {
		t.Errorf("image holds %d bytes, want about the 24 MiB cap", total)
	}
	if st.Files < 250 || st.Files > 1024 { // mkfs rounds to whole inode table blocks
		t.Errorf("image holds %d inodes, want about 300", st.Files)
	}
	if err := os.WriteFile(filepath.Join(up, "kept"), []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	p.dropLayer() // as a reboot would
	if testutil.Mounted(s.Home) {
		t.Fatalf("the layer is still mounted after dropLayer")
	}
	again, err := s.Get("capped")
	if err != nil {
		t.Fatal(err)
	}
	if err := again.OpenLayer(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(again.Roots()[0].Upper, "kept")); err != nil {
		t.Errorf("the layer lost a file across unmount and mount: %v", err)
	}
	var ist unix.Stat_t
	if err := unix.Stat(p.imagePath(), &ist); err != nil {
		t.Fatal(err)
	}
	if ist.Blocks*512 > 8<<20 {
		t.Errorf("a nearly empty image takes %d bytes on the host; it should stay sparse", ist.Blocks*512)
	}
	img := p.imagePath()
	if err := s.Destroy("capped", false); err != nil {
		t.Fatal(err)
	}
	if testutil.Mounted(s.Home) {
		t.Errorf("destroy left the layer mounted")
	}
	if dev := loopHolding(img); dev != "" {
		t.Errorf("%s still holds the destroyed pod's image", dev)
	}
}

// TestDestroyWhileAHostProcessSitsInTheLayer: a shell left in the layer
// (EBUSY for a plain unmount) does not stop destroy.
func TestDestroyWhileAHostProcessSitsInTheLayer(t *testing.T) {
	testutil.RequireRoot(t)
	s, ws := newStore(t)
	cfg := config.Default()
	cfg.Resources.Disk = config.Disk{Bytes: 24 * config.MiB}
	p, err := s.Create("busy", ws, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := p.OpenLayer(); err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(p.Roots()[0].Upper)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := s.Destroy("busy", false); err != nil {
		t.Fatalf("destroy with a busy layer: %v", err)
	}
	if testutil.Mounted(s.Home) {
		t.Errorf("destroy left the layer mounted")
	}
}

// TestCopySparseKeepsHoles: the per-pod copy of the template image copies
// data extents only.
func TestCopySparseKeepsHoles(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src")
	f, err := os.Create(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(256 << 20); err != nil {
		t.Fatal(err)
	}
	for _, off := range []int64{0, 100 << 20, 256<<20 - 5} {
		if _, err := f.WriteAt([]byte("data!"), off); err != nil {
			t.Fatal(err)
		}
	}
	f.Close()
	dst := filepath.Join(dir, "dst")
	if err := copySparse(src, dst); err != nil {
		t.Fatal(err)
	}
	a, _ := os.ReadFile(src)
	b, _ := os.ReadFile(dst)
	if string(a) != string(b) {
		t.Fatalf("the copy differs from the source")
	}
	var st unix.Stat_t
	if err := unix.Stat(dst, &st); err != nil {
		t.Fatal(err)
	}
	if st.Blocks*512 > 1<<20 {
		t.Errorf("the copy of a 256 MiB file with 15 bytes of data takes %d bytes", st.Blocks*512)
	}
}

// dirLayer is the default config without a disk cap: the layer in plain
// directories of the pod, which tests of the layout look at directly.
func dirLayer() *config.Config {
	c := config.Default()
	c.Resources.Disk = config.Disk{}
	return c
}
