package handlers_test

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"
)

// createAppWith creates an app from a full AppCreate body and returns its id and key.
func (b *bundle) createAppWith(t *testing.T, body map[string]any) (uuid.UUID, string) {
	t.Helper()
	resp, out := b.do(t, http.MethodPost, "/v1/apps", adminSecret, body, nil)
	expectStatus(t, resp, out, http.StatusCreated)
	c := decode[appCreated](t, out)
	return c.App.ID, c.APIKey.Key
}

// expectQuotaExceeded checks a 429 quota_exceeded naming the limit, with a
// Retry-After of at most maxWait.
func expectQuotaExceeded(t *testing.T, resp *http.Response, body []byte, wantMessage string, maxWait time.Duration) {
	t.Helper()
	expectError(t, resp, body, http.StatusTooManyRequests, "quota_exceeded", noField)
	if !strings.Contains(string(body), wantMessage) || !strings.Contains(string(body), "resets at") {
		t.Errorf("message does not say %q and when it resets: %s", wantMessage, body)
	}
	ra, err := strconv.Atoi(resp.Header.Get("Retry-After"))
	if err != nil || ra <= 0 || time.Duration(ra)*time.Second > maxWait {
		t.Errorf("Retry-After = %q, want 1..%v seconds", resp.Header.Get("Retry-After"), maxWait.Seconds())
	}
}

func TestDailyLimit(t *testing.T) {
	t.Parallel()
	b := setup(t)
	id, key := b.createAppWith(t, map[string]any{"name": "limited", "daily_limit": 3})
	_, freeKey := b.createApp(t, "free", false)

	for range 3 {
		b.send(t, key, emailReq(nil))
	}
	resp, body := b.do(t, http.MethodPost, "/v1/emails", key, emailReq(func(m map[string]any) {
		m["subject"] = "refused"
	}), nil)
	expectQuotaExceeded(t, resp, body, "daily limit of 3 emails reached", 24*time.Hour)
	// The reset is the next UTC midnight, named in RFC 3339.
	now := time.Now().UTC()
	midnight := time.Date(now.Year(), now.Month(), now.Day()+1, 0, 0, 0, 0, time.UTC)
	if !strings.Contains(string(body), midnight.Format(time.RFC3339)) {
		t.Errorf("message does not name the reset %s: %s", midnight.Format(time.RFC3339), body)
	}
	if n := b.count(t, "SELECT count(*) FROM emails WHERE app_id = $1", id); n != 3 {
		t.Errorf("emails stored = %d, want 3", n)
	}
	if n := b.count(t, "SELECT count(*) FROM emails WHERE subject = 'refused'"); n != 0 {
		t.Errorf("the refused email was stored")
	}
	if n := b.count(t, "SELECT count(*) FROM river_job j JOIN emails e ON e.id = (j.args->>'email_id')::uuid WHERE e.app_id = $1", id); n != 3 {
		t.Errorf("send jobs = %d, want 3", n)
	}
	if n := b.count(t, "SELECT count(*) FROM river_job"); n != 3 {
		t.Errorf("river jobs = %d, want 3: the refused email enqueued one", n)
	}
	if n := b.count(t, "SELECT count::int FROM app_usage WHERE app_id = $1 AND period = 'day'", id); n != 3 {
		t.Errorf("daily usage = %d, want 3", n)
	}
	// No monthly limit: no monthly counter.
	if n := b.count(t, "SELECT count(*) FROM app_usage WHERE app_id = $1 AND period = 'month'", id); n != 0 {
		t.Errorf("monthly counters = %d, want none", n)
	}

	// An app without limits is unaffected and counts nothing.
	for range 5 {
		b.send(t, freeKey, emailReq(nil))
	}
	if n := b.count(t, "SELECT count(*) FROM app_usage a JOIN apps p ON p.id = a.app_id WHERE p.name = 'free'"); n != 0 {
		t.Errorf("an app without limits has %d usage rows", n)
	}

	// Raising the limit lets sending resume; lifting it removes it.
	b.patchApp(t, id, map[string]any{"daily_limit": 4})
	b.send(t, key, emailReq(nil))
	resp, body = b.do(t, http.MethodPost, "/v1/emails", key, emailReq(nil), nil)
	expectQuotaExceeded(t, resp, body, "daily limit of 4 emails reached", 24*time.Hour)
	b.patchApp(t, id, map[string]any{"daily_limit": nil})
	b.send(t, key, emailReq(nil))
}

