package supervisor

import "github.com/airlock-dev/airlock/internal/sandbox"

// buildVault hands the pod's secrets to the agent: env-mode values in its
// environment, proxy-mode placeholders whose real values only the egress
// proxy substitutes for the bound hosts.
func (r *runner) buildVault(*sandbox.ViewConfig) error {
	return nil
}
