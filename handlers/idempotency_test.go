package handlers_test

import (
	"bytes"
	"net/http"
	"sync"
	"testing"
)

func TestIdempotentEmail(t *testing.T) {
	t.Parallel()
	b := setup(t)
	_, keyA := b.createApp(t, "A", false)
	_, keyB := b.createApp(t, "B", false)
	idem := map[string]string{"Idempotency-Key": "order-1234"}

	resp1, body1 := b.do(t, http.MethodPost, "/v1/emails", keyA, emailReq(nil), idem)
	expectStatus(t, resp1, body1, http.StatusAccepted)
	resp2, body2 := b.do(t, http.MethodPost, "/v1/emails", keyA, emailReq(nil), idem)
	expectStatus(t, resp2, body2, http.StatusAccepted)
	if !bytes.Equal(body1, body2) {
		t.Errorf("replay differs:\n%s\n%s", body1, body2)
	}
	if n := b.count(t, "SELECT count(*) FROM emails"); n != 1 {
		t.Errorf("emails = %d, want 1", n)
	}
	if n := b.count(t, "SELECT count(*) FROM river_job"); n != 1 {
		t.Errorf("river jobs = %d, want 1", n)
	}

	resp, body := b.do(t, http.MethodPost, "/v1/emails", keyA, emailReq(func(m map[string]any) { m["subject"] = "Other" }), idem)
	expectError(t, resp, body, http.StatusUnprocessableEntity, "idempotency_mismatch", "Idempotency-Key")

	resp, body = b.do(t, http.MethodPost, "/v1/emails", keyA, emailReq(nil), map[string]string{"Idempotency-Key": ""})
	if resp.StatusCode != http.StatusUnprocessableEntity && resp.StatusCode != http.StatusBadRequest {
		t.Errorf("empty Idempotency-Key: %d %s", resp.StatusCode, body)
	}

	// Another app's same key is its own.
	respB, bodyB := b.do(t, http.MethodPost, "/v1/emails", keyB, emailReq(nil), idem)
	expectStatus(t, respB, bodyB, http.StatusAccepted)
	if decode[accepted](t, bodyB).ID == decode[accepted](t, body1).ID {
		t.Errorf("app B got app A's email")
	}
	if n := b.count(t, "SELECT count(*) FROM emails"); n != 2 {
		t.Errorf("emails = %d, want 2", n)
	}
}

// A request's fingerprint must not depend on the order Go happens to walk
// a map in: the same body with several headers or metadata keys is the
// same request.
func TestIdempotentEmailWithMaps(t *testing.T) {
	t.Parallel()
	b := setup(t)
	_, key := b.createApp(t, "A", false)
	req := emailReq(func(m map[string]any) {
		m["headers"] = map[string]any{"X-A": "1", "X-B": "2", "X-C": "3", "X-D": "4", "X-E": "5"}
		m["metadata"] = map[string]any{"a": 1, "b": 2, "c": 3, "d": 4, "e": 5, "f": 6}
	})
	idem := map[string]string{"Idempotency-Key": "maps"}
	resp, first := b.do(t, http.MethodPost, "/v1/emails", key, req, idem)
	expectStatus(t, resp, first, http.StatusAccepted)
	for i := range 10 {
		resp, body := b.do(t, http.MethodPost, "/v1/emails", key, req, idem)
		if resp.StatusCode != http.StatusAccepted || !bytes.Equal(body, first) {
			t.Fatalf("replay %d of an identical request: %d %s", i, resp.StatusCode, body)
		}
	}
	if n := b.count(t, "SELECT count(*) FROM emails"); n != 1 {
		t.Errorf("emails = %d, want 1", n)
	}
}

