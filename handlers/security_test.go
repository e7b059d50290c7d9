package handlers_test

// Security tests: the OWASP API Security Top 10 classics tried against the
// running API. Every route is taken from openapi.yaml itself, so a new
// endpoint is covered the day it is added.

import (
	"net/http"
	"os"
	"strings"
	"testing"

	"github.com/go-faster/yaml"
	"github.com/google/uuid"
)

// specOperation is one method on one path of openapi.yaml.
type specOperation struct {
	method, path string
	apiKey       bool // secured by an app's API key
	admin        bool // secured by the admin secret
	public       bool // no security
}

func specOperations(t *testing.T) []specOperation {
	t.Helper()
	raw, err := os.ReadFile("../openapi.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var spec struct {
		Paths map[string]map[string]struct {
			Security []map[string][]string `yaml:"security"`
		} `yaml:"paths"`
	}
	if err := yaml.Unmarshal(raw, &spec); err != nil {
		t.Fatalf("parsing openapi.yaml: %v", err)
	}
	var ops []specOperation
	for path, methods := range spec.Paths {
		for method, op := range methods {
			switch method {
			case "get", "post", "put", "patch", "delete":
			default:
				continue
			}
			o := specOperation{method: strings.ToUpper(method), path: path}
			for _, req := range op.Security {
				if _, ok := req["apiKey"]; ok {
					o.apiKey = true
				}
				if _, ok := req["adminSecret"]; ok {
					o.admin = true
				}
			}
			o.public = !o.apiKey && !o.admin
			ops = append(ops, o)
		}
	}
	if len(ops) < 50 {
		t.Fatalf("found only %d operations in openapi.yaml", len(ops))
	}
	return ops
}

// tenantA is one app's resources, which another app must never reach.
type tenantA struct {
	key                                   string
	emailID, queueID, smtpConfigID, keyID string
	recipient                             string
	secrets                               []string // strings that must never appear in B's responses
}

func seedTenant(t *testing.T, b *bundle) tenantA {
	t.Helper()
	_, key := b.createApp(t, "Tenant A", false)
	a := tenantA{key: key, recipient: "victim-" + uuid.NewString()[:8] + "@example.com"}

	resp, body := b.do(t, "POST", "/v1/queues", key, map[string]any{"name": "a-private"}, nil)
	expectStatus(t, resp, body, http.StatusCreated)
	a.queueID = decode[struct{ ID string }](t, body).ID

	sent := b.send(t, key, emailReq(func(m map[string]any) {
		m["to"] = []map[string]any{{"email": a.recipient}}
		m["subject"] = "tenant A secret subject"
	}))
	a.emailID = sent.ID.String()

	resp, body = b.do(t, "POST", "/v1/smtp-configs", key, map[string]any{
		"name": "a-relay", "host": "smtp.a.example", "port": 587, "username": "a-user", "password": "a-password-s3cret",
	}, nil)
	if resp.StatusCode == http.StatusCreated {
		a.smtpConfigID = decode[struct{ ID string }](t, body).ID
	}
	resp, body = b.do(t, "POST", "/v1/api-keys", key, map[string]any{"name": "a-extra"}, nil)
	if resp.StatusCode == http.StatusCreated {
		a.keyID = decode[struct{ ID string }](t, body).ID
	}
	a.secrets = []string{a.emailID, a.queueID, a.recipient, "tenant A secret subject", "a-password-s3cret", a.key}
	for _, id := range []string{a.smtpConfigID, a.keyID} {
		if id != "" {
			a.secrets = append(a.secrets, id)
		}
	}
	return a
}

