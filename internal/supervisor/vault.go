package supervisor

import (
	"crypto/rand"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/airlock-dev/airlock/internal/netwall"
	"github.com/airlock-dev/airlock/internal/pod"
	"github.com/airlock-dev/airlock/internal/sandbox"
	"github.com/airlock-dev/airlock/internal/vault"
)

// WallVault names the vault in status.
const WallVault = "vault"

// systemBundles are the paths where distributions keep the system trust
// bundle (Debian/Ubuntu/Alpine, Fedora/RHEL, openSUSE, others). In proxy
// mode each one that exists on the host is replaced, in the pod's view, by
// the pod's bundle: the host's roots plus the pod's CA.
var systemBundles = []string{"/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt",
	"/etc/ssl/ca-bundle.pem", "/etc/ssl/cert.pem"}

// caEnv points common TLS stacks at the pod's bundle: OpenSSL and Go
// (SSL_CERT_FILE), curl, Python requests and pip, Node, git, the AWS CLI
// and SDKs, cargo, Deno.
var caEnv = []string{"SSL_CERT_FILE", "CURL_CA_BUNDLE", "REQUESTS_CA_BUNDLE", "NODE_EXTRA_CA_CERTS",
	"GIT_SSL_CAINFO", "AWS_CA_BUNDLE", "CARGO_HTTP_CAINFO", "DENO_CERT", "PIP_CERT"}

// buildVault hands the pod's secrets to the agent: env-mode values in its
// environment, proxy-mode placeholders whose real values only the egress
// proxy substitutes for the bound hosts.
func (r *runner) buildVault(*sandbox.ViewConfig) error {
	p := r.o.Pod
	if err := r.hideStateDir(); err != nil {
		return err
	}
	v := vault.Open(pod.DefaultHome(), p.Name, p.VaultDir())
	entries, err := v.List()
	if err != nil {
		return fmt.Errorf("vault: %w", err)
	}
	var handed []vault.Entry
	for _, e := range entries {
		if e.Binding.Mode != "" {
			handed = append(handed, e)
		}
	}
	if len(handed) == 0 {
		return nil
	}
	if err := v.Unlock(VaultPassphrase()); err != nil {
		return fmt.Errorf("vault: %w", err)
	}
	defer v.Close()
	secrets, envNames, err := r.vaultSecrets(v, handed)
	if err != nil {
		return err
	}
	// The wall clears the values when it closes (Wall.Close); until it has
	// them, a failure clears them here.
	if len(secrets) > 0 {
		if err := r.vaultProxy(v, secrets); err != nil {
			for _, s := range secrets {
				clear(s.Value)
			}
			return err
		}
	}
	status := fmt.Sprintf("up (%d proxy", len(secrets))
	if len(envNames) > 0 {
		status += fmt.Sprintf(", %d env: %s visible to the agent", len(envNames), strings.Join(envNames, ", "))
		r.o.Audit("vault.env", map[string]any{"secrets": envNames, "note": "env mode: the agent can read these values"}, "warning")
		r.o.Warn("vault: %s in env mode: the agent can read and send these values (bind them with --host for proxy mode)", strings.Join(envNames, ", "))
	}
	r.walls[WallVault] = status + ")"
	return nil
}

// vaultSecrets opens each handed secret: env-mode values go into the
// spec's environment, proxy-mode ones get a fresh placeholder.
func (r *runner) vaultSecrets(v *vault.Vault, handed []vault.Entry) ([]netwall.Secret, []string, error) {
	var secrets []netwall.Secret
	var envNames []string
	for _, e := range handed {
		val, err := v.Get(e.Name)
		if err != nil {
			for _, s := range secrets {
				clear(s.Value)
			}
			return nil, nil, fmt.Errorf("vault: %w", err)
		}
		if e.Binding.Mode == vault.ModeEnv {
			r.setWallEnv(e.Name, string(val))
			clear(val)
			envNames = append(envNames, e.Name)
			continue
		}
		ph := placeholder(e.Name)
		r.setWallEnv(e.Name, ph)
		secrets = append(secrets, netwall.Secret{Name: e.Name, Placeholder: ph, Value: val, Hosts: e.Binding.Hosts, Header: e.Binding.Header})
	}
	return secrets, envNames, nil
}

