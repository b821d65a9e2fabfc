package cli

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/airlock-dev/airlock/internal/errdefs"
	"github.com/airlock-dev/airlock/internal/pod"
	"github.com/airlock-dev/airlock/internal/supervisor"
	"github.com/airlock-dev/airlock/internal/vault"
)

var vaultVerbs = []string{"init", "set", "ls", "rm", "import", "get", "bind"}

type vaultFlags struct {
	asJSON, reveal, passStdin bool
	fromFile, header, mode    string
	hosts                     []string
}

func newVaultCmd() *cobra.Command {
	var f vaultFlags
	cmd := &cobra.Command{
		Use:   "vault [POD] (init|set KEY|ls|rm KEY|import FILE.env|get KEY --reveal|bind KEY --host H)",
		Short: "Keep secrets the agent can use but never see",
		Long: `Secrets are sealed on disk (XChaCha20-Poly1305) under a per-pod key, itself
sealed by the host key $AIRLOCK_HOME/vault.key or, if the vault was created with
a passphrase, by argon2id(AIRLOCK_VAULT_PASSPHRASE). Values are read from stdin
or --from-file, never from the command line.

A secret bound in proxy mode (the default) reaches the agent as a placeholder;
only the egress proxy puts the value in, and only in verified HTTPS requests to
the bound hosts: into the --header template when there is one, else wherever
the agent put the placeholder (header values, path, query). The placeholder on
its way anywhere else is blocked and audited. In env mode the agent sees the
value itself. --mode none unbinds. See docs/vault.md.`,
		Example: `  printf %s "$TOKEN" | airlock vault mypod set GITHUB_TOKEN
  airlock vault mypod bind GITHUB_TOKEN --host api.github.com --header 'Authorization: Bearer {}'
  airlock vault mypod ls --json`,
		Args: argsError(cobra.MinimumNArgs(1)),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := openStore()
			if err != nil {
				return err
			}
			var p *pod.Pod
			if slices.Contains(vaultVerbs, args[0]) && (len(args) < 2 || !slices.Contains(vaultVerbs, args[1])) {
				p, err = resolvePod(s, "")
			} else {
				p, err = resolvePod(s, args[0])
				args = args[1:]
			}
			if err != nil {
				return err
			}
			if len(args) == 0 {
				return usageError{fmt.Errorf("vault: name an action: %s", strings.Join(vaultVerbs, ", "))}
			}
			return vaultDo(cmd, p, args[0], args[1:], &f)
		},
	}
	fl := cmd.Flags()
	fl.BoolVar(&f.asJSON, "json", false, "print JSON (ls)")
	fl.BoolVar(&f.reveal, "reveal", false, "print the value (get); only for the owner at a terminal")
	fl.BoolVar(&f.passStdin, "passphrase-stdin", false, "read the vault passphrase from the first line of stdin")
	fl.StringVar(&f.fromFile, "from-file", "", "read the value from this file (set)")
	fl.StringSliceVar(&f.hosts, "host", nil, "host the secret may be sent to (bind; repeatable)")
	fl.StringVar(&f.header, "header", "", "header to set on requests to the host, {} = the value (bind)")
	fl.StringVar(&f.mode, "mode", vault.ModeProxy, "proxy (agent sees a placeholder), env (agent sees the value) or none (unbind) (bind)")
	return cmd
}

