package layer

// StatLine is one row of `airlock diff --stat`.
type StatLine struct {
	Path    string // c.Display(), not escaped
	Kind    Kind
	Added   int // lines added
	Removed int // lines removed
	// Binary is set when the content cannot be counted in lines: a binary
	// file, or a file over 8 MiB.
	Binary bool
}

// Stat counts the lines a change adds and removes, with the same diff as
// WritePatch. Directories, devices and pure mode changes count zero.
func Stat(roots []Root, c Change) (StatLine, error) {
	line := StatLine{Path: c.Display(), Kind: c.Kind}
	old, cur, err := loadSides(roots, c)
	if err != nil {
		return line, err
	}
	switch {
	case old.tooLarge || cur.tooLarge || old.binary() || cur.binary():
		line.Binary = old.hasContent() || cur.hasContent()
	case string(old.data) == string(cur.data):
	default:
		for _, op := range diffLines(splitLines(old.data), splitLines(cur.data)) {
			switch op {
			case opDelete:
				line.Removed++
			case opInsert:
				line.Added++
			}
		}
	}
	return line, nil
}