// fill puts tenant A's ids into a path template.
func (a tenantA) fill(path string) string {
	r := strings.NewReplacer(
		"{emailId}", a.emailID, "{queueId}", a.queueID,
		"{smtpConfigId}", orRandom(a.smtpConfigID), "{apiKeyId}", orRandom(a.keyID),
		"{email}", a.recipient,
		"{batchId}", uuid.Must(uuid.NewV7()).String(),
		"{scheduledJobId}", uuid.Must(uuid.NewV7()).String(),
		"{webhookDeliveryId}", uuid.Must(uuid.NewV7()).String(),
		"{appId}", uuid.Must(uuid.NewV7()).String(),
	)
	return r.Replace(path)
}

func orRandom(id string) string {
	if id == "" {
		return uuid.Must(uuid.NewV7()).String()
	}
	return id
}

// TestBOLAAcrossTenants calls every API-key operation of the spec as app B
// with app A's ids: nothing of A may come back, nothing of A may change.
func TestBOLAAcrossTenants(t *testing.T) {
	t.Parallel()
	b := setup(t)
	a := seedTenant(t, b)
	_, keyB := b.createApp(t, "Tenant B", false)
	queueBefore := b.count(t, `SELECT count(*) FROM queues WHERE id = $1 AND deleted_at IS NULL AND NOT is_paused AND NOT is_draining`, a.queueID)

	for _, op := range specOperations(t) {
		if !op.apiKey {
			continue
		}
		path := a.fill(op.path)
		var body any
		if op.method == "POST" || op.method == "PATCH" || op.method == "PUT" {
			body = map[string]any{}
		}
		resp, out := b.do(t, op.method, path, keyB, body, nil)
		hasID := strings.Contains(op.path, "{")
		if hasID && resp.StatusCode < 300 {
			t.Errorf("%s %s with another tenant's id answered %d: %s", op.method, op.path, resp.StatusCode, out)
		}
		for _, s := range a.secrets {
			if strings.Contains(string(out), s) {
				t.Errorf("%s %s leaked tenant A's %q: %s", op.method, op.path, s, out)
			}
		}
	}

	// Nothing of A changed.
	if n := b.count(t, `SELECT count(*) FROM queues WHERE id = $1 AND deleted_at IS NULL AND NOT is_paused AND NOT is_draining`, a.queueID); n != queueBefore {
		t.Error("tenant A's queue was changed by tenant B")
	}
	if n := b.count(t, `SELECT count(*) FROM emails WHERE id = $1 AND status IN ('queued', 'processing', 'sent')`, a.emailID); n != 1 {
		t.Error("tenant A's email was changed by tenant B")
	}
	if a.keyID != "" {
		if n := b.count(t, `SELECT count(*) FROM api_keys WHERE id = $1 AND is_active AND grace_expires_at IS NULL`, a.keyID); n != 1 {
			t.Error("tenant A's API key was changed by tenant B")
		}
	}
	if a.smtpConfigID != "" {
		if n := b.count(t, `SELECT count(*) FROM smtp_configs WHERE id = $1`, a.smtpConfigID); n != 1 {
			t.Error("tenant A's SMTP config was changed by tenant B")
		}
	}
	// A's own key still works.
	resp, out := b.do(t, "GET", "/v1/emails/"+a.emailID, a.key, nil, nil)
	expectStatus(t, resp, out, http.StatusOK)
}

// TestEveryOperationNeedsCredentials calls every secured operation without
// credentials and with a key of the wrong kind.
func TestEveryOperationNeedsCredentials(t *testing.T) {
	t.Parallel()
	b := setup(t)
	a := seedTenant(t, b)
	for _, op := range specOperations(t) {
		if op.public {
			continue
		}
		path := a.fill(op.path)
		resp, out := b.do(t, op.method, path, "", nil, nil)
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("%s %s without credentials answered %d: %s", op.method, op.path, resp.StatusCode, out)
		}
		wrong := a.key // an API key where the admin secret is needed
		if op.apiKey {
			wrong = adminSecret // the admin secret where an API key is needed
		}
		resp, out = b.do(t, op.method, path, wrong, nil, nil)
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("%s %s with the wrong kind of credential answered %d: %s", op.method, op.path, resp.StatusCode, out)
		}
	}
}

