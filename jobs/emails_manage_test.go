package jobs_test

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/riverqueue/river/rivertype"

	"github.com/mailqueue/mailqueue/store"
)

// A dead email retried through the store gets a new job and a fresh attempt
// series; an expired one is sent for real once retried.
func TestRetryDeadEmail(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOptions{maxRetries: 0, retryDelay: []int32{1}})

	// tempfail@ with no retries left: dead after one attempt.
	failed := h.insert(t, h.params("tempfail@example.com"))
	h.waitStatus(t, failed.ID, store.StatusFailed)
	h.waitJob(t, *failed.JobID, rivertype.JobStateDiscarded, rivertype.JobStateCancelled)
	again, err := h.st.EmailRetry(t.Context(), h.app.ID, failed.ID, time.Now())
	if err != nil {
		t.Fatalf("EmailRetry: %v", err)
	}
	if again.Status != store.StatusQueued || again.RetryCount != 0 || again.LastError != nil || *again.JobID == *failed.JobID {
		t.Errorf("retried = status %s retry_count %d last_error %v job %d; want queued, 0, none, a new job",
			again.Status, again.RetryCount, deref(again.LastError), *again.JobID)
	}
	dead := h.waitEmail(t, failed.ID, "failed again", func(e *store.Email) bool {
		return e.Status == store.StatusFailed && e.UpdatedAt.After(again.UpdatedAt)
	})
	if dead.RetryCount != 1 {
		t.Errorf("retry_count = %d, want 1: the retry is a new series of one attempt", dead.RetryCount)
	}
	want := []string{"queued", "failed", "retried", "failed"}
	if types := eventTypes(h.events(t, failed.ID)); !slices.Equal(types, want) {
		t.Errorf("events = %v, want %v", types, want)
	}

	// An expired email, retried, goes out.
	p := h.params("late@example.com")
	p.ExpiresAt = ptr(time.Now().Add(time.Hour))
	expired := h.insertLater(t, p)
	h.exec(t, `UPDATE emails SET expires_at = now() - interval '1 second' WHERE id = $1`, expired.ID)
	h.runNow(t, *expired.JobID)
	h.waitStatus(t, expired.ID, store.StatusExpired)
	if _, err := h.st.EmailRetry(t.Context(), h.app.ID, expired.ID, time.Now()); err != nil {
		t.Fatalf("EmailRetry: %v", err)
	}
	sent := h.waitStatus(t, expired.ID, store.StatusSent)
	if sent.ExpiresAt != nil {
		t.Errorf("expires_at = %v after the retry, want cleared", *sent.ExpiresAt)
	}
	if msgs := h.sink.Messages(); len(msgs) != 1 || !slices.Equal(msgs[0].To, []string{"late@example.com"}) {
		t.Errorf("sink got %d messages, want the expired email once", len(msgs))
	}

	// Anything not dead is refused.
	var st *store.InvalidStateError
	if _, err := h.st.EmailRetry(t.Context(), h.app.ID, expired.ID, time.Now()); !errors.As(err, &st) || st.Status != store.StatusSent {
		t.Errorf("retrying a sent email: %v, want an invalid state error (sent)", err)
	}
}

func ptr[T any](v T) *T { return &v }

// A cancel and a worker taking the same email at the same moment: either
// the cancel wins and nothing is sent, or the worker wins and the cancel is
// refused. Never both, never a cancelled email in the sink.
func TestCancelRacesWorker(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOptions{maxRetries: 1})
	const n = 20
	emails := make([]*store.Email, n)
	for i := range emails {
		emails[i] = h.insertLater(t, h.params(fmt.Sprintf("rcpt%d@example.com", i)))
	}
	cancelled := make([]bool, n)
	// The first half: the worker has the email before the cancel comes,
	// which must be refused.
	for _, e := range emails[:n/2] {
		h.runNow(t, *e.JobID)
	}
	for _, e := range emails[:n/2] {
		h.waitEmail(t, e.ID, "taken by a worker", func(e *store.Email) bool { return e.Status != store.StatusQueued })
		_, err := h.st.EmailCancel(t.Context(), h.app.ID, e.ID, time.Now())
		var st *store.InvalidStateError
		if !errors.As(err, &st) {
			t.Errorf("cancelling an email a worker has: %v, want an invalid state error", err)
		}
	}
	// The second half: both at once.
	var wg sync.WaitGroup
	for i, e := range emails {
		if i < n/2 {
			continue
		}
		wg.Go(func() { h.runNow(t, *e.JobID) })
		wg.Go(func() {
			// Staggered, so that some workers get there first and some
			// cancels do; the checks below hold whichever way each goes.
			time.Sleep(time.Duration(i-n/2) * 3 * time.Millisecond)
			_, err := h.st.EmailCancel(t.Context(), h.app.ID, e.ID, time.Now())
			var st *store.InvalidStateError
			switch {
			case err == nil:
				cancelled[i] = true
			case !errors.As(err, &st):
				t.Errorf("EmailCancel: %v", err)
			}
		})
	}
	wg.Wait()

	sentTo := map[string]bool{}
	for i, e := range emails {
		got := h.waitEmail(t, e.ID, "settled", func(e *store.Email) bool {
			return e.Status == store.StatusCancelled || e.Status == store.StatusSent
		})
		if cancelled[i] != (got.Status == store.StatusCancelled) {
			t.Errorf("email %d: cancel succeeded %v but status %s", i, cancelled[i], got.Status)
		}
		if got.Status == store.StatusCancelled {
			h.waitJob(t, *e.JobID, rivertype.JobStateCancelled, rivertype.JobStateCompleted)
		}
	}
	// Every job has finished: whatever the sink has now is final.
	for _, m := range h.sink.Messages() {
		sentTo[m.To[0]] = true
	}
	for i := range emails {
		if rcpt := fmt.Sprintf("rcpt%d@example.com", i); cancelled[i] && sentTo[rcpt] {
			t.Errorf("email %d was cancelled and sent", i)
		} else if !cancelled[i] && !sentTo[rcpt] {
			t.Errorf("email %d was neither cancelled nor sent", i)
		}
	}
	won := 0
	for _, c := range cancelled {
		if c {
			won++
		}
	}
	t.Logf("%d of %d racing cancels won", won, n-n/2)
}
