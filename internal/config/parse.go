package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"regexp"
	"strings"
	"sync"

	"github.com/airlock-dev/airlock/internal/errdefs"
	"go.yaml.in/yaml/v3"
)

// MaxFileSize bounds a config file: anything larger is refused before the
// YAML parser sees it.
const MaxFileSize = 1 << 20

// Load reads and parses the config file at path, then validates it.
func Load(path string) (*Config, error) {
	f, err := os.Open(path)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, errdefs.NotFound("config file %s does not exist; create it or drop --config", path)
		}
		return nil, fmt.Errorf("reading config: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("reading config %s: %w", path, err)
	}
	c, err := Parse(data, path)
	if err != nil {
		return nil, err
	}
	if err := c.Validate(); err != nil {
		return nil, prefixLines(path, err)
	}
	return c, nil
}

// Parse reads a config from data, starting from Default(). filename names
// the file in error messages. Parse checks form and types; Validate checks
// meaning.
func Parse(data []byte, filename string) (*Config, error) {
	if len(data) > MaxFileSize {
		return nil, errdefs.Invalid("%s: file is larger than %d bytes; a config file is a few lines", filename, MaxFileSize)
	}
	root, err := parseNode(data, filename)
	if err != nil {
		return nil, err
	}
	if errs := findAliases(root, filename, nil); len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	if errs := checkNode(root, filename); len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	c := Default()
	c.Version = 0
	// Decode the checked tree (checkNode refused unknown fields, and read
	// a bare ~ as the home directory where a string goes).
	if err := root.Decode(c); err != nil {
		return nil, yamlError(filename, err)
	}
	return c, checkVersion(c, root, filename)
}

// parseNode parses exactly one YAML document into a node tree. Parsing to
// a node does not expand aliases, so a billion-laughs input stays small.
func parseNode(data []byte, filename string) (*yaml.Node, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if err == io.EOF {
			return nil, errdefs.Invalid("%s: file is empty; it needs at least \"version: %d\"", filename, Version)
		}
		return nil, yamlError(filename, err)
	}
	var extra yaml.Node
	if err := dec.Decode(&extra); err != io.EOF {
		line := extra.Line
		if err != nil {
			return nil, yamlError(filename, err)
		}
		return nil, errdefs.Invalid("%s:%d: a second YAML document; a config file holds exactly one (remove the \"---\")", filename, line)
	}
	if len(doc.Content) != 1 {
		return nil, errdefs.Invalid("%s: file holds no configuration; it needs at least \"version: %d\"", filename, Version)
	}
	return doc.Content[0], nil
}

// checkVersion requires "version: 1".
func checkVersion(c *Config, root *yaml.Node, filename string) error {
	if c.Version == Version {
		return nil
	}
	for i := 0; i+1 < len(root.Content); i += 2 {
		if root.Content[i].Value == "version" {
			return errdefs.Invalid("%s:%d: version %d is not supported; this airlock reads version %d", filename, root.Content[i+1].Line, c.Version, Version)
		}
	}
	return errdefs.Invalid("%s: version is missing; add \"version: %d\" as the first line", filename, Version)
}

// findAliases refuses every anchor and alias in the document, wherever it
// is: they are how YAML bombs are built, and a config never needs them.
func findAliases(n *yaml.Node, filename string, errs []error) []error {
	if len(errs) >= maxErrors {
		return errs
	}
	if n.Kind == yaml.AliasNode || n.Anchor != "" {
		errs = append(errs, errdefs.Invalid("%s:%d: YAML anchors and aliases (& and *) are not allowed; write the value out", filename, n.Line))
	}
	for _, c := range n.Content {
		errs = findAliases(c, filename, errs)
	}
	return errs
}

// checkNode walks the document against the Config type: it refuses
// anchors and aliases, unknown fields, and values of the wrong shape, with
// one error per problem naming the line and the field.
func checkNode(root *yaml.Node, filename string) []error {
	w := &walker{file: filename}
	w.walk(root, reflect.TypeOf(Config{}), "")
	return w.errs
}

type walker struct {
	file string
	errs []error
}

const maxErrors = 20

func (w *walker) fail(n *yaml.Node, field, format string, args ...any) {
	if len(w.errs) >= maxErrors {
		return
	}
	msg := fmt.Sprintf(format, args...)
	if field != "" {
		msg = field + ": " + msg
	}
	w.errs = append(w.errs, errdefs.Invalid("%s:%d: %s", w.file, n.Line, msg))
}

var (
	byteSizeType = reflect.TypeOf(ByteSize(0))
	durationType = reflect.TypeOf(Duration(0))
)

func (w *walker) walk(n *yaml.Node, t reflect.Type, field string) {
	if n.Kind == yaml.AliasNode || n.Anchor != "" {
		w.fail(n, field, "YAML anchors and aliases (& and *) are not allowed; write the value out")
		return
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		w.null(n, t, field)
		return
	}
	switch {
	case t == byteSizeType || t == durationType:
		if n.Kind != yaml.ScalarNode {
			w.fail(n, field, "expected a single value, got %s", describe(n))
		}
	case t.Kind() == reflect.Struct:
		w.walkStruct(n, t, field)
	case t.Kind() == reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			w.fail(n, field, "expected a list, got %s", describe(n))
			return
		}
		for _, item := range n.Content {
			if item.Kind == yaml.ScalarNode && item.Tag == "!!null" && !bareTilde(item) {
				// The YAML library would drop it without a word.
				w.fail(item, field, "an empty item in the list; remove it, or quote it if it is meant as text")
				continue
			}
			w.walk(item, t.Elem(), field+"[]")
		}
	case t.Kind() == reflect.Map:
		w.walkMap(n, t, field)
	default:
		w.walkScalar(n, t, field)
	}
}