func vaultDo(cmd *cobra.Command, p *pod.Pod, verb string, args []string, f *vaultFlags) error {
	want := map[string]int{"init": 0, "ls": 0, "set": 1, "rm": 1, "import": 1, "get": 1, "bind": 1}
	n, ok := want[verb]
	if !ok {
		return usageError{fmt.Errorf("vault: unknown action %q; use %s", verb, strings.Join(vaultVerbs, ", "))}
	}
	if len(args) != n {
		return usageError{fmt.Errorf("vault %s: want %d argument(s), got %d", verb, n, len(args))}
	}
	if n == 1 && verb != "import" {
		if err := vault.ValidName(args[0]); err != nil {
			return err
		}
	}
	v := vault.Open(pod.DefaultHome(), p.Name, p.VaultDir())
	defer v.Close()
	in := bufio.NewReader(cmd.InOrStdin())
	if verb == "ls" {
		return vaultList(cmd, v, f.asJSON)
	}
	unlock, err := p.Lock()
	if err != nil {
		return err
	}
	defer unlock()
	if verb == "rm" {
		if err := v.Remove(args[0]); err != nil {
			return err
		}
		record(p, "vault.remove", map[string]any{"secret": args[0]}, "ok")
		fmt.Fprintf(cmd.OutOrStdout(), "removed %s\n", args[0])
		return nil
	}
	pass, err := vaultPassphrase(in, f.passStdin)
	if err != nil {
		return err
	}
	defer clear(pass)
	if verb == "init" {
		return vaultInit(cmd, p, v, pass)
	}
	if err := v.Unlock(pass); err != nil {
		return err
	}
	switch verb {
	case "set":
		return vaultSet(cmd, p, v, args[0], in, f.fromFile)
	case "import":
		return vaultImport(cmd, p, v, args[0])
	case "get":
		return vaultGet(cmd, p, v, args[0], f.reveal)
	}
	return vaultBind(cmd, p, v, args[0], f)
}

// vaultPassphrase reads the passphrase from stdin's first line, or from
// AIRLOCK_VAULT_PASSPHRASE; nil means the host key.
func vaultPassphrase(in *bufio.Reader, fromStdin bool) ([]byte, error) {
	if !fromStdin {
		return supervisor.VaultPassphrase(), nil
	}
	line, err := in.ReadBytes('\n')
	if err != nil && err != io.EOF {
		return nil, fmt.Errorf("reading the passphrase from stdin: %w", err)
	}
	return bytes.TrimRight(line, "\r\n"), nil
}

func vaultInit(cmd *cobra.Command, p *pod.Pod, v *vault.Vault, pass []byte) error {
	if err := v.Init(pass); err != nil {
		return err
	}
	kdf := vault.KDFHost
	if pass != nil {
		kdf = vault.KDFArgon2id
	}
	record(p, "vault.init", map[string]any{"protection": kdf}, "ok")
	fmt.Fprintf(cmd.OutOrStdout(), "vault of %s created (key protected by %s)\n", p.Name, kdf)
	return nil
}

func vaultSet(cmd *cobra.Command, p *pod.Pod, v *vault.Vault, name string, in *bufio.Reader, fromFile string) error {
	val, err := readSecretValue(cmd, in, fromFile)
	if err != nil {
		return err
	}
	defer clear(val)
	if err := v.Set(name, val); err != nil {
		return err
	}
	record(p, "vault.set", map[string]any{"secret": name, "bytes": len(val)}, "ok")
	fmt.Fprintf(cmd.OutOrStdout(), "stored %s (%d bytes)\n", name, len(val))
	return nil
}

// readSecretValue reads a value from a file, a terminal prompt without
// echo, or stdin; one trailing newline is dropped.
func readSecretValue(cmd *cobra.Command, in *bufio.Reader, fromFile string) ([]byte, error) {
	var val []byte
	var err error
	switch {
	case fromFile != "":
		var f *os.File
		if f, err = os.Open(fromFile); err == nil {
			val, err = io.ReadAll(io.LimitReader(f, vault.MaxValue+2))
			f.Close()
		}
	case isTerminal(cmd.InOrStdin()):
		fmt.Fprint(cmd.ErrOrStderr(), "value (not echoed): ")
		val, err = term.ReadPassword(int(cmd.InOrStdin().(*os.File).Fd()))
		fmt.Fprintln(cmd.ErrOrStderr())
	default:
		val, err = io.ReadAll(io.LimitReader(in, vault.MaxValue+2))
	}
	if err != nil {
		return nil, fmt.Errorf("reading the secret value: %w", err)
	}
	val = bytes.TrimSuffix(bytes.TrimSuffix(val, []byte("\n")), []byte("\r"))
	if len(val) == 0 {
		return nil, errdefs.Invalid("empty secret value: pipe it on stdin or pass --from-file")
	}
	return val, nil
}

