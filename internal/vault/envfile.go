package vault

import (
	"bytes"
	"strconv"
	"strings"

	"github.com/airlock-dev/airlock/internal/errdefs"
)

// KV is one NAME=value pair read from an env file.
type KV struct {
	Name  string
	Value []byte
}

// ParseEnvFile reads dotenv lines: NAME=value, optional "export ", blank
// lines and # comments (also after an unquoted value), values optionally
// in single or double quotes.
// Errors name the line, never its value.
func ParseEnvFile(data []byte) ([]KV, error) {
	var out []KV
	for i, raw := range bytes.Split(data, []byte("\n")) {
		line := strings.TrimSpace(string(bytes.TrimSuffix(raw, []byte("\r"))))
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		line = strings.TrimPrefix(line, "export ")
		name, val, ok := strings.Cut(line, "=")
		name = strings.TrimSpace(name)
		if !ok || ValidName(name) != nil {
			return nil, errdefs.Invalid("env file line %d: want NAME=value with NAME a variable name", i+1)
		}
		val = strings.TrimSpace(val)
		switch {
		case len(val) >= 2 && val[0] == '"' && val[len(val)-1] == '"':
			uq, err := strconv.Unquote(val)
			if err != nil {
				return nil, errdefs.Invalid("env file line %d (%s): bad double-quoted value", i+1, name)
			}
			val = uq
		case len(val) >= 2 && val[0] == '\'' && val[len(val)-1] == '\'':
			val = val[1 : len(val)-1]
		default:
			if i := strings.Index(val, " #"); i >= 0 { // an unquoted value ends at a comment
				val = strings.TrimSpace(val[:i])
			}
		}
		out = append(out, KV{Name: name, Value: []byte(val)})
	}
	if len(out) == 0 {
		return nil, errdefs.Invalid("env file holds no NAME=value lines")
	}
	return out, nil
}
