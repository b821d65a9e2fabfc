package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/airlock-dev/airlock/internal/errdefs"
	"go.yaml.in/yaml/v3"
)

func TestDefaultIsValid(t *testing.T) {
	if err := Default().Validate(); err != nil {
		t.Fatalf("Default() does not validate: %v", err)
	}
}

func TestMinimalFileGivesDefaults(t *testing.T) {
	c, err := Parse([]byte("version: 1\n"), "airlock.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(c, Default()) {
		t.Fatalf("minimal file differs from Default():\n%+v\n%+v", c, Default())
	}
}

func TestOverrides(t *testing.T) {
	src := `version: 1
filesystem:
  cow: []
  hide: [~/.ssh, secrets.txt]
run:
  command: [claude, --dangerously-skip-permissions]
  env: {FOO: bar, N: "1"}
  hostname: box
resources:
  memory: 4GiB
  swap: 512M
  cpus: 1.5
  pids: 100
  io: {read_bps: 10MB, write_bps: 1048576}
  timeout: 90m
  disk: {bytes: 1.5G, inodes: 5000}
security:
  seccomp: strict
  landlock: false
  downgrade: [cgroups]
network:
  mode: none
  allow: [example.com, "*.github.com"]
  presets: [npm, go]
  ports: [443]
  allow_private: [10.0.0.0/8]
  dns: {mode: monitor, upstream: [1.1.1.1, "9.9.9.9:53"]}
  publish: ["127.0.0.1:8080:80"]
`
	c, err := Parse([]byte(src), "airlock.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	r := c.Resources
	if r.Memory != 4*GiB || r.Swap != 512*MiB || r.CPUs != 1.5 || r.Pids != 100 ||
		r.IO.ReadBPS != 10_000_000 || r.IO.WriteBPS != MiB || r.Timeout != Duration(90*time.Minute) ||
		r.Disk.Bytes != 1536*MiB || r.Disk.Inodes != 5000 {
		t.Errorf("resources = %+v", r)
	}
	if len(c.Filesystem.Cow) != 0 || c.Filesystem.Readonly[0] != "/usr" {
		t.Errorf("filesystem = %+v", c.Filesystem)
	}
	if c.Run.Env["N"] != "1" || c.Run.Command[1] != "--dangerously-skip-permissions" {
		t.Errorf("run = %+v", c.Run)
	}
	if c.Security.Landlock || c.Network.DNS.Mode != "monitor" || c.Network.Mode != "none" {
		t.Errorf("security/network = %+v %+v", c.Security, c.Network)
	}
}

func TestMarshalRoundTrip(t *testing.T) {
	c := Default()
	c.Resources.Memory = 3*GiB + 1
	c.Resources.Timeout = Duration(4*time.Hour + 30*time.Second)
	c.Run.Env["X"] = "y: z"
	data, err := Marshal(c)
	if err != nil {
		t.Fatal(err)
	}
	back, err := Parse(data, "pod.yaml")
	if err != nil {
		t.Fatalf("parsing our own output: %v\n%s", err, data)
	}
	if !reflect.DeepEqual(back, c) {
		t.Fatalf("round trip changed the config:\n%s", data)
	}
	if !strings.Contains(string(data), "disk:\n        bytes: 10GiB") && !strings.Contains(string(data), "bytes: 10GiB") {
		t.Errorf("sizes are not written readably:\n%s", data)
	}
}

// hostile are inputs an attacker (or a careless user) might hand us.
func TestHostileInputs(t *testing.T) {
	laughs := "version: 1\na: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n"
	prev := "a"
	for _, n := range []string{"b", "c", "d", "e", "f", "g", "h", "i"} {
		laughs += n + ": &" + n + " [*" + prev + ",*" + prev + ",*" + prev + ",*" + prev + ",*" + prev + ",*" + prev + ",*" + prev + ",*" + prev + ",*" + prev + "]\n"
		prev = n
	}
	tests := []struct {
		name, src, want string
	}{
		{"billion laughs", laughs, "anchors and aliases"},
		{"alias into known field", "version: 1\nnetwork:\n  allow: &x [a.com]\n  deny: *x\n", "airlock.yaml:3: YAML anchors"},
		{"merge key", "version: 1\nnetwork:\n  <<: {mode: host}\n", `airlock.yaml:3: unknown field "<<" in network`},
		{"unknown field", "version: 1\nfilesystem:\n  cow: []\n\n\n\n  netwrk: x\n", `airlock.yaml:7: unknown field "netwrk" in filesystem`},
		{"unknown top-level", "version: 1\nnetwrok: {}\n", `airlock.yaml:2: unknown field "netwrok" at the top level`},
		{"wrong type int", "version: 1\nresources:\n  pids: lots\n", `airlock.yaml:3: resources.pids: expected an integer, got "lots"`},
		{"wrong type list", "version: 1\nfilesystem:\n  hide: ~/.ssh\n", "airlock.yaml:3: filesystem.hide: expected a list"},
		{"wrong type bool", "version: 1\nsecurity:\n  landlock: yes please\n", "security.landlock: expected true or false"},
		{"section is scalar", "version: 1\nnetwork: off\n", "network: expected a mapping"},
		{"tabs", "version: 1\nnetwork:\n\tmode: none\n", "airlock.yaml:3:"},
		{"huge file", "version: 1\n# " + strings.Repeat("x", MaxFileSize) + "\n", "larger than"},
		{"version 2", "version: 2\n", "airlock.yaml:1: version 2 is not supported"},
		{"version missing", "network: {mode: none}\n", "version is missing"},
		{"version as string", "version: \"1\"\n", "version: expected an integer"},
		{"negative memory", "version: 1\nresources:\n  memory: -1GiB\n", "airlock.yaml:3:"},
		{"garbage size", "version: 1\nresources:\n  memory: 4 gigs\n", `size "4 gigs"`},
		{"bad duration", "version: 1\nresources:\n  timeout: forever\n", `airlock.yaml:3: duration "forever"`},
		{"duration without unit", "version: 1\nresources:\n  timeout: 90\n", "airlock.yaml:3: expected a duration"},
		{"negative duration", "version: 1\nresources:\n  timeout: -5m\n", "non-negative"},
		{"two documents", "version: 1\n---\nversion: 1\n", "second YAML document"},
		{"empty", "", "file is empty"},
		{"only a comment", "# nothing\n", "file is empty"},
		{"top level list", "- version: 1\n", "expected a mapping"},
		{"duplicate key", "version: 1\nversion: 1\n", "already defined"},
		{"env value is a map", "version: 1\nrun:\n  env: {A: {b: c}}\n", "run.env.A: expected a string"},
		{"binary tag", "version: 1\nrun:\n  hostname: !!binary aGVsbG8=\n", "run.hostname: expected a string"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.src), "airlock.yaml")
			if err == nil {
				t.Fatalf("accepted:\n%s", tt.src)
			}
			if !errors.Is(err, errdefs.ErrInvalid) {
				t.Errorf("error does not wrap ErrInvalid: %v", err)
			}
			if !strings.Contains(err.Error(), tt.want) {
				t.Errorf("error %q does not contain %q", err, tt.want)
			}
			for _, line := range strings.Split(err.Error(), "\n") {
				if !strings.HasPrefix(line, "airlock.yaml") {
					t.Errorf("error line %q does not name the file", line)
				}
			}
		})
	}
}

