package handlers_test

import (
	"net/http"
	"strings"
	"testing"

	"github.com/google/uuid"
)

type previewJSON struct {
	Subject string            `json:"subject"`
	From    addressJSON       `json:"from"`
	To      []addressJSON     `json:"to"`
	HTML    *string           `json:"html"`
	Text    *string           `json:"text"`
	Headers map[string]string `json:"headers"`
}

func TestGetEmailPreview(t *testing.T) {
	t.Parallel()
	b := setup(t)
	_, key := b.createApp(t, "app", false)
	_, otherKey := b.createApp(t, "other", false)

	hostile := `<html><head><style>body{background:url(https://track.example/css.png)}</style>
<script>alert(1)</script></head><body onload="alert(2)">
<p onclick="alert(3)" style="color: red; background-image: url('https://track.example/bg.png')">Hi {{first_name}}</p>
<a href="javascript:alert(4)">bad link</a> <a href="https://shop.example/offer">good link</a>
<img src="https://track.example/open.gif" alt="pixel" width="1" height="1">
<img srcset="https://track.example/a.png 1x, https://track.example/b.png 2x" alt="set">
<img src="cid:logo@example.com" alt="logo">
<table background="https://track.example/table.png" width="600"><tr><td bgcolor="#ffffff" style="padding: 4px">cell</td></tr></table>
<iframe src="https://track.example/frame"></iframe><object data="https://track.example/o"></object>
<svg><image href="https://track.example/svg.png"/></svg><video poster="https://track.example/p.png"></video>
<link rel="stylesheet" href="https://track.example/s.css"><form action="https://track.example/f"><input></form>
</body></html>`
	a := b.send(t, key, emailReq(func(m map[string]any) {
		m["subject"] = "Hello {{first_name}}"
		m["html"] = hostile
		m["text"] = "Hi {{first_name}} <b>"
		m["personalizations"] = map[string]any{"first_name": "<Ada>"}
		m["to"] = []any{map[string]any{"email": "first@example.com", "name": "First"}, map[string]any{"email": "second@example.com"}}
		m["cc"] = []any{map[string]any{"email": "cc@example.com"}}
		m["bcc"] = []any{map[string]any{"email": "hidden@example.com"}}
		m["reply_to"] = map[string]any{"email": "reply@example.com"}
		m["headers"] = map[string]any{"X-Campaign": "spring"}
	}))

	resp, body := b.do(t, http.MethodGet, "/v1/emails/"+a.ID.String()+"/preview", key, nil, nil)
	expectStatus(t, resp, body, http.StatusOK)
	p := decode[previewJSON](t, body)
	if p.Subject != "Hello <Ada>" || p.From != (addressJSON{"sender@example.com", "Sender"}) || len(p.To) != 2 ||
		p.To[0] != (addressJSON{"first@example.com", "First"}) || deref(p.Text) != "Hi <Ada> <b>" {
		t.Errorf("preview = %+v", p)
	}
	html := deref(p.HTML)
	for _, bad := range []string{"<script", "alert", "onload", "onclick", "javascript:", "track.example", "<style",
		"url(", "<iframe", "<object", "srcset", "<link", "<form", "background="} {
		if strings.Contains(strings.ToLower(html), bad) {
			t.Errorf("sanitised HTML still holds %q:\n%s", bad, html)
		}
	}
	for _, good := range []string{"Hi &lt;Ada&gt;", `href="https://shop.example/offer"`, "good link", "bad link",
		`src="cid:logo@example.com"`, `alt="pixel"`, "color: red", "cell", `bgcolor="#ffffff"`, "padding: 4px"} {
		if !strings.Contains(html, good) {
			t.Errorf("sanitised HTML lost %q:\n%s", good, html)
		}
	}
	wantHeaders := map[string]string{
		"Message-ID": "<" + a.MessageID + ">", "From": `"Sender" <sender@example.com>`,
		"To": `"First" <first@example.com>, <second@example.com>`, "Cc": "<cc@example.com>",
		"Reply-To": "<reply@example.com>", "Subject": "Hello <Ada>", "X-Campaign": "spring",
	}
	for k, v := range wantHeaders {
		if p.Headers[k] != v {
			t.Errorf("header %s = %q, want %q", k, p.Headers[k], v)
		}
	}
	if len(p.Headers) != len(wantHeaders) {
		t.Errorf("headers = %v", p.Headers)
	}
	if strings.Contains(string(body), "hidden@example.com") {
		t.Error("the preview shows a Bcc recipient")
	}

	resp, body = b.do(t, http.MethodGet, "/v1/emails/"+a.ID.String()+"/preview", otherKey, nil, nil)
	expectError(t, resp, body, http.StatusNotFound, "not_found", "")
	resp, body = b.do(t, http.MethodGet, "/v1/emails/"+uuid.NewString()+"/preview", key, nil, nil)
	expectError(t, resp, body, http.StatusNotFound, "not_found", "")
}
