package handlers_test

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/mailqueue/mailqueue/config"
	"github.com/mailqueue/mailqueue/handlers"
	"github.com/mailqueue/mailqueue/ratelimit"
	"github.com/mailqueue/mailqueue/testenv"
)

// keyJSON is an API key resource as it travels, with the secret only
// present in creation and rotation responses.
type keyJSON struct {
	ID             uuid.UUID  `json:"id"`
	Name           string     `json:"name"`
	Prefix         string     `json:"prefix"`
	Last4          string     `json:"last4"`
	Scopes         []string   `json:"scopes"`
	RateLimit      *int       `json:"rate_limit"`
	IPAllowlist    []string   `json:"ip_allowlist"`
	ExpiresAt      *time.Time `json:"expires_at"`
	IsActive       bool       `json:"is_active"`
	LastUsedAt     *time.Time `json:"last_used_at"`
	GraceExpiresAt *time.Time `json:"grace_expires_at"`
	CreatedAt      time.Time  `json:"created_at"`
	Key            string     `json:"key"`
}

// stack builds another API process over b's database and Redis, serving on
// ln (nil: a fresh 127.0.0.1 listener) with configuration c. Its
// background work (the key-use batcher) stops when the returned cancel is
// called or the test ends.
func (b *bundle) stack(t *testing.T, c *config.Config, ln net.Listener) (*bundle, context.CancelFunc) {
	t.Helper()
	rdb := ratelimit.NewClient([]string{testenv.RedisAddr(t)})
	t.Cleanup(func() { _ = rdb.Close() })
	ctx, cancel := context.WithCancel(context.Background())
	h, err := handlers.New(ctx, handlers.Deps{
		Config: c, Store: b.store, Redis: rdb, Box: box, Logger: testenv.Logger(t), Version: "test",
	})
	if err != nil {
		cancel()
		t.Fatalf("handlers.New: %v", err)
	}
	srv := httptest.NewUnstartedServer(h)
	if ln != nil {
		_ = srv.Listener.Close()
		srv.Listener = ln
	}
	srv.Start()
	client := &http.Client{Timeout: 30 * time.Second}
	t.Cleanup(func() {
		client.CloseIdleConnections()
		srv.Close()
		cancel()
	})
	return &bundle{pool: b.pool, river: b.river, store: b.store, srv: srv, client: client}, cancel
}

// trustingCfg is the test configuration plus MQ_TRUSTED_PROXIES naming the
// loopback addresses, loaded through config.Load like the real one. Only
// TestMain and this read the environment, so the brief change cannot leak.
var trustingCfg = sync.OnceValues(func() (*config.Config, error) {
	if err := os.Setenv("MQ_TRUSTED_PROXIES", "127.0.0.1/32,::1"); err != nil {
		return nil, err
	}
	defer os.Unsetenv("MQ_TRUSTED_PROXIES")
	return config.Load()
})

// createKey creates a key through the API with creator and expects 201.
func (b *bundle) createKey(t *testing.T, creator string, req map[string]any, headers map[string]string) keyJSON {
	t.Helper()
	resp, body := b.do(t, http.MethodPost, "/v1/api-keys", creator, req, headers)
	expectStatus(t, resp, body, http.StatusCreated)
	return decode[keyJSON](t, body)
}

// authStatus is the status of a cheap authenticated request made with key.
func (b *bundle) authStatus(t *testing.T, key string, headers map[string]string) int {
	t.Helper()
	resp, _ := b.do(t, http.MethodGet, "/v1/emails?limit=1", key, nil, headers)
	return resp.StatusCode
}

