package jobs_test

import (
	"errors"
	"slices"
	"testing"
	"time"

	"github.com/mailqueue/mailqueue/bench/smtpsink"
	"github.com/mailqueue/mailqueue/store"
)

// TestProcessingWhileSending checks "processing", which the worker no longer
// writes: while a send is in SMTP's hands (a sink that takes SlowDelay to
// answer DATA) the email reads as processing by id, in lists and in the
// queue's counts; cancelling it is refused and a queue-wide cancel passes
// it by, so it is sent and never marked cancelled; and its events are
// queued then sent.
func TestProcessingWhileSending(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOptions{maxRetries: 1})
	ctx := t.Context()
	later := h.insertLater(t, h.params("later@example.com"))
	e := h.insert(t, h.params("slow@example.com"))

	deadline := time.Now().Add(smtpsink.SlowDelay / 2)
	for {
		got, err := h.st.EmailGet(ctx, h.app.ID, e.ID)
		if err != nil {
			t.Fatal(err)
		}
		if got.Status == store.StatusProcessing {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("status %s, want processing while the sink holds DATA", got.Status)
		}
		time.Sleep(10 * time.Millisecond)
	}
	statuses := func(status string) []string {
		t.Helper()
		s := status
		list, _, err := h.st.EmailList(ctx, &store.EmailListParams{AppID: h.app.ID, Status: &s, Limit: 10})
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, x := range list {
			out = append(out, x.ID.String()+"="+x.Status)
		}
		return out
	}
	if got := statuses(store.StatusProcessing); !slices.Equal(got, []string{e.ID.String() + "=processing"}) {
		t.Errorf("list status=processing: %v, want only the slow email", got)
	}
	if got := statuses(store.StatusQueued); !slices.Equal(got, []string{later.ID.String() + "=queued"}) {
		t.Errorf("list status=queued: %v, want only the scheduled email", got)
	}
	st, err := h.st.QueueStats(ctx, h.app.ID, h.queue.ID)
	if err != nil {
		t.Fatal(err)
	}
	if st.Processing != 1 || st.Scheduled != 1 || st.Pending != 0 {
		t.Errorf("queue stats %+v, want 1 processing, 1 scheduled, 0 pending", st)
	}

	var ise *store.InvalidStateError
	if _, err := h.st.EmailCancel(ctx, h.app.ID, e.ID, time.Now()); !errors.As(err, &ise) || ise.Status != store.StatusProcessing {
		t.Errorf("cancel while sending: %v, want refused as processing", err)
	}
	n, err := h.st.QueueCancelQueued(ctx, h.app.ID, h.queue.ID, map[string]any{"reason": "test"})
	if err != nil || n != 1 {
		t.Errorf("queue cancel: %d, %v; want 1 (the scheduled email only)", n, err)
	}

	h.waitStatus(t, e.ID, store.StatusSent)
	h.waitStatus(t, later.ID, store.StatusCancelled)
	if types := eventTypes(h.events(t, e.ID)); !slices.Equal(types, []string{"queued", "sent"}) {
		t.Errorf("events = %v, want [queued sent]", types)
	}
}
