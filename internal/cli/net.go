package cli

import (
	"fmt"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/spf13/cobra"

	"github.com/airlock-dev/airlock/internal/control"
	"github.com/airlock-dev/airlock/internal/errdefs"
	"github.com/airlock-dev/airlock/internal/netwall"
	"github.com/airlock-dev/airlock/internal/pod"
)

func newNetCmd() *cobra.Command {
	var asJSON bool
	cmd := &cobra.Command{
		Use:   "net POD (allow|deny|rm DOMAIN... | ls)",
		Short: "Show or change a pod's network policy, live in a running pod",
		Long: `Change which host names a pod may reach. Changes are kept in the pod's config
and take effect in a running pod at once, without a restart. DOMAIN is an exact
name (api.example.com) or a wildcard (*.example.com).`,
		Example: `  airlock net mypod allow registry.npmjs.org '*.githubusercontent.com'
  airlock net mypod deny tracking.example.com
  airlock net mypod ls --json`,
		Args: argsError(cobra.MinimumNArgs(2)),
		RunE: func(cmd *cobra.Command, args []string) error {
			s, err := openStore()
			if err != nil {
				return err
			}
			p, err := resolvePod(s, args[0])
			if err != nil {
				return err
			}
			verb, domains := args[1], args[2:]
			if verb == "ls" {
				return netList(cmd, p, asJSON)
			}
			if verb != "allow" && verb != "deny" && verb != "rm" {
				return usageError{fmt.Errorf("net: unknown action %q; use allow, deny, rm or ls", verb)}
			}
			if len(domains) == 0 {
				return usageError{fmt.Errorf("net %s: name at least one domain", verb)}
			}
			for _, d := range domains {
				if err := validDomain(d); err != nil {
					return err
				}
			}
			return netChange(cmd, p, verb, domains)
		},
	}
	cmd.Flags().BoolVar(&asJSON, "json", false, "print JSON (ls)")
	return cmd
}

// validDomain accepts host names and *.suffix wildcards, nothing else: an
// IP literal in any spelling ("10.0.0.1", "2852039166", "0x7f.1") is
// refused, as the config refuses it.
func validDomain(d string) error {
	name := strings.TrimPrefix(d, "*.")
	if _, lit := netwall.ParseHostLiteral(name); lit {
		return errdefs.Invalid("%q is an IP address; the policy lists host names (address ranges go in network.allow_private)", d)
	}
	if len(name) == 0 || len(name) > 253 || strings.Contains(name, "*") {
		return errdefs.Invalid("%q is not a host name or *.example.com wildcard", d)
	}
	for _, label := range strings.Split(name, ".") {
		if label == "" || len(label) > 63 {
			return errdefs.Invalid("%q is not a valid host name", d)
		}
		for _, r := range label {
			if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_') {
				return errdefs.Invalid("%q is not a valid host name", d)
			}
		}
	}
	return nil
}

func netChange(cmd *cobra.Command, p *pod.Pod, verb string, domains []string) error {
	unlock, err := p.Lock()
	if err != nil {
		return err
	}
	n := &p.Config.Network
	for _, d := range domains {
		d = strings.ToLower(d)
		n.Allow = slices.DeleteFunc(n.Allow, func(x string) bool { return x == d })
		n.Deny = slices.DeleteFunc(n.Deny, func(x string) bool { return x == d })
		switch verb {
		case "allow":
			n.Allow = append(n.Allow, d)
		case "deny":
			n.Deny = append(n.Deny, d)
		}
	}
	err = p.SaveConfig()
	unlock()
	if err != nil {
		return err
	}
	live := "kept for the next run"
	if _, running := p.Running(); running {
		if _, err := control.Call(p.ControlSocket(), control.Request{Op: "net.reload"}); err != nil {
			return fmt.Errorf("policy saved but the running pod did not take it: %w", err)
		}
		live = "in effect now"
	}
	record(p, "net."+verb, map[string]any{"domains": domains}, "ok")
	fmt.Fprintf(cmd.OutOrStdout(), "%s %s (%s)\n", verbPast(verb), strings.Join(domains, ", "), live)
	return nil
}

func verbPast(v string) string {
	switch v {
	case "allow":
		return "allowed"
	case "deny":
		return "denied"
	}
	return "removed"
}

func netList(cmd *cobra.Command, p *pod.Pod, asJSON bool) error {
	n := p.Config.Network
	if asJSON {
		return writeJSON(cmd.OutOrStdout(), map[string]any{"mode": n.Mode, "allow": n.Allow, "deny": n.Deny, "presets": n.Presets, "ports": n.Ports, "dns_mode": n.DNS.Mode})
	}
	tw := tabwriter.NewWriter(cmd.OutOrStdout(), 0, 4, 2, ' ', 0)
	fmt.Fprintf(tw, "mode\t%s\n", n.Mode)
	fmt.Fprintf(tw, "dns\t%s\n", n.DNS.Mode)
	fmt.Fprintf(tw, "ports\t%v\n", n.Ports)
	fmt.Fprintf(tw, "presets\t%s\n", strings.Join(n.Presets, ", "))
	for _, d := range n.Allow {
		fmt.Fprintf(tw, "allow\t%s\n", d)
	}
	for _, d := range n.Deny {
		fmt.Fprintf(tw, "deny\t%s\n", d)
	}
	return tw.Flush()
}