// waitStatus polls until a request with key answers want, failing after
// within; it returns how long that took.
func (b *bundle) waitStatus(t *testing.T, key string, want int, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		got := b.authStatus(t, key, nil)
		if got == want {
			return time.Since(start)
		}
		if time.Since(start) > within {
			t.Fatalf("key still answers %d after %v, want %d", got, within, want)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestAPIKeyCreate(t *testing.T) {
	t.Parallel()
	b := setup(t)
	appID, master := b.createApp(t, "app", false)
	expires := time.Now().Add(48 * time.Hour).UTC().Truncate(time.Second)

	k := b.createKey(t, master, map[string]any{
		"name": "  reader  ", "scopes": []string{"email:read", "email:read"}, "rate_limit": 5,
		"ip_allowlist": []string{"127.0.0.1", "10.0.0.0/8", "::1", "2001:db8::/32"},
		"expires_at":   expires,
	}, map[string]string{"Idempotency-Key": "create-1"})
	if !strings.HasPrefix(k.Key, "mq_live_") || k.Prefix != "mq_live_" || k.Last4 != k.Key[len(k.Key)-4:] {
		t.Errorf("key %q: prefix %q last4 %q", k.Key, k.Prefix, k.Last4)
	}
	if k.Name != "reader" || !slices.Equal(k.Scopes, []string{"email:read"}) || k.RateLimit == nil || *k.RateLimit != 5 ||
		!k.IsActive || k.ExpiresAt == nil || !k.ExpiresAt.Equal(expires) {
		t.Errorf("created key = %+v", k)
	}
	wantAllow := []string{"127.0.0.1/32", "10.0.0.0/8", "::1/128", "2001:db8::/32"}
	if !slices.Equal(k.IPAllowlist, wantAllow) {
		t.Errorf("ip_allowlist = %v, want %v", k.IPAllowlist, wantAllow)
	}

	// It authenticates, with exactly its scopes.
	if got := b.authStatus(t, k.Key, nil); got != http.StatusOK {
		t.Errorf("GET /v1/emails with the new key = %d, want 200", got)
	}
	resp, body := b.do(t, http.MethodPost, "/v1/emails", k.Key, emailReq(nil), nil)
	expectError(t, resp, body, http.StatusForbidden, "insufficient_scope", "")

	// Only the digest is stored, and the plaintext is nowhere at rest.
	sum := sha256.Sum256([]byte(k.Key))
	if n := b.count(t, "SELECT count(*) FROM api_keys WHERE id = $1 AND key_hash = $2 AND key_last4 = $3", k.ID, sum[:], k.Last4); n != 1 {
		t.Errorf("api_keys row with the key's digest: %d, want 1", n)
	}
	secret := k.Key[len("mq_live_"):]
	for _, q := range []string{
		"SELECT count(*) FROM api_keys a WHERE position($1 in a::text) > 0",
		"SELECT count(*) FROM idempotency_keys i WHERE position($1 in i::text) > 0 OR position($1::bytea in i.response) > 0",
		"SELECT count(*) FROM audit_logs l WHERE position($1 in l::text) > 0",
	} {
		if n := b.count(t, q, secret); n != 0 {
			t.Errorf("%s: the plaintext key is stored (%d rows)", q, n)
		}
	}
	if n := b.count(t, "SELECT count(*) FROM idempotency_keys WHERE app_id = $1 AND key = 'create-1'", appID); n != 1 {
		t.Errorf("idempotency row = %d, want 1", n)
	}

	// Defaults: the two email scopes, anywhere, no expiry.
	d := b.createKey(t, master, map[string]any{"name": "default"}, nil)
	if !slices.Equal(d.Scopes, []string{"email:send", "email:read"}) || len(d.IPAllowlist) != 0 || d.ExpiresAt != nil || d.RateLimit != nil {
		t.Errorf("default key = %+v", d)
	}

	// A sandbox app's keys are test keys.
	_, sandboxMaster := b.createApp(t, "sandbox", true)
	s := b.createKey(t, sandboxMaster, map[string]any{"name": "sandbox"}, nil)
	if !strings.HasPrefix(s.Key, "mq_test_") || s.Prefix != "mq_test_" {
		t.Errorf("sandbox app key %q prefix %q, want mq_test_", s.Key, s.Prefix)
	}

	// Audited, as the app, without the secret.
	var actor, action string
	var actorID uuid.UUID
	var changes []byte
	err := b.pool.QueryRow(t.Context(),
		"SELECT actor_type::text, actor_id, action, changes FROM audit_logs WHERE resource_id = $1", k.ID).
		Scan(&actor, &actorID, &action, &changes)
	if err != nil {
		t.Fatalf("audit row: %v", err)
	}
	if actor != "app" || actorID != appID || action != "api_key.create" {
		t.Errorf("audit = %s %s %s", actor, actorID, action)
	}
	var ch struct {
		After map[string]any `json:"after"`
	}
	if err := json.Unmarshal(changes, &ch); err != nil || ch.After["last4"] != k.Last4 || ch.After["key"] != nil {
		t.Errorf("audit changes = %s (%v)", changes, err)
	}
}

func TestAPIKeyCreateInvalid(t *testing.T) {
	t.Parallel()
	b := setup(t)
	appID, master := b.createApp(t, "app", false)

	tooMany := make([]string, 101)
	for i := range tooMany {
		tooMany[i] = fmt.Sprintf("10.0.%d.0/24", i)
	}
	for _, tc := range []struct {
		name   string
		req    map[string]any
		status int
		field  string
	}{
		{"unknown scope", map[string]any{"name": "k", "scopes": []string{"email:read", "superuser"}}, 400, ""},
		{"no scopes", map[string]any{"name": "k", "scopes": []string{}}, 400, ""},
		{"blank name", map[string]any{"name": "   "}, 422, "name"},
		{"no name", map[string]any{"scopes": []string{"email:read"}}, 400, ""},
		{"bad cidr", map[string]any{"name": "k", "ip_allowlist": []string{"10.0.0.0/8", "10.0.0.0/33"}}, 422, "ip_allowlist[1]"},
		{"not an address", map[string]any{"name": "k", "ip_allowlist": []string{"example.com"}}, 422, "ip_allowlist[0]"},
		{"host bits", map[string]any{"name": "k", "ip_allowlist": []string{"::1", "10.0.0.1/24"}}, 422, "ip_allowlist[1]"},
		{"zone", map[string]any{"name": "k", "ip_allowlist": []string{"fe80::1%eth0"}}, 422, "ip_allowlist[0]"},
		{"too many cidrs", map[string]any{"name": "k", "ip_allowlist": tooMany}, 400, ""},
		{"past expiry", map[string]any{"name": "k", "expires_at": time.Now().Add(-time.Minute)}, 422, "expires_at"},
		{"zero rate", map[string]any{"name": "k", "rate_limit": 0}, 400, ""},
	} {
		resp, body := b.do(t, http.MethodPost, "/v1/api-keys", master, tc.req, nil)
		if resp.StatusCode != tc.status {
			t.Errorf("%s: status %d, want %d: %s", tc.name, resp.StatusCode, tc.status, body)
			continue
		}
		expectError(t, resp, body, tc.status, "", tc.field)
	}

	// A key without admin cannot manage keys at all, so cannot mint a
	// stronger one.
	reader := b.createKey(t, master, map[string]any{"name": "reader", "scopes": []string{"email:read"}}, nil)
	resp, body := b.do(t, http.MethodPost, "/v1/api-keys", reader.Key, map[string]any{"name": "x", "scopes": []string{"admin"}}, nil)
	expectError(t, resp, body, http.StatusForbidden, "insufficient_scope", "")
	for _, path := range []string{"/v1/api-keys", "/v1/api-keys/" + reader.ID.String()} {
		resp, body = b.do(t, http.MethodGet, path, reader.Key, nil, nil)
		expectError(t, resp, body, http.StatusForbidden, "insufficient_scope", "")
	}
	// Only the master key and the reader exist: nothing invalid was stored.
	if n := b.count(t, "SELECT count(*) FROM api_keys WHERE app_id = $1", appID); n != 2 {
		t.Errorf("keys = %d, want 2", n)
	}
}

func TestAPIKeyListAndGet(t *testing.T) {
	t.Parallel()
	b := setup(t)
	_, master := b.createApp(t, "app", false)
	var made []keyJSON
	for i := range 4 {
		made = append(made, b.createKey(t, master, map[string]any{"name": fmt.Sprintf("k%d", i)}, nil))
	}
	resp, body := b.do(t, http.MethodDelete, "/v1/api-keys/"+made[1].ID.String(), master, nil, nil)
	expectStatus(t, resp, body, http.StatusNoContent)

	// Newest first, pages of 2, the master key last; revoked keys listed.
	var names []string
	cursor := ""
	for pages := 0; ; pages++ {
		if pages > 5 {
			t.Fatal("pagination does not end")
		}
		path := "/v1/api-keys?limit=2"
		if cursor != "" {
			path += "&cursor=" + cursor
		}
		resp, body := b.do(t, http.MethodGet, path, master, nil, nil)
		expectStatus(t, resp, body, http.StatusOK)
		if strings.Contains(string(body), `"key"`) || strings.Contains(string(body), made[0].Key[len("mq_live_"):]) {
			t.Errorf("list shows a secret: %s", body)
		}
		page := decode[struct {
			Data    []keyJSON `json:"data"`
			Cursor  string    `json:"cursor"`
			HasMore bool      `json:"has_more"`
		}](t, body)
		for _, k := range page.Data {
			names = append(names, k.Name)
			if k.Name == "k1" && k.IsActive {
				t.Errorf("revoked key listed as active")
			}
			if k.Prefix != "mq_live_" || len(k.Last4) != 4 {
				t.Errorf("listed key %+v not masked as prefix + last4", k)
			}
		}
		if !page.HasMore {
			break
		}
		cursor = page.Cursor
	}
	if want := []string{"k3", "k2", "k1", "k0", "Default key"}; !slices.Equal(names, want) {
		t.Errorf("listed %v, want %v", names, want)
	}

	resp, body = b.do(t, http.MethodGet, "/v1/api-keys/"+made[2].ID.String(), master, nil, nil)
	expectStatus(t, resp, body, http.StatusOK)
	if strings.Contains(string(body), `"key"`) {
		t.Errorf("get shows the secret: %s", body)
	}
	if got := decode[keyJSON](t, body); got.ID != made[2].ID || got.Last4 != made[2].Last4 || got.Name != "k2" {
		t.Errorf("get = %+v", got)
	}
	resp, body = b.do(t, http.MethodGet, "/v1/api-keys/"+uuid.NewString(), master, nil, nil)
	expectError(t, resp, body, http.StatusNotFound, "not_found", "")
	resp, body = b.do(t, http.MethodGet, "/v1/api-keys?cursor=forged", master, nil, nil)
	expectError(t, resp, body, http.StatusBadRequest, "invalid_cursor", "cursor")
}

// TestAPIKeyRevokeAcrossProcesses revokes a key through one API process and
// checks another, which had the key cached, refuses it within 1.2 s.
func TestAPIKeyRevokeAcrossProcesses(t *testing.T) {
	t.Parallel()
	b := setup(t)
	appID, master := b.createApp(t, "app", false)
	other, _ := b.stack(t, cfg, nil)

	k := b.createKey(t, master, map[string]any{"name": "doomed"}, nil)
	for range 3 { // warm the second process's key cache
		if got := other.authStatus(t, k.Key, nil); got != http.StatusOK {
			t.Fatalf("before revocation: %d", got)
		}
	}
	resp, body := b.do(t, http.MethodDelete, "/v1/api-keys/"+k.ID.String(), master, nil, nil)
	expectStatus(t, resp, body, http.StatusNoContent)
	took := other.waitStatus(t, k.Key, http.StatusUnauthorized, 1200*time.Millisecond)
	t.Logf("second process refused the revoked key after %v", took)

	// Revoking again changes nothing and is not audited twice.
	resp, body = b.do(t, http.MethodDelete, "/v1/api-keys/"+k.ID.String(), master, nil, nil)
	expectStatus(t, resp, body, http.StatusNoContent)
	if n := b.count(t, "SELECT count(*) FROM audit_logs WHERE action = 'api_key.revoke' AND resource_id = $1 AND actor_id = $2 AND app_id = $2", k.ID, appID); n != 1 {
		t.Errorf("revoke audit rows = %d, want 1", n)
	}
	resp, body = b.do(t, http.MethodGet, "/v1/api-keys/"+k.ID.String(), master, nil, nil)
	expectStatus(t, resp, body, http.StatusOK)
	if decode[keyJSON](t, body).IsActive {
		t.Error("revoked key still is_active")
	}

	// The app's only admin key cannot revoke itself; with another it can.
	masterID := b.keyID(t, master)
	resp, body = b.do(t, http.MethodDelete, "/v1/api-keys/"+masterID.String(), master, nil, nil)
	expectError(t, resp, body, http.StatusConflict, "last_admin_key", "")
	b.createKey(t, master, map[string]any{"name": "admin 2", "scopes": []string{"admin"}}, nil)
	resp, body = b.do(t, http.MethodDelete, "/v1/api-keys/"+masterID.String(), master, nil, nil)
	expectStatus(t, resp, body, http.StatusNoContent)
}

// keyID finds a key's id from its plaintext, through its digest.
func (b *bundle) keyID(t *testing.T, key string) uuid.UUID {
	t.Helper()
	sum := sha256.Sum256([]byte(key))
	var id uuid.UUID
	if err := b.pool.QueryRow(t.Context(), "SELECT id FROM api_keys WHERE key_hash = $1", sum[:]).Scan(&id); err != nil {
		t.Fatalf("finding key: %v", err)
	}
	return id
}

func TestAPIKeyRotate(t *testing.T) {
	t.Parallel()
	b := setup(t)
	appID, master := b.createApp(t, "app", false)
	expires := time.Now().Add(time.Hour).UTC().Truncate(time.Second)
	old := b.createKey(t, master, map[string]any{
		"name": "rotating", "scopes": []string{"email:read", "email:send"}, "rate_limit": 7,
		"ip_allowlist": []string{"127.0.0.0/8"}, "expires_at": expires,
	}, nil)
	b.authStatus(t, old.Key, nil) // cached in this process: rotation must still bite within the TTL

	resp, body := b.do(t, http.MethodPost, "/v1/api-keys/"+old.ID.String()+"/rotate", master,
		map[string]any{"grace_period_seconds": 2}, nil)
	expectStatus(t, resp, body, http.StatusCreated)
	rotatedAt := time.Now()
	fresh := decode[keyJSON](t, body)
	if fresh.ID == old.ID || fresh.Key == old.Key || !strings.HasPrefix(fresh.Key, "mq_live_") {
		t.Fatalf("rotation returned %+v", fresh)
	}
	if fresh.Name != old.Name || !slices.Equal(fresh.Scopes, old.Scopes) || *fresh.RateLimit != 7 ||
		!slices.Equal(fresh.IPAllowlist, old.IPAllowlist) || !fresh.ExpiresAt.Equal(expires) {
		t.Errorf("new key %+v does not carry the old one's settings %+v", fresh, old)
	}
	if got := b.authStatus(t, fresh.Key, nil); got != http.StatusOK {
		t.Errorf("new key: %d", got)
	}
	if got := b.authStatus(t, old.Key, nil); got != http.StatusOK {
		t.Errorf("old key during grace: %d", got)
	}
	resp, body = b.do(t, http.MethodGet, "/v1/api-keys/"+old.ID.String(), master, nil, nil)
	expectStatus(t, resp, body, http.StatusOK)
	if g := decode[keyJSON](t, body).GraceExpiresAt; g == nil || g.Before(rotatedAt.Add(time.Second)) || g.After(rotatedAt.Add(3*time.Second)) {
		t.Errorf("old key grace_expires_at = %v, want about %v", g, rotatedAt.Add(2*time.Second))
	}
	b.waitStatus(t, old.Key, http.StatusUnauthorized, 4*time.Second)
	if since := time.Since(rotatedAt); since < 1500*time.Millisecond {
		t.Errorf("old key refused after %v, before its 2 s grace", since)
	}
	if got := b.authStatus(t, fresh.Key, nil); got != http.StatusOK {
		t.Errorf("new key after the old one's grace: %d", got)
	}

	// A rotated key cannot be rotated again: its successor can.
	resp, body = b.do(t, http.MethodPost, "/v1/api-keys/"+old.ID.String()+"/rotate", master, map[string]any{}, nil)
	expectError(t, resp, body, http.StatusConflict, "", "")

	// Grace 0: the old key stops at once.
	b.authStatus(t, fresh.Key, nil)
	resp, body = b.do(t, http.MethodPost, "/v1/api-keys/"+fresh.ID.String()+"/rotate", master,
		map[string]any{"grace_period_seconds": 0}, nil)
	expectStatus(t, resp, body, http.StatusCreated)
	third := decode[keyJSON](t, body)
	b.waitStatus(t, fresh.Key, http.StatusUnauthorized, 1200*time.Millisecond)
	if got := b.authStatus(t, third.Key, nil); got != http.StatusOK {
		t.Errorf("third key: %d", got)
	}

	// No body: the configured default grace (24 h).
	resp, body = b.do(t, http.MethodPost, "/v1/api-keys/"+third.ID.String()+"/rotate", master, nil, nil)
	expectStatus(t, resp, body, http.StatusCreated)
	resp, body = b.do(t, http.MethodGet, "/v1/api-keys/"+third.ID.String(), master, nil, nil)
	expectStatus(t, resp, body, http.StatusOK)
	if g := decode[keyJSON](t, body).GraceExpiresAt; g == nil || time.Until(*g) < 23*time.Hour || time.Until(*g) > 25*time.Hour {
		t.Errorf("default grace ends %v, want in about 24 h", g)
	}

	// A revoked key cannot be rotated.
	revoked := b.createKey(t, master, map[string]any{"name": "revoked"}, nil)
	resp, body = b.do(t, http.MethodDelete, "/v1/api-keys/"+revoked.ID.String(), master, nil, nil)
	expectStatus(t, resp, body, http.StatusNoContent)
	resp, body = b.do(t, http.MethodPost, "/v1/api-keys/"+revoked.ID.String()+"/rotate", master, nil, nil)
	expectError(t, resp, body, http.StatusConflict, "api_key_revoked", "")
	resp, body = b.do(t, http.MethodPost, "/v1/api-keys/"+revoked.ID.String()+"/rotate", master,
		map[string]any{"grace_period_seconds": 604801}, nil)
	expectError(t, resp, body, http.StatusBadRequest, "", "")

	// Audited as the app, old and new shapes, never a secret.
	rows, err := b.pool.Query(t.Context(),
		"SELECT actor_type::text, actor_id, changes::text FROM audit_logs WHERE action = 'api_key.rotate' AND app_id = $1", appID)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for rows.Next() {
		var actor, changes string
		var actorID uuid.UUID
		if err := rows.Scan(&actor, &actorID, &changes); err != nil {
			t.Fatal(err)
		}
		n++
		if actor != "app" || actorID != appID {
			t.Errorf("rotate audited as %s %s", actor, actorID)
		}
		for _, k := range []string{old.Key, fresh.Key, third.Key} {
			if strings.Contains(changes, k[len("mq_live_"):]) {
				t.Errorf("audit changes hold a plaintext key: %s", changes)
			}
		}
		if !strings.Contains(changes, `"new"`) || !strings.Contains(changes, `"old"`) {
			t.Errorf("rotate audit changes = %s", changes)
		}
	}
	rows.Close()
	if n != 3 {
		t.Errorf("rotate audit rows = %d, want 3", n)
	}
}

func TestAPIKeyRotateIdempotent(t *testing.T) {
	t.Parallel()
	b := setup(t)
	appID, master := b.createApp(t, "app", false)
	k := b.createKey(t, master, map[string]any{"name": "twice"}, nil)
	path := "/v1/api-keys/" + k.ID.String() + "/rotate"
	idem := map[string]string{"Idempotency-Key": "rotate-1"}

	resp, body := b.do(t, http.MethodPost, path, master, map[string]any{"grace_period_seconds": 60}, idem)
	expectStatus(t, resp, body, http.StatusCreated)
	first := decode[keyJSON](t, body)
	resp, body = b.do(t, http.MethodPost, path, master, map[string]any{"grace_period_seconds": 60}, idem)
	expectStatus(t, resp, body, http.StatusCreated)
	replay := decode[keyJSON](t, body)
	if replay.ID != first.ID || replay.Key != first.Key {
		t.Errorf("replay gave key %s (%s…), first %s", replay.ID, replay.Last4, first.ID)
	}
	if n := b.count(t, "SELECT count(*) FROM api_keys WHERE app_id = $1 AND name = 'twice'", appID); n != 2 {
		t.Errorf("keys named twice = %d, want 2 (old and one new)", n)
	}
	if n := b.count(t, "SELECT count(*) FROM audit_logs WHERE action = 'api_key.rotate' AND app_id = $1", appID); n != 1 {
		t.Errorf("rotate audit rows = %d, want 1", n)
	}
	secret := first.Key[len("mq_live_"):]
	if n := b.count(t, "SELECT count(*) FROM idempotency_keys i WHERE position($1 in i::text) > 0 OR position($1::bytea in i.response) > 0", secret); n != 0 {
		t.Error("the rotated key's plaintext rests in idempotency_keys")
	}
	// Same Idempotency-Key, another request: refused.
	resp, body = b.do(t, http.MethodPost, path, master, map[string]any{"grace_period_seconds": 5}, idem)
	expectError(t, resp, body, http.StatusUnprocessableEntity, "idempotency_mismatch", "Idempotency-Key")
	resp, body = b.do(t, http.MethodPost, "/v1/api-keys/"+first.ID.String()+"/rotate", master,
		map[string]any{"grace_period_seconds": 60}, idem)
	expectError(t, resp, body, http.StatusUnprocessableEntity, "idempotency_mismatch", "Idempotency-Key")
}

func TestAPIKeyCrossTenant(t *testing.T) {
	t.Parallel()
	b := setup(t)
	_, masterA := b.createApp(t, "A", false)
	_, masterB := b.createApp(t, "B", false)
	kb := b.createKey(t, masterB, map[string]any{"name": "B's"}, nil)

	for _, r := range []struct{ method, path string }{
		{http.MethodGet, "/v1/api-keys/" + kb.ID.String()},
		{http.MethodDelete, "/v1/api-keys/" + kb.ID.String()},
		{http.MethodPost, "/v1/api-keys/" + kb.ID.String() + "/rotate"},
	} {
		resp, body := b.do(t, r.method, r.path, masterA, nil, nil)
		expectError(t, resp, body, http.StatusNotFound, "not_found", "")
		if strings.Contains(string(body), kb.Last4) || strings.Contains(string(body), "B's") {
			t.Errorf("%s %s leaks B's key: %s", r.method, r.path, body)
		}
	}
	resp, body := b.do(t, http.MethodGet, "/v1/api-keys", masterA, nil, nil)
	expectStatus(t, resp, body, http.StatusOK)
	if strings.Contains(string(body), kb.ID.String()) {
		t.Errorf("A's list shows B's key: %s", body)
	}
	if got := b.authStatus(t, kb.Key, nil); got != http.StatusOK {
		t.Errorf("B's key after A's attempts: %d", got)
	}
	if n := b.count(t, "SELECT count(*) FROM api_keys WHERE name = 'B''s'"); n != 1 {
		t.Errorf("B's keys = %d, want 1 (no rotation happened)", n)
	}
}

// TestAPIKeyTrustedProxy checks the IP allowlist sees the client behind a
// trusted proxy, and only behind one.
func TestAPIKeyTrustedProxy(t *testing.T) {
	t.Parallel()
	b := setup(t)
	c, err := trustingCfg()
	if err != nil {
		t.Fatalf("config with trusted proxies: %v", err)
	}
	proxied, _ := b.stack(t, c, nil)
	_, master := b.createApp(t, "app", false)
	v4 := b.createKey(t, master, map[string]any{"name": "v4", "scopes": []string{"email:read"}, "ip_allowlist": []string{"203.0.113.0/24"}}, nil)
	v6 := b.createKey(t, master, map[string]any{"name": "v6", "scopes": []string{"email:read"}, "ip_allowlist": []string{"2001:db8::/32"}}, nil)
	xff := func(ip string) map[string]string { return map[string]string{"X-Forwarded-For": ip} }

	for _, tc := range []struct {
		via  *bundle
		key  string
		from string
		want int
	}{
		{proxied, v4.Key, "203.0.113.9", http.StatusOK},
		{proxied, v4.Key, "198.51.100.1", http.StatusForbidden},
		{proxied, v4.Key, "203.0.113.9, 198.51.100.1", http.StatusForbidden}, // the right-most untrusted hop counts
		{proxied, v4.Key, "198.51.100.1, 203.0.113.9", http.StatusOK},
		{proxied, v6.Key, "2001:db8::5", http.StatusOK},
		{proxied, v6.Key, "2001:db9::1", http.StatusForbidden},
		// Without trust, the header is the client's say-so and is ignored.
		{b, v4.Key, "203.0.113.9", http.StatusForbidden},
		{b, v6.Key, "2001:db8::5", http.StatusForbidden},
	} {
		resp, body := tc.via.do(t, http.MethodGet, "/v1/emails?limit=1", tc.key, nil, xff(tc.from))
		if tc.want == http.StatusForbidden {
			expectError(t, resp, body, http.StatusForbidden, "ip_not_allowed", "")
		} else if resp.StatusCode != tc.want {
			t.Errorf("trusted=%v X-Forwarded-For %s: %d, want %d: %s", tc.via == proxied, tc.from, resp.StatusCode, tc.want, body)
		}
	}
}

// TestAPIKeyIPv6Loopback calls over [::1] with a key allowed only from ::1.
func TestAPIKeyIPv6Loopback(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "[::1]:0")
	if err != nil {
		t.Skipf("no IPv6 loopback (%v); TestAPIKeyTrustedProxy covers IPv6 allowlists through X-Forwarded-For", err)
	}
	b := setup(t)
	v6srv, _ := b.stack(t, cfg, ln)
	_, master := b.createApp(t, "app", false)
	here := b.createKey(t, master, map[string]any{"name": "here", "scopes": []string{"email:read"}, "ip_allowlist": []string{"::1/128"}}, nil)
	there := b.createKey(t, master, map[string]any{"name": "there", "scopes": []string{"email:read"}, "ip_allowlist": []string{"2001:db8::/32", "127.0.0.1"}}, nil)

	if got := v6srv.authStatus(t, here.Key, nil); got != http.StatusOK {
		t.Errorf("::1-only key over [::1]: %d, want 200", got)
	}
	resp, body := v6srv.do(t, http.MethodGet, "/v1/emails", there.Key, nil, nil)
	expectError(t, resp, body, http.StatusForbidden, "ip_not_allowed", "")
	resp, body = b.do(t, http.MethodGet, "/v1/emails", here.Key, nil, nil) // over 127.0.0.1
	expectError(t, resp, body, http.StatusForbidden, "ip_not_allowed", "")
}

// TestAPIKeyLastUsed checks requests set last_used_at through the batcher,
// whose last flush happens when its process stops.
func TestAPIKeyLastUsed(t *testing.T) {
	t.Parallel()
	b := setup(t)
	_, master := b.createApp(t, "app", false)
	k := b.createKey(t, master, map[string]any{"name": "used"}, nil)
	other, stop := b.stack(t, cfg, nil)
	before := time.Now()
	for range 5 {
		if got := other.authStatus(t, k.Key, nil); got != http.StatusOK {
			t.Fatalf("request: %d", got)
		}
	}
	// Batched: not written per request (the interval is 10 s).
	if n := b.count(t, "SELECT count(*) FROM api_keys WHERE id = $1 AND last_used_at IS NOT NULL", k.ID); n != 0 {
		t.Errorf("last_used_at written at once, not batched")
	}
	stop()
	deadline := time.Now().Add(3 * time.Second)
	for b.count(t, "SELECT count(*) FROM api_keys WHERE id = $1 AND last_used_at IS NOT NULL", k.ID) == 0 {
		if time.Now().After(deadline) {
			t.Fatal("last_used_at not set after the batcher stopped")
		}
		time.Sleep(50 * time.Millisecond)
	}
	resp, body := b.do(t, http.MethodGet, "/v1/api-keys/"+k.ID.String(), master, nil, nil)
	expectStatus(t, resp, body, http.StatusOK)
	if got := decode[keyJSON](t, body).LastUsedAt; got == nil || got.Before(before.Add(-time.Second)) || got.After(time.Now()) {
		t.Errorf("last_used_at = %v, want between %v and now", got, before)
	}
}

// TestAPIKeyMutualAdminRevocation has two admin keys revoke each other at
// the same moment, several times over: revocations of one app take turns,
// so the app always keeps a usable admin key.
func TestAPIKeyMutualAdminRevocation(t *testing.T) {
	t.Parallel()
	b := setup(t)
	appID, master := b.createApp(t, "app", false)
	for round := range 5 {
		a := b.createKey(t, master, map[string]any{"name": fmt.Sprintf("a%d", round), "scopes": []string{"admin"}}, nil)
		c := b.createKey(t, master, map[string]any{"name": fmt.Sprintf("c%d", round), "scopes": []string{"admin"}}, nil)
		// Leave only a and c as admin keys.
		if round == 0 {
			resp, body := b.do(t, http.MethodDelete, "/v1/api-keys/"+b.keyID(t, master).String(), master, nil, nil)
			expectStatus(t, resp, body, http.StatusNoContent)
		} else {
			b.exec(t, "UPDATE api_keys SET is_active = false WHERE app_id = $1 AND id NOT IN ($2, $3)", appID, a.ID, c.ID)
		}
		var wg sync.WaitGroup
		codes := make([]int, 2)
		for i, pair := range [][2]keyJSON{{a, c}, {c, a}} {
			wg.Go(func() {
				resp, _ := b.do(t, http.MethodDelete, "/v1/api-keys/"+pair[1].ID.String(), pair[0].Key, nil, nil)
				codes[i] = resp.StatusCode
			})
		}
		wg.Wait()
		n := b.count(t, "SELECT count(*) FROM api_keys WHERE app_id = $1 AND is_active AND 'admin' = ANY (scopes)", appID)
		if n != 1 {
			t.Fatalf("round %d: %d usable admin keys left (answers %v), want 1", round, n, codes)
		}
		// The loser is refused by the check (409) or, when the winner
		// committed before it authenticated, as a revoked key (401).
		slices.Sort(codes)
		if codes[0] != http.StatusNoContent || (codes[1] != http.StatusConflict && codes[1] != http.StatusUnauthorized) {
			t.Errorf("round %d: answers %v, want one 204 and one 409 or 401", round, codes)
		}
		master = a.Key
		if b.count(t, "SELECT count(*) FROM api_keys WHERE id = $1 AND is_active", a.ID) == 0 {
			master = c.Key
		}
	}
}