// vaultProxy trusts the pod's CA inside the pod and gives the secrets to
// the network wall once it is up.
func (r *runner) vaultProxy(v *vault.Vault, secrets []netwall.Secret) error {
	if r.cfg.Network.Mode != netwall.ModeFiltered {
		return fmt.Errorf("vault: proxy-mode secrets need network.mode filtered (the pod's is %q); bind them with --mode env or change the network mode", r.cfg.Network.Mode)
	}
	cert, key, err := v.PodCA()
	if err != nil {
		return fmt.Errorf("vault: %w", err)
	}
	bundle, err := hostBundle()
	if err != nil {
		return err
	}
	bundle = append(bundle, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Raw})...)
	path := filepath.Join(r.o.Pod.RunDir(), "ca-bundle.crt")
	if err := os.WriteFile(path, bundle, 0o644); err != nil {
		return fmt.Errorf("vault: writing the pod's CA bundle: %w", err)
	}
	var target string
	for _, b := range systemBundles {
		if fi, err := os.Stat(b); err == nil && fi.Mode().IsRegular() {
			r.spec.Mounts = append(r.spec.Mounts, sandbox.Mount{Kind: sandbox.KindBind, Source: path, Target: b, ReadOnly: true, Reason: "the pod's CA bundle (vault proxy mode)"})
			if target == "" {
				target = b
			}
		}
	}
	if target == "" {
		return fmt.Errorf("vault: the host has no system CA bundle (%s) to give the pod its CA in; install ca-certificates", strings.Join(systemBundles, ", "))
	}
	for _, k := range caEnv {
		r.setWallEnv(k, target)
	}
	r.hooks = append(r.hooks, func(int) error {
		w := r.wall.Load()
		if w == nil {
			return fmt.Errorf("vault: the network wall is not up; proxy-mode secrets cannot be served")
		}
		return w.SetInjection(&netwall.Injection{Secrets: secrets, CACert: cert, CAKey: key})
	})
	return nil
}

// hideStateDir hides $AIRLOCK_HOME in the pod's view when it lies inside
// something the pod sees (a home or workspace copy-on-write, a read-only
// system path): it holds the host vault key, every pod's wrapped data key
// and sealed secrets, and the audit trails. With the key files in reach
// the agent could open every secret itself.
func (r *runner) hideStateDir() error {
	home, err := filepath.EvalSymlinks(pod.DefaultHome())
	if err != nil {
		return fmt.Errorf("vault: finding the state directory to hide it from the pod: %w", err)
	}
	var roots []string
	for _, root := range r.o.Pod.Roots() {
		roots = append(roots, root.Host)
	}
	for _, t := range hideAround(home, roots) {
		r.spec.Mounts = append(r.spec.Mounts, sandbox.Mount{Kind: sandbox.KindHide, Target: t, Optional: true, Reason: "airlock's state (vault keys, audit trails)"})
	}
	return nil
}

// hideAround returns what to hide so that nothing of dir stays visible but
// the roots inside it (a workspace kept under $AIRLOCK_HOME): dir itself
// when it holds no root, else each of its entries that is not a root,
// recursively.
func hideAround(dir string, roots []string) []string {
	inside := false
	for _, r := range roots {
		if r == dir {
			return nil
		}
		inside = inside || strings.HasPrefix(r, dir+"/")
	}
	if !inside {
		return []string{dir}
	}
	des, err := os.ReadDir(dir)
	if err != nil {
		return []string{dir}
	}
	var out []string
	for _, de := range des {
		out = append(out, hideAround(filepath.Join(dir, de.Name()), roots)...)
	}
	return out
}

// VaultPassphrase returns AIRLOCK_VAULT_PASSPHRASE, or nil when unset.
func VaultPassphrase() []byte {
	if s, ok := os.LookupEnv("AIRLOCK_VAULT_PASSPHRASE"); ok {
		return []byte(s)
	}
	return nil
}

// placeholder is what the agent holds for a proxy-mode secret: new each run.
func placeholder(name string) string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return "airlock-placeholder-" + name + "-" + hex.EncodeToString(b)
}

// hostBundle reads the bundle the host's TLS stack trusts: SSL_CERT_FILE
// when the supervisor has it, else the system bundle.
func hostBundle() ([]byte, error) {
	cands := systemBundles
	if f := os.Getenv("SSL_CERT_FILE"); f != "" {
		cands = []string{f}
	}
	for _, f := range cands {
		if b, err := os.ReadFile(f); err == nil {
			if len(b) > 0 && b[len(b)-1] != '\n' {
				b = append(b, '\n')
			}
			return b, nil
		}
	}
	return nil, fmt.Errorf("vault: no host CA bundle found (tried %s); set SSL_CERT_FILE", strings.Join(cands, ", "))
}

// setWallEnv sets k=v in the command's environment for a wall (the proxy,
// a vault placeholder, the CA bundle), over any value the person gave, and
// keeps it for every command a started pod runs later.
func (r *runner) setWallEnv(k, v string) {
	r.spec.Env = setEnv(r.spec.Env, k, v)
	r.wallEnv = setEnv(r.wallEnv, k, v)
}

// setEnv sets k in a KEY=VALUE list, replacing an earlier value.
func setEnv(env []string, k, v string) []string {
	for i, kv := range env {
		if strings.HasPrefix(kv, k+"=") {
			env[i] = k + "=" + v
			return env
		}
	}
	return append(env, k+"="+v)
}
