// Package vault keeps a pod's secrets sealed on disk and hands them to the
// supervisor, never to the agent directly.
//
// Layout under the pod's vault directory:
//
//	key.json            the pod's data key, wrapped (host key or passphrase)
//	secrets/NAME.json   one sealed secret with its binding and dates
//	ca.json             the pod's TLS interception CA (key sealed)
//
// Invariants:
//   - No plaintext value or key is ever written: every value is sealed with
//     XChaCha20-Poly1305 under the pod's data key, and the data key is
//     itself sealed under the host key ($AIRLOCK_HOME/vault.key) or a key
//     derived from a passphrase with argon2id.
//   - The associated data of a sealed value names the pod, the secret and
//     its binding: a ciphertext moved to another key, pod or binding fails
//     to open instead of being used there.
//   - Every file is written atomically (temp + fsync + rename, 0600); a
//     key file is created exclusively (temp + fsync + link), so two
//     processes racing to create one never replace each other's key.
//   - A process that unlocks a vault stops being dumpable (no core file,
//     no ptrace by other processes of the user): it holds values.
//   - Errors name the secret, never its value.
//
// Callers serialise writers of one vault (the CLI holds the pod's lock).
package vault

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/airlock-dev/airlock/internal/atomicfile"
	"github.com/airlock-dev/airlock/internal/errdefs"
)

// Modes of handing a secret to the agent.
const (
	// ModeProxy gives the agent a placeholder; only the egress proxy
	// swaps it for the value, and only in requests to the bound hosts.
	ModeProxy = "proxy"
	// ModeEnv puts the value itself in the agent's environment (weaker).
	ModeEnv = "env"
	// ModeNone, as given to the CLI, unbinds a secret (stored as "").
	ModeNone = "none"
)

// Binding says how a secret reaches the agent. The zero value keeps the
// secret in the vault without handing it to any run.
type Binding struct {
	Mode   string   `json:"mode,omitempty"`
	Hosts  []string `json:"hosts,omitempty"`
	Header string   `json:"header,omitempty"` // "Name: text with {} for the value"
}

// Entry is what may be shown about a secret: never its value.
type Entry struct {
	Name    string    `json:"name"`
	Binding Binding   `json:"binding"`
	Created time.Time `json:"created"`
	Updated time.Time `json:"updated"`
}

// record is one secrets/NAME.json file.
type record struct {
	Version int       `json:"v"`
	Name    string    `json:"name"`
	Binding Binding   `json:"binding"`
	Created time.Time `json:"created"`
	Updated time.Time `json:"updated"`
	Nonce   []byte    `json:"nonce"`
	Sealed  []byte    `json:"sealed"`
}

// Vault is one pod's vault. Listing needs no key; reading and writing
// values need Unlock first.
type Vault struct {
	home, pod, dir string
	dataKey        []byte
}

// Open returns the vault of pod podName stored in dir; home is
// $AIRLOCK_HOME, where the host key lives. Nothing is read yet.
func Open(home, podName, dir string) *Vault {
	return &Vault{home: home, pod: podName, dir: dir}
}

// The patterns are compiled on first use, not in every airlock process;
// lengths are checked apart (a counted repetition compiles to one copy of
// the class per count).
var nameRE = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`) })

// ValidName checks a secret name: an environment variable name.
func ValidName(name string) error {
	if len(name) > 128 || !nameRE().MatchString(name) {
		return errdefs.Invalid("secret name %q: use letters, digits and _ (an environment variable name, at most 128 characters)", name)
	}
	return nil
}

// hostLabelRE is one DNS label of a host a proxy-mode secret may go to.
var hostLabelRE = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^[a-z0-9]([a-z0-9_-]*[a-z0-9])?$`) })

