package handlers

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"unicode/utf8"

	"github.com/go-faster/jx"

	"github.com/mailqueue/mailqueue/personalize"
	"github.com/mailqueue/mailqueue/store"
)

// maxSubjectChars is the longest subject the emails table holds.
const maxSubjectChars = 998

// templates are an email's subject and bodies, parsed once and rendered for
// each set of personalization values.
type templates struct {
	subject, html, text *personalize.Template
}

func parseTemplates(subject string, html, text *string) *templates {
	t := &templates{subject: personalize.Parse(subject)}
	if html != nil {
		t.html = personalize.Parse(*html)
	}
	if text != nil {
		t.text = personalize.Parse(*text)
	}
	return t
}

// hasVars reports whether any part uses a variable, so that rendering
// needs the personalization values at all.
func (t *templates) hasVars() bool {
	return t.subject.HasVars() || t.html != nil && t.html.HasVars() || t.text != nil && t.text.HasVars()
}

// missingVar is a variable a template part used with no value and no default.
type missingVar struct {
	part, name string
}

// rendered is one rendering of templates.
type rendered struct {
	subject    string
	html, text *string
	missing    []missingVar
}

// render renders the subject and text without escaping and the HTML with
// values escaped. Line breaks in values become spaces in the subject, which
// is a header and must stay on one line.
func (t *templates) render(vars map[string]any) (*rendered, error) {
	out := &rendered{}
	var missing []string
	out.subject, missing = t.subject.Render(vars, false)
	out.addMissing("subject", missing)
	if strings.ContainsAny(out.subject, "\r\n") {
		out.subject = strings.NewReplacer("\r\n", " ", "\r", " ", "\n", " ").Replace(out.subject)
	}
	if utf8.RuneCountInString(out.subject) > maxSubjectChars {
		return nil, invalid("subject", "the personalized subject is longer than %d characters", maxSubjectChars)
	}
	if t.html != nil {
		s, missing := t.html.Render(vars, true)
		out.html = &s
		out.addMissing("html", missing)
	}
	if t.text != nil {
		s, missing := t.text.Render(vars, false)
		out.text = &s
		out.addMissing("text", missing)
	}
	return out, nil
}

func (r *rendered) addMissing(part string, names []string) {
	for _, n := range names {
		r.missing = append(r.missing, missingVar{part: part, name: n})
	}
}

// strictError is the 422 of a strict queue for the first missing variable,
// naming the template part; prefix is prepended to the field in a batch.
func (r *rendered) strictError(prefix string) *apiError {
	m := r.missing[0]
	field := m.part
	if prefix != "" {
		field = prefix + ".personalizations." + m.name
	}
	return invalid(field, "personalization variable %q used in %s is missing and has no default, and the queue has strict_personalization set", m.name, m.part)
}

func (r *rendered) warnings() []string {
	out := make([]string, 0, len(r.missing))
	for _, m := range r.missing {
		out = append(out, fmt.Sprintf("%s: personalization variable %q is missing and was rendered empty", m.part, m.name))
	}
	return out
}

// personalizeEmail renders p's subject and bodies with its personalizations
// in place, so the stored email is the message as it will be sent. Missing
// variables are warnings, or a 422 on a strict queue.
func personalizeEmail(p *store.EmailInsertParams, strict bool) ([]string, error) {
	vars, err := decodeVars(p.Personalizations)
	if err != nil {
		return nil, invalid("personalizations", "personalizations is not a JSON object")
	}
	r, err := parseTemplates(p.Subject, p.HTML, p.Text).render(vars)
	if err != nil {
		return nil, err
	}
	if len(r.missing) > 0 && strict {
		return nil, r.strictError("")
	}
	p.Subject, p.HTML, p.Text = r.subject, r.html, r.text
	if len(r.missing) == 0 {
		return nil, nil
	}
	return r.warnings(), nil
}

// decodeVars decodes personalization values, keeping numbers' exact text.
func decodeVars(raw json.RawMessage) (map[string]any, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		return nil, err
	}
	return m, nil
}

// decodeRawVars decodes a request's free-form object value by value.
func decodeRawVars(in map[string]jx.Raw) (map[string]any, error) {
	out := make(map[string]any, len(in))
	for k, v := range in {
		if len(v) == 0 {
			out[k] = nil
			continue
		}
		dec := json.NewDecoder(bytes.NewReader(v))
		dec.UseNumber()
		var x any
		if err := dec.Decode(&x); err != nil {
			return nil, err
		}
		out[k] = x
	}
	return out, nil
}
