// Package personalize renders the {{variable}} templates of email subjects
// and bodies with per-recipient data.
//
// Syntax:
//
//	{{first_name}}              a variable
//	{{user.address.city}}       a path into nested objects
//	{{name|'Customer'}}         a default, used when the variable is missing
//	{{ name | "Customer" }}     whitespace inside the braces is allowed
//
// A name is letters, digits, '_' and '-', not starting with a digit or '-';
// a path is names joined by dots. A default is quoted with ' or " and runs
// to the next quote of the same kind (no escapes, at most 1 KiB, no "{{"). Anything else between
// "{{" and "}}", and an unterminated "{{", is not a tag and is copied to
// the output as it is, so stray braces in HTML or CSS survive.
//
// Values: strings as they are; numbers, booleans, objects and arrays as
// their JSON text (numbers keep the client's exact digits when decoded with
// json.Decoder.UseNumber); null is treated as missing. Values are
// HTML-escaped when rendering HTML; defaults are template text, written by
// the template's author like the HTML around them, and are not escaped.
//
// Templates are parsed once (Parse) and rendered many times (Render), so a
// batch parses its shared subject and bodies once, not once per recipient.
package personalize

import (
	"encoding/json"
	"html"
	"strings"
)

// maxDefault is the longest default value, in bytes.
const maxDefault = 1024

// Template is a parsed template: literal text and variable tags.
type Template struct {
	parts []part
	// size is the length of the literal text, to size the output buffer.
	size int
}

type part struct {
	lit    string   // literal text, when path is nil
	path   []string // the variable's path
	name   string   // the path as written, dots included
	def    string
	hasDef bool
}

// Parse parses src. It never fails: text that is not a well-formed tag is
// literal text.
func Parse(src string) *Template {
	t := &Template{}
	lit := 0 // start of pending literal text
	for i := 0; ; {
		j := strings.Index(src[i:], "{{")
		if j < 0 {
			break
		}
		start := i + j
		p, end, ok := parseTag(src, start+2)
		if !ok {
			// Not a tag: keep the braces as text and look again one byte on,
			// so "{{{x}}" still finds the tag "{{x}}".
			i = start + 1
			continue
		}
		if start > lit {
			t.addLit(src[lit:start])
		}
		t.parts = append(t.parts, p)
		lit, i = end, end
	}
	if lit < len(src) {
		t.addLit(src[lit:])
	}
	return t
}

func (t *Template) addLit(s string) {
	t.parts = append(t.parts, part{lit: s})
	t.size += len(s)
}

// parseTag reads a tag body starting at i (just past "{{") and returns the
// part and the offset just past its "}}".
func parseTag(src string, i int) (part, int, bool) {
	var p part
	i = skipSpace(src, i)
	start := i
	for {
		n := scanName(src, i)
		if n == i {
			return p, 0, false
		}
		p.path = append(p.path, src[i:n])
		i = n
		if i < len(src) && src[i] == '.' {
			i++
			continue
		}
		break
	}
	p.name = src[start:i]
	i = skipSpace(src, i)
	if i < len(src) && src[i] == '|' {
		i = skipSpace(src, i+1)
		if i >= len(src) || (src[i] != '\'' && src[i] != '"') {
			return p, 0, false
		}
		q := src[i]
		// The default ends before the next "{{" and within maxDefault
		// bytes: a bounded look-ahead keeps parsing linear in the length
		// of the template, whatever it holds.
		rest := src[i+1:]
		if n := strings.Index(rest, "{{"); n >= 0 {
			rest = rest[:n]
		}
		if len(rest) > maxDefault {
			rest = rest[:maxDefault]
		}
		k := strings.IndexByte(rest, q)
		if k < 0 {
			return p, 0, false
		}
		p.def, p.hasDef = src[i+1:i+1+k], true
		i = skipSpace(src, i+1+k+1)
	}
	if !strings.HasPrefix(src[i:], "}}") {
		return p, 0, false
	}
	return p, i + 2, true
}

func skipSpace(s string, i int) int {
	for i < len(s) && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r') {
		i++
	}
	return i
}

// scanName returns the end of the name starting at i (i itself if none).
func scanName(s string, i int) int {
	j := i
	for j < len(s) {
		c := s[j]
		switch {
		case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c == '_':
		case (c >= '0' && c <= '9' || c == '-') && j > i:
		default:
			return j
		}
		j++
	}
	return j
}

// Vars returns the variable names the template uses, in order, once each.
func (t *Template) Vars() []string {
	var out []string
	for _, p := range t.parts {
		if p.path != nil && !contains(out, p.name) {
			out = append(out, p.name)
		}
	}
	return out
}

// HasVars reports whether the template uses any variable.
func (t *Template) HasVars() bool {
	for _, p := range t.parts {
		if p.path != nil {
			return true
		}
	}
	return false
}

// Render renders the template with data, HTML-escaping values when
// escapeHTML is set. missing lists, once each and in order, the variables
// that had no value and no default; they render as the empty string.
func (t *Template) Render(data map[string]any, escapeHTML bool) (out string, missing []string) {
	if len(t.parts) == 1 && t.parts[0].path == nil {
		return t.parts[0].lit, nil
	}
	var b strings.Builder
	b.Grow(t.size + 16*len(t.parts))
	for _, p := range t.parts {
		if p.path == nil {
			b.WriteString(p.lit)
			continue
		}
		v, ok := lookup(data, p.path)
		if !ok {
			if p.hasDef {
				b.WriteString(p.def)
			} else if !contains(missing, p.name) {
				missing = append(missing, p.name)
			}
			continue
		}
		s := text(v)
		if escapeHTML {
			s = html.EscapeString(s)
		}
		b.WriteString(s)
	}
	return b.String(), missing
}

func lookup(data map[string]any, path []string) (any, bool) {
	var v any = data
	for _, name := range path {
		m, ok := v.(map[string]any)
		if !ok {
			return nil, false
		}
		if v, ok = m[name]; !ok {
			return nil, false
		}
	}
	return v, v != nil
}

// text is a value as it appears in the message.
func text(v any) string {
	switch x := v.(type) {
	case string:
		return x
	case json.Number:
		return x.String()
	case bool:
		if x {
			return "true"
		}
		return "false"
	}
	b, err := json.Marshal(v)
	if err != nil {
		return ""
	}
	return string(b)
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