// ValidHost checks a host of a proxy-mode binding: an exact, lower-case
// DNS name (no wildcard, port or IP literal: the proxy matches the TLS
// SNI, which never holds an address).
func ValidHost(h string) error {
	bad := errdefs.Invalid("host %q: give an exact lower-case host name such as api.example.com (no wildcard, port or IP address)", h)
	if len(h) == 0 || len(h) > 253 {
		return bad
	}
	labels := strings.Split(h, ".")
	for _, l := range labels {
		if len(l) > 63 || !hostLabelRE().MatchString(l) {
			return bad
		}
	}
	if strings.Trim(labels[len(labels)-1], "0123456789") == "" {
		return bad // an all-digit last label: an IPv4 address, not a name
	}
	return nil
}

// ValidBinding checks a binding before it is stored.
func ValidBinding(b Binding) error {
	switch b.Mode {
	case "":
		if len(b.Hosts) > 0 || b.Header != "" {
			return errdefs.Invalid("an unbound secret takes no --host or --header")
		}
	case ModeEnv:
		if len(b.Hosts) > 0 || b.Header != "" {
			return errdefs.Invalid("env mode hands the value itself to the agent: --host and --header apply to proxy mode only")
		}
	case ModeProxy:
		if len(b.Hosts) == 0 {
			return errdefs.Invalid("proxy mode needs at least one --host")
		}
	default:
		return errdefs.Invalid("mode %q: use proxy, env or none", b.Mode)
	}
	for i, h := range b.Hosts {
		if err := ValidHost(h); err != nil {
			return err
		}
		if slices.Contains(b.Hosts[:i], h) {
			return errdefs.Invalid("host %q given twice", h)
		}
	}
	if b.Header != "" {
		name, tmpl, ok := strings.Cut(b.Header, ":")
		if !ok || !headerNameRE().MatchString(strings.TrimSpace(name)) || !strings.Contains(tmpl, "{}") || strings.ContainsAny(tmpl, "\r\n\x00") {
			return errdefs.Invalid("header %q: use 'Name: text with {} where the value goes'", b.Header)
		}
		if slices.Contains(framingHeaders, strings.ToLower(strings.TrimSpace(name))) {
			return errdefs.Invalid("header %q: %s frames or routes the request; the proxy sets it, a secret cannot", b.Header, strings.TrimSpace(name))
		}
	}
	return nil
}

// framingHeaders are fields a secret's template may not set.
var framingHeaders = []string{"host", "content-length", "transfer-encoding", "connection", "upgrade", "te", "trailer", "expect"}

// headerNameRE is an HTTP field name (RFC 9110 token).
var headerNameRE = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile("^[!#$%&'*+.^_`|~0-9A-Za-z-]+$") })

func (v *Vault) secretsDir() string            { return filepath.Join(v.dir, "secrets") }
func (v *Vault) recordPath(name string) string { return filepath.Join(v.secretsDir(), name+".json") }

