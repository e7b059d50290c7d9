package handlers_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"go.uber.org/goleak"

	"github.com/mailqueue/mailqueue/config"
	"github.com/mailqueue/mailqueue/handlers"
	"github.com/mailqueue/mailqueue/jobs"
	"github.com/mailqueue/mailqueue/oas"
	"github.com/mailqueue/mailqueue/ratelimit"
	"github.com/mailqueue/mailqueue/secret"
	"github.com/mailqueue/mailqueue/store"
	"github.com/mailqueue/mailqueue/testenv"
)

const adminSecret = "test-admin-secret-0123456789"

// cfg is loaded once, before any test runs, through the real config.Load
// (the decoded encryption key is only set by its validation).
var (
	cfg *config.Config
	box *secret.Box
)

func TestMain(m *testing.M) {
	var key [32]byte
	_, _ = rand.Read(key[:])
	for k, v := range map[string]string{
		"MQ_ADMIN_SECRET":   adminSecret,
		"MQ_ENCRYPTION_KEY": base64.StdEncoding.EncodeToString(key[:]),
		"MQ_MAX_BODY_BYTES": "1048576",
		// The tests' SMTP servers listen on loopback.
		"MQ_SMTP_ALLOW_PRIVATE": "true",
	} {
		if err := os.Setenv(k, v); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
	}
	c, err := config.Load()
	if err == nil {
		err = c.Require("serve")
	}
	if err == nil {
		box, err = secret.NewBox(c.EncryptionKeyBytes(), c.PreviousEncryptionKeys()...)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "loading config:", err)
		os.Exit(1)
	}
	cfg = c
	code := m.Run()
	if code == 0 {
		if err := goleak.Find(goleak.IgnoreCurrent()); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// bundle is one test's whole API stack: its own database, an insert-only
// River client, the store, Redis and the HTTP server.
type bundle struct {
	pool   *pgxpool.Pool
	river  *river.Client[pgx.Tx]
	store  *store.Store
	srv    *httptest.Server
	client *http.Client
}

func setup(t *testing.T) *bundle {
	t.Helper()
	pool := testenv.DB(t)
	logger := testenv.Logger(t)
	rc, err := river.NewClient(riverpgxv5.New(pool), &river.Config{Logger: logger})
	if err != nil {
		t.Fatalf("river client: %v", err)
	}
	st := store.New(pool, jobs.NewEnqueuer(rc))
	rdb := ratelimit.NewClient([]string{testenv.RedisAddr(t)})
	t.Cleanup(func() { _ = rdb.Close() })

	uiCtx, cancel := context.WithCancel(context.Background())
	// A private key prefix: tests share one Redis, but not their keys.
	prefix := "mqtest:" + uuid.NewString() + ":"
	h, err := handlers.New(uiCtx, handlers.Deps{
		Config: cfg, Store: st, Redis: rdb, River: rc, Box: box, Logger: logger, Version: "test",
		Breaker: ratelimit.NewBreaker(rdb, prefix), Dedup: ratelimit.NewDedup(rdb, prefix),
	})
	if err != nil {
		cancel()
		t.Fatalf("handlers.New: %v", err)
	}
	srv := httptest.NewServer(h)
	client := &http.Client{Timeout: 30 * time.Second}
	t.Cleanup(func() {
		client.CloseIdleConnections()
		srv.Close()
		cancel()
	})
	return &bundle{pool: pool, river: rc, store: st, srv: srv, client: client}
}

// do sends a raw request. body may be nil, a string or []byte (sent as is)
// or anything else (sent as JSON).
func (b *bundle) do(t *testing.T, method, path, token string, body any, headers map[string]string) (*http.Response, []byte) {
	t.Helper()
	var r io.Reader
	switch v := body.(type) {
	case nil:
	case string:
		r = strings.NewReader(v)
	case []byte:
		r = bytes.NewReader(v)
	default:
		j, err := json.Marshal(v)
		if err != nil {
			t.Fatalf("encoding body: %v", err)
		}
		r = bytes.NewReader(j)
	}
	req, err := http.NewRequestWithContext(t.Context(), method, b.srv.URL+path, r)
	if err != nil {
		t.Fatalf("building request: %v", err)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := b.client.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	out, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", method, path, err)
	}
	if resp.Header.Get("X-Request-Id") == "" {
		t.Errorf("%s %s: no X-Request-Id header", method, path)
	}
	if resp.StatusCode >= 500 && resp.StatusCode != http.StatusNotImplemented {
		t.Errorf("%s %s answered %d: %s", method, path, resp.StatusCode, out)
	}
	return resp, out
}

// apiError is the API's one error shape.
type apiError struct {
	Error *struct {
		Code      string  `json:"code"`
		Message   string  `json:"message"`
		Field     *string `json:"field"`
		RequestID string  `json:"request_id"`
	} `json:"error"`
}

// noField asks expectError to check the error names no field.
const noField = "\x00none"

// expectError checks the status and the JSON error body: code (when not
// empty), field (when not empty; noField for none), and request_id equal to
// the X-Request-Id header.
func expectError(t *testing.T, resp *http.Response, body []byte, status int, code, field string) {
	t.Helper()
	if resp.StatusCode != status {
		t.Errorf("status = %d, want %d; body %s", resp.StatusCode, status, body)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Errorf("Content-Type = %q, want application/json", ct)
	}
	var e apiError
	if err := json.Unmarshal(body, &e); err != nil || e.Error == nil {
		t.Fatalf("body is not the error shape (%v): %s", err, body)
	}
	if e.Error.Code == "" || e.Error.Message == "" {
		t.Errorf("error code or message empty: %s", body)
	}
	if code != "" && e.Error.Code != code {
		t.Errorf("error code = %q, want %q; body %s", e.Error.Code, code, body)
	}
	switch {
	case field == noField:
		if e.Error.Field != nil {
			t.Errorf("error field = %q, want none", *e.Error.Field)
		}
	case field != "":
		if e.Error.Field == nil || *e.Error.Field != field {
			got := "<none>"
			if e.Error.Field != nil {
				got = *e.Error.Field
			}
			t.Errorf("error field = %s, want %q; body %s", got, field, body)
		}
	}
	if rid := resp.Header.Get("X-Request-Id"); e.Error.RequestID == "" || e.Error.RequestID != rid {
		t.Errorf("error request_id = %q, X-Request-Id = %q", e.Error.RequestID, rid)
	}
}

func expectStatus(t *testing.T, resp *http.Response, body []byte, status int) {
	t.Helper()
	if resp.StatusCode != status {
		t.Fatalf("status = %d, want %d; body %s", resp.StatusCode, status, body)
	}
}

func decode[T any](t *testing.T, body []byte) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(body, &v); err != nil {
		t.Fatalf("decoding %T: %v; body %s", v, err, body)
	}
	return v
}