func TestMultipleErrorsOneLineEach(t *testing.T) {
	_, err := Parse([]byte("version: 1\nfoo: 1\nbar: 2\nresources: {pids: x}\n"), "a.yaml")
	if err == nil {
		t.Fatal("accepted")
	}
	lines := strings.Split(err.Error(), "\n")
	if len(lines) != 3 {
		t.Fatalf("want 3 error lines, got %q", lines)
	}
}

func TestValidateChecks(t *testing.T) {
	tests := []struct {
		name   string
		mutate func(*Config)
		want   string
	}{
		{"negative memory", func(c *Config) { c.Resources.Memory = -1 }, "resources: sizes must not be negative"},
		{"tiny memory", func(c *Config) { c.Resources.Memory = 100 }, "resources: memory 100B is too small"},
		{"negative cpus", func(c *Config) { c.Resources.CPUs = -1 }, "resources: cpus"},
		{"relative tmpfs", func(c *Config) { c.Filesystem.Tmpfs = []string{"tmp"} }, `filesystem.tmpfs: "tmp" must be an absolute path`},
		{"dotdot cow", func(c *Config) { c.Filesystem.Cow = []string{"/home/../etc"} }, `filesystem.cow: "/home/../etc" contains ".."`},
		{"tilde user", func(c *Config) { c.Filesystem.Hide = []string{"~root/.ssh"} }, "~user"},
		{"relative writable", func(c *Config) { c.Filesystem.Writable = []string{"out"} }, "filesystem.writable"},
		{"bad mode", func(c *Config) { c.Network.Mode = "open" }, `network.mode: "open" must be one of filtered, none, host`},
		{"ip in allow", func(c *Config) { c.Network.Allow = []string{"1.2.3.4"} }, "network.allow: \"1.2.3.4\" is an IP address"},
		{"bad host", func(c *Config) { c.Network.Deny = []string{"exa mple.com"} }, "network.deny"},
		{"bad preset", func(c *Config) { c.Network.Presets = []string{"everything"} }, "network.presets"},
		{"port 0", func(c *Config) { c.Network.Ports = []int{0} }, "network.ports: 0 is not a port"},
		{"port big", func(c *Config) { c.Network.Ports = []int{70000} }, "network.ports"},
		{"bad cidr", func(c *Config) { c.Network.AllowPrivate = []string{"10.0.0.0/33"} }, "network.allow_private"},
		{"bad dns mode", func(c *Config) { c.Network.DNS.Mode = "open" }, "network.dns.mode"},
		{"bad upstream", func(c *Config) { c.Network.DNS.Upstream = []string{"dns.google"} }, "network.dns.upstream"},
		{"bad publish", func(c *Config) { c.Network.Publish = []string{"localhost:8080:80"} }, "network.publish"},
		{"bad downgrade", func(c *Config) { c.Security.Downgrade = []string{"everything"} }, "security.downgrade"},
		{"bad seccomp", func(c *Config) { c.Security.Seccomp = "off" }, "security.seccomp"},
		{"bad env", func(c *Config) { c.Run.Env = map[string]string{"A=B": "x"} }, "run.env"},
		{"bad hostname", func(c *Config) { c.Run.Hostname = "-x" }, "run.hostname"},
		{"version", func(c *Config) { c.Version = 3 }, "version: must be 1"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := Default()
			tt.mutate(c)
			err := c.Validate()
			if err == nil || !errors.Is(err, errdefs.ErrInvalid) || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("Validate() = %v, want %q", err, tt.want)
			}
		})
	}
}