// List returns the secrets, sorted by name. It needs no key.
func (v *Vault) List() ([]Entry, error) {
	des, err := os.ReadDir(v.secretsDir())
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("listing the vault of pod %s: %w", v.pod, err)
	}
	var out []Entry
	for _, de := range des {
		name, ok := strings.CutSuffix(de.Name(), ".json")
		if !ok || ValidName(name) != nil {
			continue
		}
		rec, err := v.readRecord(name)
		if err != nil {
			return nil, err
		}
		out = append(out, Entry{Name: rec.Name, Binding: rec.Binding, Created: rec.Created, Updated: rec.Updated})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

func (v *Vault) readRecord(name string) (*record, error) {
	if err := ValidName(name); err != nil {
		return nil, err
	}
	b, err := readFileNoFollow(v.recordPath(name))
	if errors.Is(err, os.ErrNotExist) {
		return nil, errdefs.NotFound("secret %s is not in the vault of pod %s; add it with airlock vault %s set %s", name, v.pod, v.pod, name)
	}
	if err != nil {
		return nil, fmt.Errorf("reading secret %s: %w", name, err)
	}
	var rec record
	if err := json.Unmarshal(b, &rec); err != nil || rec.Version != 1 || rec.Name != name {
		return nil, fmt.Errorf("secret %s of pod %s is damaged (unreadable record); set it again", name, v.pod)
	}
	return &rec, nil
}

// MaxValue is the largest value a secret may hold (tokens, keys, a
// service-account file): its record stays well within what is read back.
const MaxValue = 64 << 10

// Set stores value under name, keeping an existing binding.
func (v *Vault) Set(name string, value []byte) error {
	if len(value) == 0 || len(value) > MaxValue {
		return errdefs.Invalid("secret %s: the value must be 1 byte to 64 KiB, not %d bytes", name, len(value))
	}
	rec, err := v.readRecord(name)
	if errors.Is(err, errdefs.ErrNotFound) {
		now := time.Now().UTC()
		rec, err = &record{Version: 1, Name: name, Created: now}, nil
	}
	if err != nil {
		return err
	}
	return v.seal(rec, value)
}

// seal encrypts value into rec (with rec's binding in the associated data)
// and writes it.
func (v *Vault) seal(rec *record, value []byte) error {
	if v.dataKey == nil {
		return errors.New("vault is locked: call Unlock first")
	}
	nonce, sealed, err := sealBytes(v.dataKey, value, v.secretAD(rec.Name, rec.Binding))
	if err != nil {
		return fmt.Errorf("sealing secret %s: %w", rec.Name, err)
	}
	rec.Nonce, rec.Sealed, rec.Updated = nonce, sealed, time.Now().UTC()
	b, err := json.MarshalIndent(rec, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(v.secretsDir(), 0o700); err != nil {
		return fmt.Errorf("creating the vault of pod %s: %w", v.pod, err)
	}
	return atomicfile.WriteFile(v.recordPath(rec.Name), b)
}

// secretAD binds a ciphertext to its pod, name and binding.
func (v *Vault) secretAD(name string, b Binding) []byte {
	hosts := slices.Clone(b.Hosts)
	sort.Strings(hosts)
	return []byte(strings.Join([]string{"airlock-vault-secret-v1", v.pod, name, b.Mode, strings.Join(hosts, ","), b.Header}, "\x00"))
}

// Get returns the value of name. The caller should clear it after use.
func (v *Vault) Get(name string) ([]byte, error) {
	rec, err := v.readRecord(name)
	if err != nil {
		return nil, err
	}
	return v.open(rec)
}

func (v *Vault) open(rec *record) ([]byte, error) {
	if v.dataKey == nil {
		return nil, errors.New("vault is locked: call Unlock first")
	}
	val, err := openBytes(v.dataKey, rec.Nonce, rec.Sealed, v.secretAD(rec.Name, rec.Binding))
	if err != nil {
		return nil, fmt.Errorf("secret %s of pod %s does not open: the file was altered, moved from another secret or pod, or sealed under another key; set it again", rec.Name, v.pod)
	}
	return val, nil
}

// Bind changes how name reaches the agent; the value is resealed so the
// new binding is authenticated with it.
func (v *Vault) Bind(name string, b Binding) error {
	if err := ValidBinding(b); err != nil {
		return err
	}
	rec, err := v.readRecord(name)
	if err != nil {
		return err
	}
	val, err := v.open(rec)
	if err != nil {
		return err
	}
	defer clear(val)
	rec.Binding = b
	return v.seal(rec, val)
}

// Remove deletes name from the vault.
func (v *Vault) Remove(name string) error {
	if _, err := v.readRecord(name); err != nil {
		return err
	}
	if err := os.Remove(v.recordPath(name)); err != nil {
		return fmt.Errorf("removing secret %s: %w", name, err)
	}
	return atomicfile.SyncDir(v.secretsDir())
}

// Close forgets the data key.
func (v *Vault) Close() {
	clear(v.dataKey)
	v.dataKey = nil
}