// null handles a YAML null. An empty value makes a list empty and keeps
// the default of anything else. A bare ~ is YAML's null too, but in this
// file it means the home directory: it is taken as the string "~" where a
// string goes (cow: [~], workdir: ~), and refused where a list goes, since
// "cow: ~" would otherwise silently empty the list.
func (w *walker) null(n *yaml.Node, t reflect.Type, field string) {
	if !bareTilde(n) {
		return
	}
	switch t.Kind() {
	case reflect.String:
		n.Tag = "!!str"
	case reflect.Slice:
		w.fail(n, field, `a bare ~ is YAML's null, an empty list; write [~] for the home directory, or [] for none`)
	}
}

// bareTilde reports an unquoted "~" scalar.
func bareTilde(n *yaml.Node) bool {
	return n.Kind == yaml.ScalarNode && n.Value == "~" && n.Style&(yaml.SingleQuotedStyle|yaml.DoubleQuotedStyle) == 0
}

func (w *walker) walkStruct(n *yaml.Node, t reflect.Type, field string) {
	if n.Kind != yaml.MappingNode {
		w.fail(n, field, "expected a mapping of fields, got %s", describe(n))
		return
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind == yaml.AliasNode || k.Anchor != "" {
			w.fail(k, field, "YAML anchors and aliases (& and *) are not allowed; write the value out")
			continue
		}
		f, ok := fieldByTag(t, k.Value)
		if !ok || k.Kind != yaml.ScalarNode {
			where := "at the top level"
			if field != "" {
				where = "in " + field
			}
			w.fail(k, "", "unknown field %q %s", k.Value, where)
			continue
		}
		w.walk(v, f.Type, join(field, k.Value))
	}
}

func (w *walker) walkMap(n *yaml.Node, t reflect.Type, field string) {
	if n.Kind != yaml.MappingNode {
		w.fail(n, field, "expected a mapping, got %s", describe(n))
		return
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode || k.Anchor != "" {
			w.fail(k, field, "keys must be plain strings")
			continue
		}
		w.walk(v, t.Elem(), join(field, k.Value))
	}
}

// scalarTags lists the YAML tags each Go kind accepts. Strings take any
// scalar so that "hostname: 123" works; the rest are exact. Arrays indexed
// by kind rather than maps: static data, nothing to build at start-up.
var scalarTags = [...][]string{
	reflect.String:  {"!!str", "!!int", "!!float", "!!bool"},
	reflect.Bool:    {"!!bool"},
	reflect.Int:     {"!!int"},
	reflect.Int64:   {"!!int"},
	reflect.Float64: {"!!int", "!!float"},
}

var kindNames = [...]string{
	reflect.String: "a string", reflect.Bool: "true or false", reflect.Int: "an integer",
	reflect.Int64: "an integer", reflect.Float64: "a number",
}

func (w *walker) walkScalar(n *yaml.Node, t reflect.Type, field string) {
	var tags []string
	if k := t.Kind(); int(k) < len(scalarTags) {
		tags = scalarTags[k]
	}
	if tags == nil {
		w.fail(n, field, "internal error: no YAML rule for %s", t)
		return
	}
	if n.Kind != yaml.ScalarNode || !contains(tags, n.ShortTag()) {
		w.fail(n, field, "expected %s, got %s", kindNames[t.Kind()], describe(n))
	}
}

func fieldByTag(t reflect.Type, name string) (reflect.StructField, bool) {
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if strings.Split(f.Tag.Get("yaml"), ",")[0] == name {
			return f, true
		}
	}
	return reflect.StructField{}, false
}

func join(parent, name string) string {
	if parent == "" {
		return name
	}
	return parent + "." + name
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

var yamlLine = sync.OnceValue(func() *regexp.Regexp { return regexp.MustCompile(`^(?:yaml: )?line (\d+): (.*)$`) })

// yamlError turns a (possibly multi-line) yaml.v3 error into one-line
// errors of the form "file:line: message".
func yamlError(filename string, err error) error {
	var lines []string
	if te, ok := err.(*yaml.TypeError); ok {
		lines = te.Errors
	} else {
		lines = strings.Split(strings.TrimPrefix(err.Error(), "yaml: "), "\n")
	}
	var errs []error
	for _, l := range lines {
		l = strings.TrimSpace(l)
		if l == "" || l == "unmarshal errors:" {
			continue
		}
		if m := yamlLine().FindStringSubmatch(l); m != nil {
			errs = append(errs, errdefs.Invalid("%s:%s: %s", filename, m[1], m[2]))
		} else {
			errs = append(errs, errdefs.Invalid("%s: %s", filename, l))
		}
	}
	if len(errs) == 0 {
		return errdefs.Invalid("%s: %v", filename, err)
	}
	return errors.Join(errs...)
}

// prefixLines puts "file: " in front of each validation error line.
func prefixLines(filename string, err error) error {
	var errs []error
	for _, l := range strings.Split(err.Error(), "\n") {
		errs = append(errs, errdefs.Invalid("%s: %s", filename, l))
	}
	return errors.Join(errs...)
}

// Marshal renders c as YAML, the way pod.yaml stores the effective config.
func Marshal(c *Config) ([]byte, error) {
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(c); err != nil {
		return nil, fmt.Errorf("encoding config: %w", err)
	}
	if err := enc.Close(); err != nil {
		return nil, fmt.Errorf("encoding config: %w", err)
	}
	return buf.Bytes(), nil
}