// TestMassAssignment sends fields a client must not control.
func TestMassAssignment(t *testing.T) {
	t.Parallel()
	b := setup(t)
	appA, _ := b.createApp(t, "A", false)
	appB, keyB := b.createApp(t, "B", false)
	forgedID := uuid.Must(uuid.NewV7()).String()

	resp, body := b.do(t, "POST", "/v1/queues", keyB, map[string]any{
		"name": "mass", "app_id": appA.String(), "id": forgedID, "is_paused": true, "is_draining": true,
		"deleted_at": "2020-01-01T00:00:00Z", "created_at": "2020-01-01T00:00:00Z",
	}, nil)
	expectStatus(t, resp, body, http.StatusCreated)
	q := decode[struct {
		ID       string `json:"id"`
		IsPaused bool   `json:"is_paused"`
	}](t, body)
	if q.ID == forgedID || q.IsPaused {
		t.Errorf("queue took client-set fields: %s", body)
	}
	if n := b.count(t, `SELECT count(*) FROM queues WHERE id = $1 AND app_id = $2 AND NOT is_paused AND NOT is_draining AND deleted_at IS NULL`, q.ID, appB); n != 1 {
		t.Error("queue is not B's, or took paused/draining/deleted from the body")
	}

	sent := b.send(t, keyB, emailReq(func(m map[string]any) {
		m["status"], m["app_id"], m["id"], m["retry_count"], m["sandbox"] = "sent", appA.String(), forgedID, 9, true
		m["message_id"], m["sent_at"] = "forged@example.com", "2020-01-01T00:00:00Z"
	}))
	if sent.ID.String() == forgedID {
		t.Error("email took a client-set id")
	}
	if n := b.count(t, `SELECT count(*) FROM emails WHERE id = $1 AND app_id = $2 AND status = 'queued' AND retry_count = 0 AND NOT sandbox AND sent_at IS NULL AND message_id <> 'forged@example.com'`, sent.ID, appB); n != 1 {
		t.Error("email took client-set status, app, retry_count, sandbox, message_id or sent_at")
	}

	resp, body = b.do(t, "PATCH", "/v1/queues/"+q.ID, keyB, map[string]any{"app_id": appA.String(), "id": forgedID, "priority": 6}, nil)
	if resp.StatusCode == http.StatusOK {
		if n := b.count(t, `SELECT count(*) FROM queues WHERE id = $1 AND app_id = $2`, q.ID, appB); n != 1 {
			t.Error("PATCH moved the queue to another app")
		}
	} else if resp.StatusCode >= 500 {
		t.Errorf("PATCH answered %d: %s", resp.StatusCode, body)
	}
}