func isTerminal(r any) bool {
	f, ok := r.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

func vaultImport(cmd *cobra.Command, p *pod.Pod, v *vault.Vault, file string) error {
	data, err := os.ReadFile(file)
	if err != nil {
		return fmt.Errorf("reading %s: %w", file, err)
	}
	defer clear(data)
	kvs, err := vault.ParseEnvFile(data)
	if err != nil {
		return err
	}
	var names []string
	for _, kv := range kvs {
		err := v.Set(kv.Name, kv.Value)
		clear(kv.Value)
		if err != nil {
			return err
		}
		names = append(names, kv.Name)
	}
	record(p, "vault.set", map[string]any{"secrets": names, "from": file}, "ok")
	fmt.Fprintf(cmd.OutOrStdout(), "imported %s: %s\n", plural(len(names), "secret", "secrets"), strings.Join(names, ", "))
	fmt.Fprintf(cmd.ErrOrStderr(), "note: %s still holds the values in plaintext; delete it once the vault is their only copy\n", file)
	return nil
}

func vaultGet(cmd *cobra.Command, p *pod.Pod, v *vault.Vault, name string, reveal bool) error {
	if !reveal {
		return errdefs.Invalid("vault get prints a secret in the clear: pass --reveal to confirm")
	}
	if !isTerminal(cmd.OutOrStdout()) {
		record(p, "vault.get", map[string]any{"secret": name}, "refused: stdout is not a terminal")
		return fmt.Errorf("vault get --reveal prints only to a terminal, for the owner to read: %w", errdefs.ErrPermission)
	}
	val, err := v.Get(name)
	if err != nil {
		return err
	}
	defer clear(val)
	record(p, "vault.get", map[string]any{"secret": name}, "revealed")
	out := cmd.OutOrStdout()
	_, _ = out.Write(val)
	_, err = io.WriteString(out, "\n")
	return err
}

func vaultBind(cmd *cobra.Command, p *pod.Pod, v *vault.Vault, name string, f *vaultFlags) error {
	b := vault.Binding{Mode: f.mode, Header: f.header}
	if b.Mode == vault.ModeNone {
		b.Mode = ""
	}
	for _, h := range f.hosts {
		b.Hosts = append(b.Hosts, strings.TrimSuffix(strings.ToLower(h), "."))
	}
	if err := v.Bind(name, b); err != nil {
		return err
	}
	outcome := "ok"
	switch b.Mode {
	case vault.ModeEnv:
		outcome = "warning: env mode, the agent can read the value"
	case "":
		b.Mode = vault.ModeNone
	}
	record(p, "vault.bind", map[string]any{"secret": name, "mode": b.Mode, "hosts": b.Hosts, "header": headerName(b.Header)}, outcome)
	fmt.Fprintf(cmd.OutOrStdout(), "bound %s: %s %s\n", name, b.Mode, strings.Join(b.Hosts, ", "))
	return nil
}

func headerName(h string) string {
	n, _, _ := strings.Cut(h, ":")
	return n
}

func vaultList(cmd *cobra.Command, v *vault.Vault, asJSON bool) error {
	es, err := v.List()
	if err != nil {
		return err
	}
	if asJSON {
		if es == nil {
			es = []vault.Entry{}
		}
		return writeJSON(cmd.OutOrStdout(), es)
	}
	tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tMODE\tHOSTS\tHEADER\tUPDATED")
	for _, e := range es {
		mode := e.Binding.Mode
		if mode == "" {
			mode = "(unbound)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\n", e.Name, mode, strings.Join(e.Binding.Hosts, ","), headerName(e.Binding.Header), e.Updated.Local().Format(time.DateTime))
	}
	return tw.Flush()
}
