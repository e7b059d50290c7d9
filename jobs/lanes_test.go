package jobs_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"

	"github.com/mailqueue/mailqueue/jobs"
	"github.com/mailqueue/mailqueue/store"
)

// TestFastLanePriorityOvertakesFlood is the proof of the priority lanes
// (DESIGN.md, decision 5): with 50,000 priority-3 emails queued and being
// worked, a priority-10 email is sent within seconds, while most of the
// flood is still waiting. Were the lanes one queue, it would wait behind all
// of them (priority 3 and 10 both map to River priority 1 in their lanes).
func TestFastLanePriorityOvertakesFlood(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("inserts 50,000 emails")
	}
	h := newHarness(t, harnessOptions{})
	ctx := t.Context()
	const flood = 50_000

	// The flood goes in the fast way (COPY for the rows, one InsertManyFast
	// for the jobs): what is measured is the sending, not the accepting.
	// Sandbox emails run the whole worker path except SMTP, so the bulk
	// lane drains as fast as the database lets it.
	began := time.Now()
	to, err := json.Marshal([]store.Address{{Email: "bulk@example.com"}})
	if err != nil {
		t.Fatal(err)
	}
	rows := make([][]any, flood)
	params := make([]river.InsertManyParams, flood)
	lane, prio := jobs.Lane(3)
	for i := range rows {
		id, at := store.NewID()
		rows[i] = []any{id, at, h.app.ID, h.queue.ID, id.String() + "@mq.example.com", "sender@example.com",
			json.RawMessage(to), "Bulk", "Hello", true, int16(3), int16(0)}
		params[i] = river.InsertManyParams{
			Args:       jobs.SendArgs{EmailID: id},
			InsertOpts: &river.InsertOpts{Queue: lane, Priority: prio, MaxAttempts: 1},
		}
	}
	if _, err := h.pool.CopyFrom(ctx, pgx.Identifier{"emails"}, []string{
		"id", "created_at", "app_id", "queue_id", "message_id", "from_address", "to_addresses",
		"subject", "text_body", "sandbox", "priority", "max_retries",
	}, pgx.CopyFromRows(rows)); err != nil {
		t.Fatalf("copying the flood: %v", err)
	}
	if _, err := h.client.InsertManyFast(ctx, params); err != nil {
		t.Fatalf("inserting the flood's jobs: %v", err)
	}
	t.Logf("inserted %d priority-3 emails and jobs in %s", flood, time.Since(began).Round(time.Millisecond))

	// Sandbox email goes on from sent to delivered: both count as sent.
	count := func(status string) int {
		t.Helper()
		statuses := []string{status}
		if status == store.StatusSent {
			statuses = append(statuses, store.StatusDelivered)
		}
		var n int
		if err := h.pool.QueryRow(ctx, `SELECT count(*) FROM emails WHERE priority = 3 AND status = ANY($1::email_status[])`, statuses).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n
	}
	// The bulk lane is demonstrably busy before the urgent email arrives.
	deadline := time.Now().Add(waitFor)
	for count(store.StatusSent) < 100 {
		if time.Now().After(deadline) {
			t.Fatalf("the bulk lane sent only %d emails in %s", count(store.StatusSent), waitFor)
		}
		time.Sleep(20 * time.Millisecond)
	}

	p := h.params("urgent@example.com")
	p.Priority = 10
	e := h.insert(t, p)
	got := h.waitStatus(t, e.ID, store.StatusSent)
	queued := got.SentAt.Sub(e.CreatedAt)
	pending, sent := count(store.StatusQueued), count(store.StatusSent)
	t.Logf("priority-10 email queued for %s; flood then: %d sent, %d still queued", queued.Round(time.Millisecond), sent, pending)
	// Generous bounds: the point is "seconds, not the minutes the flood takes".
	if queued > 10*time.Second {
		t.Errorf("priority-10 email waited %s behind the flood", queued)
	}
	if pending < flood/2 {
		t.Errorf("only %d of %d flood emails were still queued when the priority-10 email was sent: it did not overtake them", pending, flood)
	}
}
