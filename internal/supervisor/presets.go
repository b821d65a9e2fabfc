package supervisor

import "sort"

// presets are named host sets that a config can list under
// network.presets instead of spelling out every host an agent needs.
var presets = map[string][]string{
	"anthropic": {"api.anthropic.com", "statsig.anthropic.com", "console.anthropic.com", "claude.ai"},
	"openai":    {"api.openai.com", "auth.openai.com", "chatgpt.com"},
	"google-ai": {"generativelanguage.googleapis.com", "aiplatform.googleapis.com", "oauth2.googleapis.com"},
	"npm":       {"registry.npmjs.org", "registry.yarnpkg.com"},
	"pypi":      {"pypi.org", "files.pythonhosted.org"},
	"go":        {"proxy.golang.org", "sum.golang.org", "storage.googleapis.com"},
	"crates":    {"crates.io", "index.crates.io", "static.crates.io"},
	"debian":    {"deb.debian.org", "security.debian.org"},
	"github":    {"github.com", "api.github.com", "codeload.github.com", "objects.githubusercontent.com", "raw.githubusercontent.com"},
}

// PresetNames lists the known presets, sorted.
func PresetNames() []string {
	out := make([]string, 0, len(presets))
	for k := range presets {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// ExpandPresets returns allow plus every host of the named presets.
// Unknown names are rejected earlier, by config validation.
func ExpandPresets(names, allow []string) []string {
	out := append([]string{}, allow...)
	for _, n := range names {
		out = append(out, presets[n]...)
	}
	return out
}
