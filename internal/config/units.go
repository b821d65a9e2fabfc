package config

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/airlock-dev/airlock/internal/errdefs"
	"go.yaml.in/yaml/v3"
)

// ByteSize is a number of bytes. In YAML it is a plain integer or a number
// with a unit: K/KiB, M/MiB, G/GiB, T/TiB are powers of 1024 (as in
// Docker's --memory); KB, MB, GB, TB are powers of 1000.
type ByteSize int64

// Binary units.
const (
	KiB ByteSize = 1 << (10 * (iota + 1))
	MiB
	GiB
	TiB
)

var byteUnits = []struct {
	unit string
	mult float64
}{
	{"", 1}, {"b", 1},
	{"k", 1 << 10}, {"kib", 1 << 10}, {"kb", 1e3},
	{"m", 1 << 20}, {"mib", 1 << 20}, {"mb", 1e6},
	{"g", 1 << 30}, {"gib", 1 << 30}, {"gb", 1e9},
	{"t", 1 << 40}, {"tib", 1 << 40}, {"tb", 1e12},
}

func byteUnit(unit string) (float64, bool) {
	for _, u := range byteUnits {
		if u.unit == unit {
			return u.mult, true
		}
	}
	return 0, false
}

// ParseByteSize parses "512", "512MiB", "2GiB", "1.5G". Negative, empty,
// non-finite and overflowing sizes are errors wrapping errdefs.ErrInvalid.
func ParseByteSize(s string) (ByteSize, error) {
	t := strings.TrimSpace(s)
	i := strings.IndexFunc(t, func(r rune) bool { return (r < '0' || r > '9') && r != '.' })
	if i < 0 {
		i = len(t)
	}
	num, unit := t[:i], strings.ToLower(strings.TrimSpace(t[i:]))
	mult, ok := byteUnit(unit)
	if !ok || num == "" {
		return 0, errdefs.Invalid("size %q: expected a number of bytes with an optional unit, such as 512MiB or 4GiB", s)
	}
	if !strings.Contains(num, ".") {
		if n, err := strconv.ParseInt(num, 10, 64); err == nil && n <= math.MaxInt64/int64(mult) {
			return ByteSize(n * int64(mult)), nil
		}
	}
	f, err := strconv.ParseFloat(num, 64)
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
		return 0, errdefs.Invalid("size %q: %q is not a number", s, num)
	}
	v := f * mult
	if v >= math.MaxInt64 {
		return 0, errdefs.Invalid("size %q is too large", s)
	}
	return ByteSize(v), nil
}

// String renders the size for people, rounded: "4GiB", "1.5MiB", "812B".
func (b ByteSize) String() string {
	if b < 0 {
		return "-" + (-b).String()
	}
	units := []struct {
		n    ByteSize
		name string
	}{{TiB, "TiB"}, {GiB, "GiB"}, {MiB, "MiB"}, {KiB, "KiB"}}
	for _, u := range units {
		if b >= u.n {
			s := strconv.FormatFloat(float64(b)/float64(u.n), 'f', 2, 64)
			s = strings.TrimRight(strings.TrimRight(s, "0"), ".")
			return s + u.name
		}
	}
	return strconv.FormatInt(int64(b), 10) + "B"
}

// exact renders the size without losing a byte: the largest binary unit
// that divides it, else the plain integer.
func (b ByteSize) exact() string {
	for _, u := range []struct {
		n    ByteSize
		name string
	}{{TiB, "TiB"}, {GiB, "GiB"}, {MiB, "MiB"}, {KiB, "KiB"}} {
		if b != 0 && b%u.n == 0 {
			return strconv.FormatInt(int64(b/u.n), 10) + u.name
		}
	}
	return strconv.FormatInt(int64(b), 10)
}

// MarshalYAML writes the exact size in a readable unit.
func (b ByteSize) MarshalYAML() (any, error) {
	if b == 0 {
		return 0, nil
	}
	return b.exact(), nil
}

// UnmarshalYAML accepts an integer or a string with a unit.
func (b *ByteSize) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode || (n.Tag != "!!int" && n.Tag != "!!str" && n.Tag != "!!float") {
		return fmt.Errorf("line %d: expected a size such as 4GiB, got %s", n.Line, describe(n))
	}
	v, err := ParseByteSize(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %w", n.Line, err)
	}
	*b = v
	return nil
}

// Duration is a time.Duration written in YAML as "90m", "4h", "1h30m".
type Duration time.Duration

// String renders the duration without trailing zero units: "4h", "1h30m".
func (d Duration) String() string {
	s := time.Duration(d).String()
	if strings.HasSuffix(s, "m0s") {
		s = s[:len(s)-2]
	}
	if strings.HasSuffix(s, "h0m") {
		s = s[:len(s)-2]
	}
	return s
}

// MarshalYAML writes the duration as a string ("0" for none).
func (d Duration) MarshalYAML() (any, error) {
	if d == 0 {
		return 0, nil
	}
	return d.String(), nil
}

// UnmarshalYAML accepts a Go duration string, or 0 for none.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.ScalarNode && n.Tag == "!!int" && n.Value == "0" {
		*d = 0
		return nil
	}
	if n.Kind != yaml.ScalarNode || n.Tag != "!!str" {
		return fmt.Errorf("line %d: expected a duration with a unit such as 90m or 4h, got %s", n.Line, describe(n))
	}
	v, err := time.ParseDuration(strings.TrimSpace(n.Value))
	if err != nil || v < 0 {
		return fmt.Errorf("line %d: %w", n.Line,
			errdefs.Invalid("duration %q: expected a non-negative duration such as 90m or 4h", n.Value))
	}
	*d = Duration(v)
	return nil
}

// describe names a node's kind or value for an error message.
func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.AliasNode:
		return "an alias"
	}
	if n.Tag == "!!null" {
		return "nothing"
	}
	v := n.Value
	if len(v) > 40 {
		v = v[:40] + "..."
	}
	return strconv.Quote(v)
}