// network.publish and -p read the same forms: the short one publishes on
// the host's loopback only.
func TestParsePublish(t *testing.T) {
	for _, c := range []struct {
		in, host string
		port     int
	}{
		{"8080:80", "127.0.0.1:8080", 80},
		{"127.0.0.1:3000:3000", "127.0.0.1:3000", 3000},
		{"0.0.0.0:8080:80", "0.0.0.0:8080", 80},
		{"[::1]:8080:80", "[::1]:8080", 80},
	} {
		h, p, err := ParsePublish(c.in)
		if err != nil || h.String() != c.host || p != c.port {
			t.Errorf("ParsePublish(%q) = %v %d %v, want %s %d", c.in, h, p, err, c.host, c.port)
		}
		cfg := Default()
		cfg.Network.Publish = []string{c.in}
		if err := cfg.Validate(); err != nil {
			t.Errorf("network.publish %q: %v", c.in, err)
		}
	}
	for _, bad := range []string{"", "80", "8080:", ":80", "0:80", "8080:0", "8080:70000", "host:8080:80", "::1:8080:80", "[fe80::1%eth0]:80:80", "1.2.3.4:x:80"} {
		if _, _, err := ParsePublish(bad); !errors.Is(err, errdefs.ErrInvalid) {
			t.Errorf("ParsePublish(%q): want ErrInvalid, got %v", bad, err)
		}
	}
}

