package handlers_test

import (
	"net/http"
	"strings"
	"testing"
)

// An email's own priority may raise its urgency, up to the app's
// settings.max_priority.
func TestEmailPriorityWithinAppMax(t *testing.T) {
	t.Parallel()
	b := setup(t)
	capped, key := b.createApp(t, "Capped", false)
	_, freeKey := b.createApp(t, "Free", false)
	b.exec(t, `UPDATE apps SET settings = '{"max_priority": 7}' WHERE id = $1`, capped)
	prio := func(p int) map[string]any { return emailReq(func(m map[string]any) { m["priority"] = p }) }

	resp, body := b.do(t, http.MethodPost, "/v1/emails", key, prio(8), nil)
	expectError(t, resp, body, http.StatusUnprocessableEntity, "validation_failed", "priority")
	if !strings.Contains(string(body), "max_priority of 7") {
		t.Errorf("error does not name the maximum: %s", body)
	}
	if n := b.count(t, "SELECT count(*) FROM emails"); n != 0 {
		t.Errorf("refused email was stored: %d emails", n)
	}

	b.send(t, key, prio(7))
	if n := b.count(t, "SELECT count(*) FROM river_job WHERE queue = 'high'"); n != 1 {
		t.Errorf("priority 7 email: %d jobs in the high lane, want 1", n)
	}
	b.send(t, key, emailReq(nil)) // the queue's priority needs no check
	b.send(t, freeKey, prio(10))  // no maximum set: anything valid goes
	if n := b.count(t, "SELECT count(*) FROM river_job WHERE queue = 'critical'"); n != 1 {
		t.Errorf("priority 10 email: %d jobs in the critical lane, want 1", n)
	}
}
