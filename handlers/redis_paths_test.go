package handlers_test

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"

	"github.com/mailqueue/mailqueue/handlers"
	"github.com/mailqueue/mailqueue/jobs"
	"github.com/mailqueue/mailqueue/ratelimit"
	"github.com/mailqueue/mailqueue/store"
	"github.com/mailqueue/mailqueue/testenv"
)

// setupRedis is setup with the Redis of the caller's choice (a cluster, or
// a dead address), returning the breaker the API reports on.
func setupRedis(t *testing.T, addrs []string) (*bundle, *ratelimit.Breaker) {
	t.Helper()
	pool := testenv.DB(t)
	logger := testenv.Logger(t)
	rc, err := river.NewClient(riverpgxv5.New(pool), &river.Config{Logger: logger})
	if err != nil {
		t.Fatalf("river client: %v", err)
	}
	st := store.New(pool, jobs.NewEnqueuer(rc))
	rdb := ratelimit.NewClient(addrs)
	t.Cleanup(func() { _ = rdb.Close() })
	prefix := "mqtest:" + uuid.NewString() + ":"
	br := ratelimit.NewBreaker(rdb, prefix)
	uiCtx, cancel := context.WithCancel(context.Background())
	h, err := handlers.New(uiCtx, handlers.Deps{
		Config: cfg, Store: st, Redis: rdb, River: rc, Box: box, Logger: logger, Version: "test",
		Breaker: br, Dedup: ratelimit.NewDedup(rdb, prefix),
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
	return &bundle{pool: pool, river: rc, store: st, srv: srv, client: client}, br
}

func redisDeployments(t *testing.T) map[string][]string {
	return map[string][]string{
		"single node": {testenv.RedisAddr(t)},
		"cluster":     testenv.RedisClusterAddrs(t),
	}
}

// TestIdempotencyFastPath sends a storm of concurrent and retried requests
// with one Idempotency-Key: one email results, and only one request reaches
// the PostgreSQL idempotency record; duplicates in flight get 409, later
// ones the first response, a different body 422, all answered by Redis.
func TestIdempotencyFastPath(t *testing.T) {
	t.Parallel()
	for name, addrs := range redisDeployments(t) {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			b, _ := setupRedis(t, addrs)
			appID, key := b.createApp(t, "A", false)
			idem := map[string]string{"Idempotency-Key": "storm"}

			type result struct {
				status int
				body   []byte
			}
			results := make([]result, 30)
			start := make(chan struct{})
			var wg sync.WaitGroup
			for i := range results {
				wg.Go(func() {
					<-start
					resp, body := b.do(t, http.MethodPost, "/v1/emails", key, emailReq(nil), idem)
					results[i] = result{resp.StatusCode, body}
				})
			}
			close(start)
			wg.Wait()
			var first []byte
			for _, r := range results {
				switch r.status {
				case http.StatusAccepted:
					if first == nil {
						first = r.body
					} else if !bytes.Equal(first, r.body) {
						t.Errorf("two different 202s:\n%s\n%s", first, r.body)
					}
				case http.StatusConflict:
					if e := decode[apiError](t, r.body); e.Error == nil || e.Error.Code != "idempotency_in_progress" {
						t.Errorf("409 body %s", r.body)
					}
				default:
					t.Errorf("status %d: %s", r.status, r.body)
				}
			}
			// Retries after the storm replay the first response.
			for range 20 {
				resp, body := b.do(t, http.MethodPost, "/v1/emails", key, emailReq(nil), idem)
				expectStatus(t, resp, body, http.StatusAccepted)
				if first == nil {
					first = body
				}
				if !bytes.Equal(first, body) {
					t.Fatalf("replay differs:\n%s\n%s", first, body)
				}
			}
			resp, body := b.do(t, http.MethodPost, "/v1/emails", key, emailReq(func(m map[string]any) { m["subject"] = "Other" }), idem)
			expectError(t, resp, body, http.StatusUnprocessableEntity, "idempotency_mismatch", "Idempotency-Key")

			if n := b.count(t, "SELECT count(*) FROM emails"); n != 1 {
				t.Errorf("emails = %d, want 1", n)
			}
			if n := handlers.IdempotencyPostgresLookups(appID, "storm"); n != 1 {
				t.Errorf("%d requests reached the PostgreSQL idempotency record, want 1", n)
			}

			// A failed request releases its claim: the same key then works.
			bad := map[string]string{"Idempotency-Key": "bad-queue"}
			resp, body = b.do(t, http.MethodPost, "/v1/emails", key, emailReq(func(m map[string]any) { m["queue"] = "nope" }), bad)
			expectError(t, resp, body, http.StatusUnprocessableEntity, "", "queue")
			resp, body = b.do(t, http.MethodPost, "/v1/emails", key, emailReq(nil), bad)
			expectStatus(t, resp, body, http.StatusAccepted)
		})
	}
}