// TestMalformedAndHostileBodies sends bodies no client should: each is
// refused with a 4xx and stores nothing.
func TestMalformedAndHostileBodies(t *testing.T) {
	t.Parallel()
	b := setup(t)
	_, key := b.createApp(t, "hostile", false)
	valid := `{"from":{"email":"a@example.com"},"to":[{"email":"b@example.com"}],"subject":"s","text":"t"}`
	deep := strings.Repeat(`{"a":`, 100_000) + `1` + strings.Repeat(`}`, 100_000)
	cases := map[string]string{
		"truncated":              `{"from":`,
		"array":                  `[]`,
		"string":                 `"hello"`,
		"null":                   `null`,
		"to not an array":        `{"from":{"email":"a@example.com"},"to":"b@example.com","subject":"s","text":"t"}`,
		"number overflow":        `{"from":{"email":"a@example.com"},"to":[{"email":"b@example.com"}],"subject":"s","text":"t","priority":1e999999}`,
		"invalid utf-8":          "{\"from\":{\"email\":\"a@example.com\"},\"to\":[{\"email\":\"b@example.com\"}],\"subject\":\"\xff\xfe\",\"text\":\"t\"}",
		"NUL in subject":         `{"from":{"email":"a@example.com"},"to":[{"email":"b@example.com"}],"subject":"a\u0000b","text":"t"}`,
		"NUL in text":            `{"from":{"email":"a@example.com"},"to":[{"email":"b@example.com"}],"subject":"s","text":"t\u0000"}`,
		"NUL in metadata":        `{"from":{"email":"a@example.com"},"to":[{"email":"b@example.com"}],"subject":"s","text":"t","metadata":{"k":"v\u0000"}}`,
		"NUL in metadata key":    `{"from":{"email":"a@example.com"},"to":[{"email":"b@example.com"}],"subject":"s","text":"t","metadata":{"k\u0000":"v"}}`,
		"NUL in header value":    `{"from":{"email":"a@example.com"},"to":[{"email":"b@example.com"}],"subject":"s","text":"t","headers":{"X-A":"v\u0000"}}`,
		"NUL in name":            `{"from":{"email":"a@example.com","name":"x\u0000"},"to":[{"email":"b@example.com"}],"subject":"s","text":"t"}`,
		"deeply nested metadata": strings.Replace(valid, `"text":"t"`, `"text":"t","metadata":`+deep, 1),
		"trailing garbage":       valid + `garbage`,
	}
	emailsBefore := b.count(t, `SELECT count(*) FROM emails`)
	for name, body := range cases {
		resp, out := b.do(t, "POST", "/v1/emails", key, body, nil)
		if resp.StatusCode < 400 || resp.StatusCode >= 500 {
			t.Errorf("%s: answered %d, want a 4xx: %s", name, resp.StatusCode, out)
		}
	}
	resp, out := b.do(t, "POST", "/v1/emails", key, valid, map[string]string{"Content-Type": "text/plain"})
	if resp.StatusCode < 400 || resp.StatusCode >= 500 {
		t.Errorf("text/plain body answered %d: %s", resp.StatusCode, out)
	}
	if n := b.count(t, `SELECT count(*) FROM emails`); n != emailsBefore {
		t.Errorf("refused bodies stored %d emails", n-emailsBefore)
	}
	big := strings.Replace(valid, `"text":"t"`, `"text":"`+strings.Repeat("x", 2<<20)+`"`, 1)
	resp, out = b.do(t, "POST", "/v1/emails", key, big, nil)
	expectError(t, resp, out, http.StatusRequestEntityTooLarge, "payload_too_large", "")
}

// TestSQLMetacharactersEverywhere puts SQL and shell metacharacters in every
// string the implemented operations take: they are stored verbatim or
// refused, never executed, never a 5xx.
func TestSQLMetacharactersEverywhere(t *testing.T) {
	t.Parallel()
	b := setup(t)
	appID, key := b.createApp(t, "meta", false)
	payloads := []string{
		`'; DROP TABLE emails; --`, `" OR "1"="1`, `1' OR '1'='1' --`, `\'; SELECT pg_sleep(5); --`,
		`$1`, `@app_id`, `%s%s%s`, `{{.}}`, `../../../etc/passwd`, `<script>alert(1)</script>`, "`rm -rf /`",
	}
	for _, p := range payloads {
		b.do(t, "POST", "/v1/apps", adminSecret, map[string]any{"name": p, "description": p}, nil)
		b.do(t, "POST", "/v1/queues", key, map[string]any{"name": p}, nil)
		b.do(t, "POST", "/v1/emails", key, map[string]any{
			"queue": p, "from": map[string]any{"email": "a@example.com", "name": p},
			"to": []map[string]any{{"email": "b@example.com", "name": p}}, "subject": p, "html": p, "text": p,
			"headers": map[string]any{"X-P": p}, "metadata": map[string]any{p: p}, "personalizations": map[string]any{p: p},
		}, nil)
		resp, _ := b.do(t, "POST", "/v1/emails", key, map[string]any{
			"from": map[string]any{"email": "a@example.com", "name": p}, "to": []map[string]any{{"email": "b@example.com", "name": p}},
			"subject": p, "text": p, "metadata": map[string]any{p: p},
		}, nil)
		if resp.StatusCode != http.StatusAccepted {
			t.Errorf("email with %q in its text fields answered %d, want 202", p, resp.StatusCode)
		}
		b.do(t, "POST", "/v1/api-keys", key, map[string]any{"name": p, "ip_allowlist": []string{p}}, nil)
		b.do(t, "POST", "/v1/smtp-configs", key, map[string]any{"name": p, "host": p, "port": 25, "username": p, "password": p}, nil)
		for _, q := range []string{"status", "queue", "cursor", "since", "batch_id"} {
			b.do(t, "GET", "/v1/emails?"+q+"="+urlEscape(p), key, nil, nil)
		}
		for _, prefix := range []string{"/v1/emails/", "/v1/queues/", "/v1/smtp-configs/", "/v1/api-keys/"} {
			b.do(t, "GET", prefix+urlEscape(p), key, nil, nil)
		}
	}
	// Verbatim storage: the payload came back as data, not as SQL.
	if n := b.count(t, `SELECT count(*) FROM emails WHERE app_id = $1 AND subject = $2`, appID, payloads[0]); n != 1 {
		t.Errorf("subject %q stored %d times, want 1", payloads[0], n)
	}
	if n := b.count(t, `SELECT count(*) FROM apps`); n < 2 {
		t.Error("apps table lost rows")
	}
}

