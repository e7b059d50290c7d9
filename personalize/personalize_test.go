package personalize_test

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/mailqueue/mailqueue/personalize"
)

func data(t testing.TB, s string) map[string]any {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(s))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		t.Fatalf("decoding %s: %v", s, err)
	}
	return m
}

func TestRender(t *testing.T) {
	t.Parallel()
	vars := `{
		"first_name": "Ada", "name": "<b>Bob</b> & co", "n": 12345678901234567890, "f": 1.50,
		"yes": true, "nothing": null, "empty": "",
		"user": {"address": {"city": "Zürich", "zip": "8001"}, "tags": ["a", "b"]}
	}`
	for _, tc := range []struct {
		name, src   string
		escape      bool
		want        string
		wantMissing []string
	}{
		{"plain", "Hello", false, "Hello", nil},
		{"variable", "Hi {{first_name}}!", false, "Hi Ada!", nil},
		{"whitespace", "Hi {{ first_name }}!", false, "Hi Ada!", nil},
		{"nested", "{{user.address.city}} {{ user.address.zip }}", false, "Zürich 8001", nil},
		{"html escaped", "<p>{{name}}</p>", true, "<p>&lt;b&gt;Bob&lt;/b&gt; &amp; co</p>", nil},
		{"text not escaped", "{{name}}", false, "<b>Bob</b> & co", nil},
		{"default single", "Dear {{missing|'Customer'}}", false, "Dear Customer", nil},
		{"default double", `Dear {{ missing | "Customer" }}`, false, "Dear Customer", nil},
		{"default unused", "{{first_name|'Customer'}}", false, "Ada", nil},
		{"default not escaped", "{{missing|'<i>you</i>'}}", true, "<i>you</i>", nil},
		{"default for null", "{{nothing|'x'}}", false, "x", nil},
		{"empty string is a value", "[{{empty|'x'}}]", false, "[]", nil},
		{"missing", "Hi {{first}} {{user.address.street}} {{first}}", false, "Hi   ", []string{"first", "user.address.street"}},
		{"null is missing", "[{{nothing}}]", false, "[]", []string{"nothing"}},
		{"path through a string", "[{{first_name.x}}]", false, "[]", []string{"first_name.x"}},
		{"number exact", "{{n}} {{f}}", false, "12345678901234567890 1.50", nil},
		{"bool", "{{yes}}", false, "true", nil},
		{"object as JSON", "{{user.tags}}", true, "[&#34;a&#34;,&#34;b&#34;]", nil},
		{"unterminated", "Hi {{first_name", false, "Hi {{first_name", nil},
		{"not a tag", "a {{ 1x }} {{}} {{a b}} {{a|x}} {{a|'x}} c", false, "a {{ 1x }} {{}} {{a b}} {{a|x}} {{a|'x}} c", nil},
		{"css braces", "p{{color:red}}", false, "p{{color:red}}", nil},
		{"triple brace", "{{{first_name}}}", false, "{Ada}", nil},
		{"default with braces", "{{missing|'a}}b'}}", false, "a}}b", nil},
		{"adjacent", "{{first_name}}{{first_name}}", false, "AdaAda", nil},
		{"hyphen and digits", "{{missing-2_x|'d'}}", false, "d", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got, missing := personalize.Parse(tc.src).Render(data(t, vars), tc.escape)
			if got != tc.want {
				t.Errorf("Render(%q) = %q, want %q", tc.src, got, tc.want)
			}
			if !reflect.DeepEqual(missing, tc.wantMissing) {
				t.Errorf("missing = %q, want %q", missing, tc.wantMissing)
			}
		})
	}
}

func TestRenderNilData(t *testing.T) {
	t.Parallel()
	got, missing := personalize.Parse("Hi {{a}}{{b|'B'}}").Render(nil, true)
	if got != "Hi B" || !reflect.DeepEqual(missing, []string{"a"}) {
		t.Errorf("got %q, %q", got, missing)
	}
}

func TestVars(t *testing.T) {
	t.Parallel()
	tpl := personalize.Parse("{{a}} {{ b.c |'x'}} {{a}} {{ not a tag }}")
	if got := tpl.Vars(); !reflect.DeepEqual(got, []string{"a", "b.c"}) {
		t.Errorf("Vars = %q", got)
	}
	if !tpl.HasVars() || personalize.Parse("{{ }}").HasVars() {
		t.Error("HasVars wrong")
	}
}

// TestParseLinear guards against quadratic parsing of hostile templates.
func TestParseLinear(t *testing.T) {
	t.Parallel()
	src := strings.Repeat("{{a|'", 200000) + strings.Repeat("x", 1000)
	out, _ := personalize.Parse(src).Render(nil, false)
	if out != src {
		t.Error("hostile template not kept literally")
	}
}

var fuzzSeeds = []string{
	"", "Hello", "{{a}}", "{{ a.b.c }}", "{{a|'x'}}", `{{a|"x"}}`, "{{", "}}", "{{a", "{{a|", "{{a|'",
	"{{{a}}}", "{{a}}{{b}}", "{{a|'}}'}}", "{{.}}", "{{a.}}", "{{a..b}}", "{{-a}}", "{{1}}", "{{\u00e9}}",
	"<p>{{name}}</p>", "{{a|'x'  }}", "{{ a | 'x' }}", "\x00{{a}}\xff",
}

func FuzzParse(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, src string) {
		tpl := personalize.Parse(src)
		// Without data, every tag renders its default or nothing; a
		// template without tags renders as itself.
		out, missing := tpl.Render(nil, false)
		if !tpl.HasVars() && out != src {
			t.Fatalf("tagless template %q rendered as %q", src, out)
		}
		if len(out) > len(src) {
			t.Fatalf("render without data grew %q to %q", src, out)
		}
		for _, m := range missing {
			if m == "" {
				t.Fatalf("empty missing name for %q", src)
			}
		}
		if utf8.ValidString(src) && !utf8.ValidString(out) {
			t.Fatalf("valid UTF-8 %q rendered invalid %q", src, out)
		}
	})
}

func FuzzRender(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add(s, `{"a": "<x>", "b": {"c": 1}, "name": "N"}`)
	}
	f.Add("{{a}}", `{"a": [1, {"b": null}]}`)
	f.Fuzz(func(t *testing.T, src, vars string) {
		dec := json.NewDecoder(bytes.NewReader([]byte(vars)))
		dec.UseNumber()
		var m map[string]any
		if dec.Decode(&m) != nil {
			m = nil
		}
		tpl := personalize.Parse(src)
		plain, _ := tpl.Render(m, false)
		escaped, _ := tpl.Render(m, true)
		// Escaping only ever lengthens values, and only values.
		if len(escaped) < len(plain) {
			t.Fatalf("escaped %q shorter than plain %q", escaped, plain)
		}
		if !tpl.HasVars() && (plain != src || escaped != src) {
			t.Fatalf("tagless template %q changed", src)
		}
	})
}