func TestByteSize(t *testing.T) {
	good := map[string]ByteSize{
		"512": 512, "512MiB": 512 * MiB, "2GiB": 2 * GiB, "1.5G": 1536 * MiB, "1k": KiB,
		"10MB": 10_000_000, " 3 TiB ": 3 * TiB, "0": 0, "7B": 7,
	}
	for in, want := range good {
		got, err := ParseByteSize(in)
		if err != nil || got != want {
			t.Errorf("ParseByteSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "-1", "-1GiB", "abc", "1XB", "NaN", "Inf", "1e9", "9999999999999T", "1..5G", "GiB", "0x10"} {
		if got, err := ParseByteSize(in); err == nil {
			t.Errorf("ParseByteSize(%q) = %d, want an error", in, got)
		} else if !errors.Is(err, errdefs.ErrInvalid) {
			t.Errorf("ParseByteSize(%q) error does not wrap ErrInvalid", in)
		}
	}
	if s := ByteSize(1536 * MiB).String(); s != "1.5GiB" {
		t.Errorf("String() = %q", s)
	}
	if s := (4 * GiB).exact(); s != "4GiB" {
		t.Errorf("exact() = %q", s)
	}
}

func TestDurationString(t *testing.T) {
	for d, want := range map[time.Duration]string{4 * time.Hour: "4h", 90 * time.Minute: "1h30m", 30 * time.Second: "30s"} {
		if s := Duration(d).String(); s != want {
			t.Errorf("%v: %q want %q", d, s, want)
		}
	}
}

func TestLoadAndFind(t *testing.T) {
	ws := t.TempDir()
	if _, ok := FindInWorkspace(ws); ok {
		t.Fatal("found a config in an empty workspace")
	}
	p := filepath.Join(ws, FileName)
	if err := os.WriteFile(p, []byte("version: 1\nnetwork: {mode: bogus}\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	got, ok := FindInWorkspace(ws)
	if !ok || got != p {
		t.Fatalf("FindInWorkspace = %q %v", got, ok)
	}
	if _, err := Load(p); err == nil || !strings.Contains(err.Error(), p+": network.mode") {
		t.Fatalf("Load did not validate: %v", err)
	}
	if _, err := Load(filepath.Join(ws, "nope.yaml")); !errors.Is(err, errdefs.ErrNotFound) {
		t.Fatalf("missing file: %v", err)
	}
	// A symlink planted as airlock.yaml is not followed.
	ws2 := t.TempDir()
	if err := os.Symlink(p, filepath.Join(ws2, FileName)); err != nil {
		t.Fatal(err)
	}
	if _, ok := FindInWorkspace(ws2); ok {
		t.Fatal("FindInWorkspace followed a symlink")
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte("version: 1\n"))
	f.Add([]byte("version: 1\nresources: {memory: 4GiB, timeout: 4h}\n"))
	f.Add([]byte("version: 1\na: &a [x]\nb: *a\n"))
	f.Add([]byte("version: 1\nnetwork:\n  allow: [\"*.x.com\"]\n  dns: {mode: deny}\n"))
	f.Add([]byte("version: 1\n---\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse(data, "f.yaml")
		if err != nil {
			if !errors.Is(err, errdefs.ErrInvalid) {
				t.Fatalf("error is not ErrInvalid: %v", err)
			}
			for _, line := range strings.Split(err.Error(), "\n") {
				if !strings.HasPrefix(line, "f.yaml") {
					t.Fatalf("error line does not name the file: %q", line)
				}
			}
			return
		}
		if strings.Contains(string(data), "*") || strings.Contains(string(data), "&") {
			// Accepted input may contain * or & only inside values, never as YAML aliases.
			if hasAlias(data) {
				t.Fatalf("accepted an alias:\n%q", data)
			}
		}
		_ = c.Validate()
		out, err := Marshal(c)
		if err != nil {
			t.Fatalf("Marshal failed on a parsed config: %v", err)
		}
		back, err := Parse(out, "round.yaml")
		if err != nil {
			t.Fatalf("our own output does not parse: %v\n%s", err, out)
		}
		if !reflect.DeepEqual(back, c) {
			t.Fatalf("round trip changed the config:\n%s", out)
		}
	})
}

// hasAlias parses data with the YAML parser alone and reports whether it
// holds an anchor or alias anywhere.
func hasAlias(data []byte) bool {
	n, err := parseNode(data, "x")
	if err != nil {
		return false
	}
	var walk func(n *yaml.Node) bool
	walk = func(n *yaml.Node) bool {
		if n.Kind == yaml.AliasNode || n.Anchor != "" {
			return true
		}
		for _, c := range n.Content {
			if walk(c) {
				return true
			}
		}
		return false
	}
	return walk(n)
}

// TestDocExample keeps docs/config.md's full example parsing and valid.
func TestDocExample(t *testing.T) {
	doc, err := os.ReadFile("../../docs/config.md")
	if err != nil {
		t.Skip("docs/config.md not present")
	}
	_, rest, ok := strings.Cut(string(doc), "```yaml\n")
	example, _, ok2 := strings.Cut(rest, "```")
	if !ok || !ok2 {
		t.Fatal("docs/config.md has no yaml example")
	}
	c, err := Parse([]byte(example), "docs/config.md")
	if err != nil {
		t.Fatal(err)
	}
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if c.Resources.Memory != 4*GiB || c.Network.Publish[0] != "127.0.0.1:3000:3000" {
		t.Errorf("example parsed as %+v", c.Resources)
	}
}

// TestDocTablesMatchCode keeps docs/config.md honest: every field of the
// schema has a row in its section's table, every row names a real field,
// and the default the row states is the default the code applies.
func TestDocTablesMatchCode(t *testing.T) {
	doc, err := os.ReadFile("../../docs/config.md")
	if err != nil {
		t.Fatal(err)
	}
	type row struct{ section, name, def string }
	var rows []row
	section := ""
	for _, line := range strings.Split(string(doc), "\n") {
		if h, ok := strings.CutPrefix(line, "## "); ok {
			section = strings.TrimSpace(h)
			continue
		}
		cells := strings.Split(line, "|")
		if len(cells) < 5 || !strings.HasPrefix(strings.TrimSpace(cells[1]), "`") {
			continue
		}
		rows = append(rows, row{section, strings.Trim(strings.TrimSpace(cells[1]), "`"), strings.TrimSpace(cells[3])})
	}
	documented := map[string]row{}
	for _, r := range rows {
		documented[r.section+"."+r.name] = r
	}
	var fields []string
	var leaves func(t reflect.Type, prefix string)
	leaves = func(typ reflect.Type, prefix string) {
		for i := range typ.NumField() {
			f := typ.Field(i)
			name := prefix + strings.Split(f.Tag.Get("yaml"), ",")[0]
			if f.Type.Kind() == reflect.Struct && f.Type.NumField() > 0 && f.Type.Field(0).IsExported() {
				leaves(f.Type, name+".")
				continue
			}
			fields = append(fields, name)
		}
	}
	for i := range reflect.TypeOf(Config{}).NumField() {
		f := reflect.TypeOf(Config{}).Field(i)
		if f.Type.Kind() == reflect.Struct {
			leaves(f.Type, f.Tag.Get("yaml")+".")
		}
	}
	def := Default()
	for _, field := range fields {
		r, ok := documented[field]
		if !ok {
			t.Errorf("docs/config.md does not document %s", field)
			continue
		}
		delete(documented, field)
		// The stated default, parsed as a config file, must give the code's default.
		value := strings.Trim(r.def, "`")
		parts := strings.Split(field, ".")
		var y strings.Builder
		y.WriteString("version: 1\n")
		for i, p := range parts[:len(parts)-1] {
			fmt.Fprintf(&y, "%s%s:\n", strings.Repeat("  ", i), p)
		}
		fmt.Fprintf(&y, "%s%s: %s\n", strings.Repeat("  ", len(parts)-1), parts[len(parts)-1], value)
		c, err := Parse([]byte(y.String()), "doc")
		if err != nil {
			t.Errorf("%s: documented default %s does not parse: %v", field, r.def, err)
			continue
		}
		got, want := fieldValue(c, parts), fieldValue(def, parts)
		if !reflect.DeepEqual(got, want) {
			t.Errorf("%s: docs say the default is %s, the code's is %#v", field, r.def, want)
		}
	}
	for name := range documented {
		t.Errorf("docs/config.md documents %s, which is not a config field", name)
	}
}

// fieldValue follows yaml field names from c down to one field.
func fieldValue(c *Config, path []string) any {
	v := reflect.ValueOf(c).Elem()
	for _, name := range path {
		for i := range v.NumField() {
			if strings.Split(v.Type().Field(i).Tag.Get("yaml"), ",")[0] == name {
				v = v.Field(i)
				break
			}
		}
	}
	return v.Interface()
}

// A bare ~ is YAML's null, which the YAML library drops from lists without
// a word: "cow: [~, /opt/x]" would silently lose the home directory. In
// this file ~ means the home directory wherever a string goes.
func TestBareTildeIsTheHomeDirectory(t *testing.T) {
	c, err := Parse([]byte("version: 1\nfilesystem:\n  cow: [~, /opt/x]\n  hide:\n    - ~\nrun:\n  workdir: ~\n"), "t.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(c.Filesystem.Cow, []string{"~", "/opt/x"}) || !reflect.DeepEqual(c.Filesystem.Hide, []string{"~"}) || c.Run.Workdir != "~" {
		t.Fatalf("cow %q hide %q workdir %q", c.Filesystem.Cow, c.Filesystem.Hide, c.Run.Workdir)
	}
	for _, bad := range []string{
		"version: 1\nfilesystem:\n  cow: ~\n",            // the whole list: null, not the home
		"version: 1\nfilesystem:\n  cow: [null, /opt]\n", // an item the library would drop
		"version: 1\nfilesystem:\n  cow:\n    -\n    - /opt\n",
	} {
		_, err := Parse([]byte(bad), "t.yaml")
		if !errors.Is(err, errdefs.ErrInvalid) || !strings.Contains(err.Error(), "t.yaml:") || !strings.Contains(err.Error(), "filesystem.cow") {
			t.Errorf("Parse(%q) = %v; want an error naming the line and filesystem.cow", bad, err)
		}
	}
	// Quoted, "~" is plain text everywhere; empty still means empty.
	c, err = Parse([]byte("version: 1\nfilesystem:\n  cow: [\"~\"]\n  hide:\n"), "t.yaml")
	if err != nil || !reflect.DeepEqual(c.Filesystem.Cow, []string{"~"}) || len(c.Filesystem.Hide) != 0 {
		t.Fatalf("quoted ~ / empty list: %v %q %q", err, c.Filesystem.Cow, c.Filesystem.Hide)
	}
}