// TestPathTraversalInIDs tries ids that are paths.
func TestPathTraversalInIDs(t *testing.T) {
	t.Parallel()
	b := setup(t)
	_, key := b.createApp(t, "paths", false)
	for _, id := range []string{
		"..", "..%2f..%2fapps", "%2e%2e%2f%2e%2e%2f", "..%5c..%5c", "%00", "0x41", "1;2", "*",
		strings.Repeat("a", 5000), "00000000-0000-0000-0000-000000000000%00",
	} {
		for _, prefix := range []string{"/v1/emails/", "/v1/queues/", "/v1/smtp-configs/", "/v1/api-keys/"} {
			resp, out := b.do(t, "GET", prefix+id, key, nil, nil)
			if resp.StatusCode != http.StatusBadRequest && resp.StatusCode != http.StatusNotFound {
				t.Errorf("GET %s%s answered %d, want 400 or 404: %.200s", prefix, id, resp.StatusCode, out)
			}
		}
	}
}

func urlEscape(s string) string {
	r := strings.NewReplacer("%", "%25", " ", "%20", "#", "%23", "&", "%26", "?", "%3F", "+", "%2B", "/", "%2F", "`", "%60", "\\", "%5C", "\"", "%22", "<", "%3C", ">", "%3E", "{", "%7B", "}", "%7D", "'", "%27", ";", "%3B", "$", "%24", "@", "%40", "=", "%3D")
	return r.Replace(s)
}

// TestUndecodableBytesInURLAndHeaders sends bytes PostgreSQL cannot store
// through the query string and the Idempotency-Key header: 4xx, never 5xx.
func TestUndecodableBytesInURLAndHeaders(t *testing.T) {
	t.Parallel()
	b := setup(t)
	_, key := b.createApp(t, "bytes", false)
	for _, q := range []string{"queue=%FF", "queue=%00", "queue=a%C3", "status=%FF", "%FF=1"} {
		resp, out := b.do(t, "GET", "/v1/emails?"+q, key, nil, nil)
		if resp.StatusCode < 400 || resp.StatusCode >= 500 {
			t.Errorf("GET /v1/emails?%s answered %d: %s", q, resp.StatusCode, out)
		}
	}
	resp, out := b.do(t, "POST", "/v1/emails", key, emailReq(nil), map[string]string{"Idempotency-Key": "k\xff\xfe"})
	expectError(t, resp, out, http.StatusUnprocessableEntity, "validation_failed", "Idempotency-Key")
}