type appCreated struct {
	App struct {
		ID          uuid.UUID `json:"id"`
		Name        string    `json:"name"`
		IsActive    bool      `json:"is_active"`
		SandboxMode bool      `json:"sandbox_mode"`
	} `json:"app"`
	APIKey struct {
		ID     uuid.UUID `json:"id"`
		Key    string    `json:"key"`
		Prefix string    `json:"prefix"`
		Last4  string    `json:"last4"`
		Scopes []string  `json:"scopes"`
	} `json:"api_key"`
}

// createApp creates an app through the API and returns its id and key.
func (b *bundle) createApp(t *testing.T, name string, sandbox bool) (uuid.UUID, string) {
	t.Helper()
	resp, body := b.do(t, http.MethodPost, "/v1/apps", adminSecret,
		map[string]any{"name": name, "sandbox_mode": sandbox}, nil)
	expectStatus(t, resp, body, http.StatusCreated)
	c := decode[appCreated](t, body)
	return c.App.ID, c.APIKey.Key
}

// insertKey stores a key for appID directly, as key management will.
func (b *bundle) insertKey(t *testing.T, appID uuid.UUID, scopes []string, allow []netip.Prefix, expires *time.Time) string {
	t.Helper()
	var raw [32]byte
	_, _ = rand.Read(raw[:])
	key := "mq_live_" + base64.RawURLEncoding.EncodeToString(raw[:])
	sum := sha256.Sum256([]byte(key))
	_, err := b.store.APIKeyInsert(t.Context(), &store.APIKeyInsertParams{
		AppID: appID, Name: "test key", Prefix: "mq_live_", Hash: sum[:], Last4: key[len(key)-4:],
		Scopes: scopes, IPAllowlist: allow, ExpiresAt: expires,
	})
	if err != nil {
		t.Fatalf("inserting key: %v", err)
	}
	return key
}

// count runs a query returning one integer.
func (b *bundle) count(t *testing.T, query string, args ...any) int {
	t.Helper()
	var n int
	if err := b.pool.QueryRow(t.Context(), query, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
	return n
}

func (b *bundle) exec(t *testing.T, query string, args ...any) {
	t.Helper()
	if _, err := b.pool.Exec(t.Context(), query, args...); err != nil {
		t.Fatalf("%s: %v", query, err)
	}
}

// emailReq is a minimal valid email request; change returns a modified copy.
func emailReq(change func(m map[string]any)) map[string]any {
	m := map[string]any{
		"from":    map[string]any{"email": "sender@example.com", "name": "Sender"},
		"to":      []any{map[string]any{"email": "rcpt@example.com"}},
		"subject": "Hello",
		"text":    "Hi there",
	}
	if change != nil {
		change(m)
	}
	return m
}

type accepted struct {
	ID          uuid.UUID  `json:"id"`
	Status      string     `json:"status"`
	Queue       string     `json:"queue"`
	MessageID   string     `json:"message_id"`
	ScheduledAt *time.Time `json:"scheduled_at"`
}

// send posts an email and expects 202.
func (b *bundle) send(t *testing.T, key string, req map[string]any) accepted {
	t.Helper()
	resp, body := b.do(t, http.MethodPost, "/v1/emails", key, req, nil)
	expectStatus(t, resp, body, http.StatusAccepted)
	return decode[accepted](t, body)
}

// secSource gives the generated client its credentials.
type secSource struct{ admin, key string }

func (s secSource) AdminSecret(context.Context, oas.OperationName) (oas.AdminSecret, error) {
	return oas.AdminSecret{Token: s.admin}, nil
}

func (s secSource) ApiKey(context.Context, oas.OperationName) (oas.ApiKey, error) {
	return oas.ApiKey{Token: s.key}, nil
}

// oasClient returns the generated client, authenticating with key.
func (b *bundle) oasClient(t *testing.T, key string) *oas.Client {
	t.Helper()
	c, err := oas.NewClient(b.srv.URL, secSource{admin: adminSecret, key: key}, oas.WithClient(b.client))
	if err != nil {
		t.Fatalf("oas.NewClient: %v", err)
	}
	return c
}

// oasStatus returns the status of a generated client's error response.
func oasStatus(t *testing.T, err error) (int, oas.ErrorDetail) {
	t.Helper()
	var e *oas.ErrorStatusCodeWithHeaders
	if !errors.As(err, &e) {
		t.Fatalf("error %v (%T) is not an API error response", err, err)
	}
	return e.StatusCode, e.Response.Error
}
