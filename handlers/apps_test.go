package handlers_test

import (
	"bytes"
	"crypto/sha256"
	"net/http"
	"slices"
	"strings"
	"testing"

	"github.com/mailqueue/mailqueue/oas"
)

var allScopes = []string{
	"email:send", "email:read", "queue:manage", "smtp:manage",
	"analytics:read", "suppression:manage", "admin",
}

func TestCreateApp(t *testing.T) {
	t.Parallel()
	b := setup(t)

	for _, sandbox := range []bool{false, true} {
		resp, body := b.do(t, http.MethodPost, "/v1/apps", adminSecret,
			map[string]any{"name": "  Shop  ", "sandbox_mode": sandbox, "description": "d"}, nil)
		expectStatus(t, resp, body, http.StatusCreated)
		c := decode[appCreated](t, body)
		wantPrefix := "mq_live_"
		if sandbox {
			wantPrefix = "mq_test_"
		}
		k := c.APIKey
		if !strings.HasPrefix(k.Key, wantPrefix) || k.Prefix != wantPrefix {
			t.Errorf("sandbox=%v: key %q prefix %q, want prefix %s", sandbox, k.Key, k.Prefix, wantPrefix)
		}
		if len(k.Key) < len(wantPrefix)+40 {
			t.Errorf("key %q is too short to hold 32 random bytes", k.Key)
		}
		if k.Last4 != k.Key[len(k.Key)-4:] {
			t.Errorf("last4 = %q, key ends %q", k.Last4, k.Key[len(k.Key)-4:])
		}
		got := slices.Clone(k.Scopes)
		slices.Sort(got)
		want := slices.Clone(allScopes)
		slices.Sort(want)
		if !slices.Equal(got, want) {
			t.Errorf("scopes = %v, want %v", k.Scopes, allScopes)
		}
		if c.App.Name != "Shop" || !c.App.IsActive || c.App.SandboxMode != sandbox {
			t.Errorf("app = %+v", c.App)
		}

		// Only the digest is stored.
		var hash []byte
		if err := b.pool.QueryRow(t.Context(), "SELECT key_hash FROM api_keys WHERE id = $1", k.ID).Scan(&hash); err != nil {
			t.Fatal(err)
		}
		sum := sha256.Sum256([]byte(k.Key))
		if !bytes.Equal(hash, sum[:]) {
			t.Errorf("key_hash is not sha256(key)")
		}
		assertNotInDatabase(t, b, k.Key)

		// The app got its default queue, and the key works.
		if n := b.count(t, "SELECT count(*) FROM queues WHERE app_id = $1 AND name = 'default' AND priority = 5", c.App.ID); n != 1 {
			t.Errorf("default queues = %d", n)
		}
		resp, body = b.do(t, http.MethodGet, "/v1/queues/"+c.App.ID.String(), k.Key, nil, nil)
		expectError(t, resp, body, http.StatusNotFound, "not_found", "")
	}
}

// assertNotInDatabase fails if any text column of any table holds s.
func assertNotInDatabase(t *testing.T, b *bundle, s string) {
	t.Helper()
	rows, err := b.pool.Query(t.Context(), `
		SELECT table_schema, table_name FROM information_schema.tables
		WHERE table_schema NOT IN ('pg_catalog', 'information_schema') AND table_type = 'BASE TABLE'`)
	if err != nil {
		t.Fatal(err)
	}
	var tables [][2]string
	for rows.Next() {
		var schema, name string
		if err := rows.Scan(&schema, &name); err != nil {
			t.Fatal(err)
		}
		tables = append(tables, [2]string{schema, name})
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	for _, tb := range tables {
		q := `SELECT count(*) FROM "` + tb[0] + `"."` + tb[1] + `" x WHERE strpos(x::text, $1) > 0`
		if n := b.count(t, q, s); n > 0 {
			t.Errorf("the plaintext API key is stored in %s.%s (%d rows)", tb[0], tb[1], n)
		}
	}
}

func TestCreateAppRefused(t *testing.T) {
	t.Parallel()
	b := setup(t)
	_, key := b.createApp(t, "first", false)
	before := b.count(t, "SELECT count(*) FROM apps")

	for _, tc := range []struct {
		name, token string
		body        any
		status      int
		code, field string
	}{
		{"no auth", "", map[string]any{"name": "x"}, 401, "unauthorized", ""},
		{"wrong admin secret", "test-admin-secret-0123456788", map[string]any{"name": "x"}, 401, "unauthorized", ""},
		{"api key instead of admin secret", key, map[string]any{"name": "x"}, 401, "unauthorized", ""},
		{"blank name", adminSecret, map[string]any{"name": "   "}, 422, "validation_failed", "name"},
		{"empty name", adminSecret, map[string]any{"name": ""}, 400, "", "name"},
		{"control char in name", adminSecret, map[string]any{"name": "a\x07b"}, 422, "validation_failed", "name"},
		{"missing body", adminSecret, nil, 400, "invalid_request", ""},
		{"malformed JSON", adminSecret, `{"name": `, 400, "invalid_request", ""},
		{"not an object", adminSecret, `[]`, 400, "invalid_request", ""},
		{"daily_limit 0", adminSecret, map[string]any{"name": "x", "daily_limit": 0}, 400, "", "daily_limit"},
		{"ftp webhook", adminSecret, map[string]any{"name": "x", "webhook_url": "ftp://example.com/"}, 422, "validation_failed", "webhook_url"},
	} {
		resp, body := b.do(t, http.MethodPost, "/v1/apps", tc.token, tc.body, nil)
		t.Run(tc.name, func(t *testing.T) {
			expectError(t, resp, body, tc.status, tc.code, tc.field)
		})
	}

	// An unknown field is ignored or refused, but never a server error.
	resp, body := b.do(t, http.MethodPost, "/v1/apps", adminSecret, map[string]any{"name": "y", "bogus": 1}, nil)
	if resp.StatusCode != http.StatusCreated && (resp.StatusCode < 400 || resp.StatusCode >= 500) {
		t.Errorf("unknown field: status %d: %s", resp.StatusCode, body)
	}
	if resp.StatusCode == http.StatusCreated {
		before++
	}
	if n := b.count(t, "SELECT count(*) FROM apps"); n != before {
		t.Errorf("apps = %d after refused requests, want %d", n, before)
	}
}

func TestCreateAppGeneratedClient(t *testing.T) {
	t.Parallel()
	b := setup(t)
	c := b.oasClient(t, "")
	out, err := c.CreateApp(t.Context(), &oas.AppCreate{Name: "typed", SandboxMode: oas.NewOptBool(true)}, oas.CreateAppParams{})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(out.APIKey.Key, "mq_test_") || !out.App.SandboxMode {
		t.Errorf("got %+v", out)
	}
	bad, err := oas.NewClient(b.srv.URL, secSource{admin: "nope"}, oas.WithClient(b.client))
	if err != nil {
		t.Fatal(err)
	}
	_, err = bad.CreateApp(t.Context(), &oas.AppCreate{Name: "typed"}, oas.CreateAppParams{})
	if status, detail := oasStatus(t, err); status != http.StatusUnauthorized || detail.Code != "unauthorized" {
		t.Errorf("wrong secret: %d %+v", status, detail)
	}
}
