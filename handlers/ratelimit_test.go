package handlers_test

import (
	"net/http"
	"strconv"
	"testing"
	"time"

	"github.com/google/uuid"
)

// rateHeaders returns the X-RateLimit-* headers of resp (-1 when absent).
func rateHeaders(resp *http.Response) (limit, remaining int, reset int64) {
	num := func(name string) int64 {
		v, err := strconv.ParseInt(resp.Header.Get(name), 10, 64)
		if err != nil {
			return -1
		}
		return v
	}
	return int(num("X-RateLimit-Limit")), int(num("X-RateLimit-Remaining")), num("X-RateLimit-Reset")
}

// TestAPIRateLimitHeaders checks every response to an API key carries its
// limit (the default, 1,000/s), successes and errors alike, and that
// admin-secret requests are not limited per key.
func TestAPIRateLimitHeaders(t *testing.T) {
	t.Parallel()
	b := setup(t)
	resp, body := b.do(t, http.MethodPost, "/v1/apps", adminSecret, map[string]any{"name": "headers"}, nil)
	expectStatus(t, resp, body, http.StatusCreated)
	if resp.Header.Get("X-RateLimit-Limit") != "" {
		t.Errorf("admin request got X-RateLimit-Limit %q", resp.Header.Get("X-RateLimit-Limit"))
	}
	_, key := b.createApp(t, "headers app", false)

	resp, body = b.do(t, http.MethodGet, "/v1/emails", key, nil, nil)
	expectStatus(t, resp, body, http.StatusOK)
	limit, remaining, reset := rateHeaders(resp)
	now := time.Now().Unix()
	if limit != 1000 || remaining < 990 || remaining > 999 || reset < now || reset > now+2 {
		t.Errorf("success: X-RateLimit-Limit %d, -Remaining %d, -Reset %d (now %d)", limit, remaining, reset, now)
	}
	resp, body = b.do(t, http.MethodGet, "/v1/emails/"+uuid.NewString(), key, nil, nil)
	expectError(t, resp, body, http.StatusNotFound, "not_found", "")
	if l, r, _ := rateHeaders(resp); l != 1000 || r < 0 || r > 999 {
		t.Errorf("error: X-RateLimit-Limit %d, -Remaining %d", l, r)
	}
}

// TestAPIRateLimit checks a key's own rate_limit: past it the API answers
// 429 with Retry-After, other keys are not affected, and the key recovers
// at its rate.
func TestAPIRateLimit(t *testing.T) {
	t.Parallel()
	b := setup(t)
	appID, other := b.createApp(t, "limited", false)
	key := b.insertKey(t, appID, []string{"email:read"}, nil, nil)
	b.exec(t, "UPDATE api_keys SET rate_limit = 3 WHERE app_id = $1 AND name = 'test key'", appID)

	for i := range 3 {
		resp, body := b.do(t, http.MethodGet, "/v1/emails", key, nil, nil)
		expectStatus(t, resp, body, http.StatusOK)
		if l, r, _ := rateHeaders(resp); l != 3 || r != 2-i {
			t.Fatalf("request %d: X-RateLimit-Limit %d, -Remaining %d; want 3 and %d", i+1, l, r, 2-i)
		}
	}
	resp, body := b.do(t, http.MethodGet, "/v1/emails", key, nil, nil)
	expectError(t, resp, body, http.StatusTooManyRequests, "rate_limited", noField)
	if ra := resp.Header.Get("Retry-After"); ra != "1" {
		t.Errorf("Retry-After %q, want 1 (a token every 1/3 s)", ra)
	}
	if l, r, reset := rateHeaders(resp); l != 3 || r != 0 || reset < time.Now().Unix() {
		t.Errorf("429: X-RateLimit-Limit %d, -Remaining %d, -Reset %d", l, r, reset)
	}
	// The app's other key has its own bucket, at the default.
	resp, body = b.do(t, http.MethodGet, "/v1/emails", other, nil, nil)
	expectStatus(t, resp, body, http.StatusOK)
	if l, _, _ := rateHeaders(resp); l != 1000 {
		t.Errorf("other key: X-RateLimit-Limit %d, want the default 1000", l)
	}
	time.Sleep(400 * time.Millisecond)
	resp, body = b.do(t, http.MethodGet, "/v1/emails", key, nil, nil)
	expectStatus(t, resp, body, http.StatusOK)
}
