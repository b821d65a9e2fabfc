package supervisor

// presets are named host sets that a config can list under
// network.presets instead of spelling out every host an agent needs,
// sorted by name. A slice rather than a map: it is static data, which the
// binary's start does not have to build.
var presets = []struct {
	name  string
	hosts []string
}{
	{"anthropic", []string{"api.anthropic.com", "statsig.anthropic.com", "console.anthropic.com", "claude.ai"}},
	{"crates", []string{"crates.io", "index.crates.io", "static.crates.io"}},
	{"debian", []string{"deb.debian.org", "security.debian.org"}},
	{"github", []string{"github.com", "api.github.com", "codeload.github.com", "objects.githubusercontent.com", "raw.githubusercontent.com"}},
	{"go", []string{"proxy.golang.org", "sum.golang.org", "storage.googleapis.com"}},
	{"google-ai", []string{"generativelanguage.googleapis.com", "aiplatform.googleapis.com", "oauth2.googleapis.com"}},
	{"npm", []string{"registry.npmjs.org", "registry.yarnpkg.com"}},
	{"openai", []string{"api.openai.com", "auth.openai.com", "chatgpt.com"}},
	{"pypi", []string{"pypi.org", "files.pythonhosted.org"}},
}

// PresetNames lists the known presets, sorted.
func PresetNames() []string {
	out := make([]string, len(presets))
	for i, p := range presets {
		out[i] = p.name
	}
	return out
}

// ExpandPresets returns allow plus every host of the named presets.
// Unknown names are rejected earlier, by config validation.
func ExpandPresets(names, allow []string) []string {
	out := append([]string{}, allow...)
	for _, n := range names {
		for _, p := range presets {
			if p.name == n {
				out = append(out, p.hosts...)
			}
		}
	}
	return out
}
