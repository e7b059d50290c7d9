package jobs_test

import (
	"sync"
	"testing"

	"github.com/mailqueue/mailqueue/jobs"
	"github.com/mailqueue/mailqueue/store"
	"github.com/mailqueue/mailqueue/testenv"
)

// TestTransitionWriterBatches hands many transitions over at once: each is
// applied exactly once and reports so, and a transition that cannot apply
// (an unknown status, refused by the database) fails alone without taking
// its batch down.
func TestTransitionWriterBatches(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOptions{maxRetries: 3})
	const n = 120
	emails := make([]*store.Email, n)
	for i := range emails {
		emails[i] = h.insertLater(t, h.params("batch@example.com"))
	}
	w := jobs.NewTransitionWriter(h.st, testenv.Logger(t), 32)
	w.Start()

	var wg sync.WaitGroup
	moved := make([]bool, n)
	errs := make([]error, n)
	var badErr error
	wg.Add(n + 1)
	for i, e := range emails {
		go func() {
			defer wg.Done()
			moved[i], errs[i] = w.Transition(t.Context(), &store.EmailTransitionParams{
				ID: e.ID, From: []string{store.StatusQueued}, Status: store.StatusProcessing,
				Event: "processing", Data: map[string]any{"attempt": 1},
			})
		}()
	}
	go func() {
		defer wg.Done()
		_, badErr = w.Transition(t.Context(), &store.EmailTransitionParams{
			ID: emails[0].ID, From: []string{store.StatusQueued}, Status: "no-such-status", Event: "processing",
		})
	}()
	wg.Wait()

	for i := range emails {
		if errs[i] != nil || !moved[i] {
			t.Errorf("email %d: moved %v, err %v", i, moved[i], errs[i])
		}
	}
	if badErr == nil {
		t.Error("a transition to an unknown status reported no error")
	}
	// Applied once: a repeat finds nothing in "queued".
	again, err := w.Transition(t.Context(), &store.EmailTransitionParams{
		ID: emails[1].ID, From: []string{store.StatusQueued}, Status: store.StatusProcessing, Event: "processing",
	})
	if err != nil || again {
		t.Errorf("repeat: moved %v, err %v; want false, nil", again, err)
	}
	w.Stop()

	var processing, events int
	if err := h.pool.QueryRow(t.Context(), `SELECT count(*) FROM emails WHERE status = 'processing'`).Scan(&processing); err != nil {
		t.Fatal(err)
	}
	if err := h.pool.QueryRow(t.Context(), `SELECT count(*) FROM email_events WHERE event_type = 'processing'`).Scan(&events); err != nil {
		t.Fatal(err)
	}
	if processing != n || events != n {
		t.Errorf("%d emails processing with %d events, want %d and %d", processing, events, n, n)
	}
}

// A worker that outlives a forced shutdown hands its outcome over after the
// writer stopped: it is written directly instead of panicking on the closed
// channel, and Stop twice is harmless.
func TestTransitionWriterAfterStop(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOptions{maxRetries: 3})
	e := h.insertLater(t, h.params("late@example.com"))
	w := jobs.NewTransitionWriter(h.st, testenv.Logger(t), 8)
	w.Start()
	w.Stop()
	w.Stop()
	moved, err := w.Transition(t.Context(), &store.EmailTransitionParams{
		ID: e.ID, From: []string{store.StatusQueued}, Status: store.StatusProcessing, Event: "processing",
	})
	if err != nil || !moved {
		t.Fatalf("transition after Stop: moved %v, err %v; want true, nil", moved, err)
	}
	got, err := h.st.EmailGet(t.Context(), h.app.ID, e.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Status != store.StatusProcessing {
		t.Errorf("status %s, want processing", got.Status)
	}
}
