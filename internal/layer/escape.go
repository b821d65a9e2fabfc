package layer

import (
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// EscapeName makes a file name safe to print to a terminal. Printable UTF-8
// passes through unchanged; everything that could move the cursor, start a
// terminal escape sequence, reorder or hide text is written as a Go-style
// escape: C0 and C1 controls, DEL, ESC, bidi and other format characters,
// line and paragraph separators, unassigned and private-use code points, and
// bytes that are not valid UTF-8. The backslash itself becomes \\, so the
// result is injective: strconv.Unquote of the quoted result returns s.
func EscapeName(s string) string {
	if !needsEscape(s) {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 8)
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			writeByteEscape(&b, s[i])
		case r == '\\':
			b.WriteString(`\\`)
		case hidesText(r):
			writeRuneEscape(&b, r)
		default:
			b.WriteString(s[i : i+size])
		}
		i += size
	}
	return b.String()
}

// needsEscape is the fast path: most names are plain printable ASCII.
func needsEscape(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c < 0x20 || c >= 0x7f || c == '\\' {
			return true
		}
	}
	return false
}

// hidesText reports whether r must not reach a terminal as itself.
func hidesText(r rune) bool {
	if r == ' ' {
		return false
	}
	// unicode.IsPrint excludes controls (Cc), format characters (Cf: bidi
	// overrides and isolates, zero-width joiners, U+061C), separators other
	// than the ASCII space, private use and unassigned code points.
	return !unicode.IsPrint(r)
}

func writeByteEscape(b *strings.Builder, c byte) {
	const hex = "0123456789abcdef"
	b.WriteString(`\x`)
	b.WriteByte(hex[c>>4])
	b.WriteByte(hex[c&0xf])
}

func writeRuneEscape(b *strings.Builder, r rune) {
	switch r {
	case '\a':
		b.WriteString(`\a`)
	case '\b':
		b.WriteString(`\b`)
	case '\f':
		b.WriteString(`\f`)
	case '\n':
		b.WriteString(`\n`)
	case '\r':
		b.WriteString(`\r`)
	case '\t':
		b.WriteString(`\t`)
	case '\v':
		b.WriteString(`\v`)
	default:
		switch {
		case r < 0x80:
			writeByteEscape(b, byte(r))
		case r < 0x10000:
			b.WriteString(`\u`)
			b.WriteString(padHex(strconv.FormatInt(int64(r), 16), 4))
		default:
			b.WriteString(`\U`)
			b.WriteString(padHex(strconv.FormatInt(int64(r), 16), 8))
		}
	}
}

func padHex(s string, n int) string {
	if len(s) >= n {
		return s
	}
	return strings.Repeat("0", n-len(s)) + s
}

// escapeContentLine makes one line of file content safe for a terminal
// while keeping ordinary source code readable: tabs and backslashes stay as
// they are, a CR right before the line end stays (CRLF files), and every
// other control, format or invisible character is escaped so that a file
// cannot rewrite the reviewer's screen (cursor moves, OSC 52 clipboard
// writes, bidi reordering, a bare CR that overprints the line). Unlike
// EscapeName this is not injective; it is for display only.
func escapeContentLine(line string) string {
	body, eol := splitEOL(line)
	if isPlainContent(body) {
		return line
	}
	var b strings.Builder
	b.Grow(len(line) + 8)
	for i := 0; i < len(body); {
		r, size := utf8.DecodeRuneInString(body[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			writeByteEscape(&b, body[i])
		case r == '\t' || r == ' ':
			b.WriteRune(r)
		case hidesText(r):
			writeRuneEscape(&b, r)
		default:
			b.WriteString(body[i : i+size])
		}
		i += size
	}
	b.WriteString(eol)
	return b.String()
}

// splitEOL separates the line terminator ("\n", "\r\n" or none).
func splitEOL(line string) (body, eol string) {
	if strings.HasSuffix(line, "\r\n") {
		return line[:len(line)-2], "\r\n"
	}
	if strings.HasSuffix(line, "\n") {
		return line[:len(line)-1], "\n"
	}
	return line, ""
}

func isPlainContent(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if (c < 0x20 && c != '\t') || c >= 0x7f {
			return false
		}
	}
	return true
}
