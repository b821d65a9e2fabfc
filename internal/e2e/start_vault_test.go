package e2e

import (
	"strings"
	"testing"
)

// A command run into a started pod reaches the network and the vault as
// an ordinary run's agent does: the walls add the proxy, the secret's
// placeholder and the CA bundle to its environment, and the proxy swaps
// the placeholder for the value only towards the bound host.
func TestStartVaultAndProxy(t *testing.T) {
	e := newEnv(t)
	s := newVaultServer(t, e)
	e.must("init", "sv")
	if r := e.run(vaultCanary+"\n", "vault", "sv", "set", "API_KEY"); r.code != 0 {
		t.Fatalf("vault set: %+v", r)
	}
	e.must("vault", "sv", "bind", "API_KEY", "--host", "allowed.test", "--header", "Authorization: Bearer {}")
	if r := e.runEnv(s.trustEnv(), "", "start", "sv"); r.code != 0 {
		t.Fatalf("start: %+v", r)
	}
	defer e.run("", "stop", "sv")
	script := `c() { l=$1; shift; echo "$l=$(curl -sS --max-time 6 -o /dev/null -w '%{http_code}' "$@" 2>&1)"; }
c bound -H "X-Token: $API_KEY" https://allowed.test:8443/started
c other -H "X-Token: $API_KEY" https://www.allowed.test:8443/steal
case "$API_KEY" in airlock-placeholder-API_KEY-*) echo "placeholder=ok";; esac
echo "ca=$NODE_EXTRA_CA_CERTS"`
	// Run twice: the second command must not depend on the first.
	for i := 0; i < 2; i++ {
		r := e.run("", "run", "sv", "-T", "--", "sh", "-c", script)
		if r.code != 0 {
			t.Fatalf("run %d: %+v\nserver: %s", i, r, s.received())
		}
		for _, want := range []string{"bound=200", "other=403", "placeholder=ok", "ca=/etc/ssl/certs/ca-certificates.crt"} {
			if !strings.Contains(r.stdout, want+"\n") {
				t.Errorf("run %d: output lacks %q:\n%s", i, want, r.stdout)
			}
		}
		if strings.Contains(r.stdout+r.stderr, vaultCanary) {
			t.Errorf("SECURITY: run %d: the secret reached the command's output", i)
		}
	}
	got := s.received()
	if !strings.Contains(got, "allowed.test:8443 /started auth=Bearer "+vaultCanary+" token=airlock-placeholder-API_KEY-") {
		t.Errorf("the bound host did not get the secret in the template only; it got:\n%s", got)
	}
	if strings.Contains(got, "/steal") {
		t.Errorf("SECURITY: the placeholder reached the unbound host: %q", got)
	}
	e.must("stop", "sv")
	canaryFree(t, vaultCanary, e.home, e.ws)
}