func TestIdempotentEmailConcurrent(t *testing.T) {
	t.Parallel()
	b := setup(t)
	_, key := b.createApp(t, "A", false)
	idem := map[string]string{"Idempotency-Key": "burst"}

	type result struct {
		status int
		body   []byte
	}
	results := make([]result, 10)
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

	var ids []string
	for _, r := range results {
		switch r.status {
		case http.StatusAccepted:
			ids = append(ids, decode[accepted](t, r.body).ID.String())
		case http.StatusConflict:
			if e := decode[apiError](t, r.body); e.Error == nil || e.Error.Code != "idempotency_in_progress" {
				t.Errorf("409 body %s", r.body)
			}
		default:
			t.Errorf("status %d: %s", r.status, r.body)
		}
	}
	if len(ids) == 0 {
		t.Errorf("no request succeeded")
	}
	for _, id := range ids {
		if id != ids[0] {
			t.Errorf("different ids: %v", ids)
		}
	}
	if n := b.count(t, "SELECT count(*) FROM emails"); n != 1 {
		t.Errorf("emails = %d, want 1", n)
	}
	if n := b.count(t, "SELECT count(*) FROM river_job"); n != 1 {
		t.Errorf("river jobs = %d, want 1", n)
	}
}

func TestIdempotentQueueAndApp(t *testing.T) {
	t.Parallel()
	b := setup(t)
	_, key := b.createApp(t, "A", false)
	idem := map[string]string{"Idempotency-Key": "q-1"}

	r1, q1 := b.do(t, http.MethodPost, "/v1/queues", key, map[string]any{"name": "news"}, idem)
	expectStatus(t, r1, q1, http.StatusCreated)
	r2, q2 := b.do(t, http.MethodPost, "/v1/queues", key, map[string]any{"name": "news"}, idem)
	expectStatus(t, r2, q2, http.StatusCreated)
	if !bytes.Equal(q1, q2) {
		t.Errorf("queue replay differs:\n%s\n%s", q1, q2)
	}
	// Without the key, the name is taken.
	r3, q3 := b.do(t, http.MethodPost, "/v1/queues", key, map[string]any{"name": "news"}, nil)
	expectError(t, r3, q3, http.StatusConflict, "already_exists", "")
	// The key is per operation: reusing it for an email is a mismatch.
	r4, q4 := b.do(t, http.MethodPost, "/v1/emails", key, emailReq(nil), idem)
	expectError(t, r4, q4, http.StatusUnprocessableEntity, "idempotency_mismatch", "Idempotency-Key")

	appIdem := map[string]string{"Idempotency-Key": "app-1"}
	a1, p1 := b.do(t, http.MethodPost, "/v1/apps", adminSecret, map[string]any{"name": "Replayed"}, appIdem)
	expectStatus(t, a1, p1, http.StatusCreated)
	a2, p2 := b.do(t, http.MethodPost, "/v1/apps", adminSecret, map[string]any{"name": "Replayed"}, appIdem)
	expectStatus(t, a2, p2, http.StatusCreated)
	if !bytes.Equal(p1, p2) {
		t.Errorf("app replay differs:\n%s\n%s", p1, p2)
	}
	if n := b.count(t, "SELECT count(*) FROM apps WHERE name = 'Replayed'"); n != 1 {
		t.Errorf("apps = %d, want 1", n)
	}
	a3, p3 := b.do(t, http.MethodPost, "/v1/apps", adminSecret, map[string]any{"name": "Different"}, appIdem)
	expectError(t, a3, p3, http.StatusUnprocessableEntity, "idempotency_mismatch", "Idempotency-Key")
}

// The plaintext of an API key is shown once and stored nowhere (keys.go,
// DESIGN.md decision 4): also not when the request carried an
// Idempotency-Key.
func TestIdempotentAppDoesNotStoreKey(t *testing.T) {
	t.Parallel()
	b := setup(t)
	resp, body := b.do(t, http.MethodPost, "/v1/apps", adminSecret, map[string]any{"name": "X"},
		map[string]string{"Idempotency-Key": "app-key"})
	expectStatus(t, resp, body, http.StatusCreated)
	assertNotInDatabase(t, b, decode[appCreated](t, body).APIKey.Key)
}