// With Redis down, idempotency falls back to PostgreSQL alone, which still
// guarantees one email per key.
func TestIdempotencyRedisDown(t *testing.T) {
	t.Parallel()
	b, _ := setupRedis(t, []string{"127.0.0.1:1"})
	appID, key := b.createApp(t, "A", false)
	idem := map[string]string{"Idempotency-Key": "no-redis"}
	resp, first := b.do(t, http.MethodPost, "/v1/emails", key, emailReq(nil), idem)
	expectStatus(t, resp, first, http.StatusAccepted)
	resp, again := b.do(t, http.MethodPost, "/v1/emails", key, emailReq(nil), idem)
	expectStatus(t, resp, again, http.StatusAccepted)
	if !bytes.Equal(first, again) {
		t.Errorf("replay differs:\n%s\n%s", first, again)
	}
	if n := b.count(t, "SELECT count(*) FROM emails"); n != 1 {
		t.Errorf("emails = %d, want 1", n)
	}
	if n := handlers.IdempotencyPostgresLookups(appID, "no-redis"); n != 2 {
		t.Errorf("PostgreSQL lookups = %d, want 2 (no fast path without Redis)", n)
	}
}

type healthReport struct {
	Status string `json:"status"`
	Checks struct {
		Postgresql struct {
			Status    string  `json:"status"`
			LatencyMs float64 `json:"latency_ms"`
		} `json:"postgresql"`
		Redis struct {
			Status string `json:"status"`
			Error  string `json:"error"`
		} `json:"redis"`
	} `json:"checks"`
	Queues struct {
		TotalPending int `json:"total_pending"`
	} `json:"queues"`
	CircuitBreakers []struct {
		Host  string `json:"host"`
		State string `json:"state"`
	} `json:"circuit_breakers"`
}

// TestHealthDetailedBreakers: the report lists the breakers' hosts and
// states to the admin only, and Prometheus counters follow them at
// /metrics, which needs the admin secret.
func TestHealthDetailedBreakers(t *testing.T) {
	t.Parallel()
	for name, addrs := range redisDeployments(t) {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			b, br := setupRedis(t, addrs)
			host := "smtp-" + uuid.NewString() + ".tenant.example:587"
			for range 5 {
				br.Report(t.Context(), host, false)
			}
			_, key := b.createApp(t, "A", false)
			b.send(t, key, emailReq(nil))

			resp, body := b.do(t, http.MethodGet, "/v1/health/detailed", "", nil, nil)
			expectStatus(t, resp, body, http.StatusOK)
			pub := decode[healthReport](t, body)
			if pub.Status != "healthy" || pub.Checks.Redis.Status != "healthy" || pub.Queues.TotalPending != 1 {
				t.Errorf("public report %s, want healthy with 1 pending", body)
			}
			if pub.CircuitBreakers != nil || strings.Contains(string(body), host) {
				t.Errorf("public report names SMTP hosts: %s", body)
			}

			resp, body = b.do(t, http.MethodGet, "/v1/health/detailed", adminSecret, nil, nil)
			expectStatus(t, resp, body, http.StatusOK)
			adm := decode[healthReport](t, body)
			if len(adm.CircuitBreakers) != 1 || adm.CircuitBreakers[0].Host != host || adm.CircuitBreakers[0].State != "open" {
				t.Errorf("admin report breakers %+v, want [%s open]", adm.CircuitBreakers, host)
			}

			resp, body = b.do(t, http.MethodGet, "/metrics", "", nil, nil)
			expectError(t, resp, body, http.StatusUnauthorized, "", "")
			resp, body = b.do(t, http.MethodGet, "/metrics", key, nil, nil)
			expectError(t, resp, body, http.StatusUnauthorized, "", "")
			resp, body = b.do(t, http.MethodGet, "/metrics", adminSecret, nil, nil)
			expectStatus(t, resp, body, http.StatusOK)
			for _, want := range []string{
				`mailqueue_circuit_breaker_opens_total{host="` + host + `"} 1`,
				`mailqueue_circuit_breaker_state{host="` + host + `"} 2`,
			} {
				if !strings.Contains(string(body), want) {
					t.Errorf("/metrics lacks %s", want)
				}
			}
		})
	}
}

// With Redis unreachable the report says degraded, fast, and still checks
// PostgreSQL.
func TestHealthDetailedRedisDown(t *testing.T) {
	t.Parallel()
	b, _ := setupRedis(t, []string{"127.0.0.1:1"})
	start := time.Now()
	resp, body := b.do(t, http.MethodGet, "/v1/health/detailed", adminSecret, nil, nil)
	expectStatus(t, resp, body, http.StatusOK)
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("health report took %s with Redis down", took)
	}
	r := decode[healthReport](t, body)
	if r.Status != "degraded" || r.Checks.Redis.Status != "degraded" || r.Checks.Redis.Error == "" ||
		r.Checks.Postgresql.Status != "healthy" {
		t.Errorf("report %s, want degraded with a Redis error and PostgreSQL healthy", body)
	}
}