func TestMonthlyLimit(t *testing.T) {
	t.Parallel()
	b := setup(t)
	id, key := b.createAppWith(t, map[string]any{"name": "limited", "daily_limit": 100, "monthly_limit": 2})

	b.send(t, key, emailReq(nil))
	b.send(t, key, emailReq(nil))
	resp, body := b.do(t, http.MethodPost, "/v1/emails", key, emailReq(nil), nil)
	expectQuotaExceeded(t, resp, body, "monthly limit of 2 emails reached", 31*24*time.Hour)
	now := time.Now().UTC()
	next := time.Date(now.Year(), now.Month()+1, 1, 0, 0, 0, 0, time.UTC)
	if !strings.Contains(string(body), next.Format(time.RFC3339)) {
		t.Errorf("message does not name the reset %s: %s", next.Format(time.RFC3339), body)
	}
	if n := b.count(t, "SELECT count(*) FROM emails WHERE app_id = $1", id); n != 2 {
		t.Errorf("emails stored = %d, want 2", n)
	}
	// The refused email did not count against the daily limit either.
	if n := b.count(t, "SELECT count::int FROM app_usage WHERE app_id = $1 AND period = 'day'", id); n != 2 {
		t.Errorf("daily usage = %d, want 2", n)
	}
	b.patchApp(t, id, map[string]any{"monthly_limit": 3})
	b.send(t, key, emailReq(nil))
	resp, body = b.do(t, http.MethodPost, "/v1/emails", key, emailReq(nil), nil)
	expectQuotaExceeded(t, resp, body, "monthly limit of 3", 31*24*time.Hour)
}

func TestLimitIdempotentReplay(t *testing.T) {
	t.Parallel()
	b := setup(t)
	id, key := b.createAppWith(t, map[string]any{"name": "limited", "daily_limit": 2})

	req := emailReq(nil)
	hdr := map[string]string{"Idempotency-Key": "order-1"}
	resp, body := b.do(t, http.MethodPost, "/v1/emails", key, req, hdr)
	expectStatus(t, resp, body, http.StatusAccepted)
	first := decode[accepted](t, body)
	for range 3 {
		resp, body = b.do(t, http.MethodPost, "/v1/emails", key, req, hdr)
		expectStatus(t, resp, body, http.StatusAccepted)
		if got := decode[accepted](t, body); got.ID != first.ID {
			t.Errorf("replay returned %s, want %s", got.ID, first.ID)
		}
	}
	if n := b.count(t, "SELECT count::int FROM app_usage WHERE app_id = $1 AND period = 'day'", id); n != 1 {
		t.Errorf("daily usage after replays = %d, want 1", n)
	}
	b.send(t, key, emailReq(nil))
	resp, body = b.do(t, http.MethodPost, "/v1/emails", key, emailReq(nil), map[string]string{"Idempotency-Key": "order-2"})
	expectQuotaExceeded(t, resp, body, "daily limit of 2", 24*time.Hour)
	// A refused request stores no response: once the limit allows, the same key succeeds.
	b.patchApp(t, id, map[string]any{"daily_limit": 3})
	resp, body = b.do(t, http.MethodPost, "/v1/emails", key, emailReq(nil), map[string]string{"Idempotency-Key": "order-2"})
	expectStatus(t, resp, body, http.StatusAccepted)
}

func TestLimitConcurrent(t *testing.T) {
	t.Parallel()
	b := setup(t)
	id, key := b.createAppWith(t, map[string]any{"name": "limited", "daily_limit": 10, "monthly_limit": 15})
	payload, err := json.Marshal(emailReq(nil))
	if err != nil {
		t.Fatal(err)
	}

	var (
		wg       sync.WaitGroup
		mu       sync.Mutex
		statuses = map[int]int{}
	)
	start := make(chan struct{})
	for range 20 {
		wg.Go(func() {
			<-start
			req, err := http.NewRequestWithContext(t.Context(), http.MethodPost, b.srv.URL+"/v1/emails", bytes.NewReader(payload))
			if err != nil {
				t.Error(err)
				return
			}
			req.Header.Set("Authorization", "Bearer "+key)
			req.Header.Set("Content-Type", "application/json")
			resp, err := b.client.Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusAccepted && resp.StatusCode != http.StatusTooManyRequests {
				t.Errorf("status %d: %s", resp.StatusCode, body)
			}
			mu.Lock()
			statuses[resp.StatusCode]++
			mu.Unlock()
		})
	}
	close(start)
	wg.Wait()
	if statuses[http.StatusAccepted] != 10 || statuses[http.StatusTooManyRequests] != 10 {
		t.Errorf("statuses = %v, want 10 accepted and 10 refused", statuses)
	}
	if n := b.count(t, "SELECT count(*) FROM emails WHERE app_id = $1", id); n != 10 {
		t.Errorf("emails stored = %d, want 10", n)
	}
	if n := b.count(t, "SELECT count::int FROM app_usage WHERE app_id = $1 AND period = 'day'", id); n != 10 {
		t.Errorf("daily usage = %d, want 10", n)
	}
	if n := b.count(t, "SELECT count::int FROM app_usage WHERE app_id = $1 AND period = 'month'", id); n != 10 {
		t.Errorf("monthly usage = %d, want 10 (refusals give their count back)", n)
	}
}
