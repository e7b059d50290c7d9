package jobs_test

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

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

// TestEmailReaderBatches reads many emails at once through the reader: each
// worker gets its own email, an unknown id is ErrNotFound, and the read
// says whether a recipient is suppressed (app or global list, any case,
// expired entries ignored), so the worker asks which only then.
func TestEmailReaderBatches(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOptions{maxRetries: 3})
	ctx := t.Context()
	const n = 60
	emails := make([]*store.Email, n)
	for i := range emails {
		rcpt := fmt.Sprintf("r%d@example.com", i)
		switch i {
		case 1:
			rcpt = "Own@Example.com"
		case 2:
			rcpt = "global@example.com"
		case 3:
			rcpt = "expired@example.com"
		}
		p := h.params(rcpt)
		if i == 4 { // suppressed in bcc only
			p.Bcc = []store.Address{{Email: "own@example.com"}}
		}
		emails[i] = h.insertLater(t, p)
	}
	// Listed after the emails were accepted, as if between accept and send.
	past := time.Now().Add(-time.Hour)
	if _, err := h.st.SuppressionInsert(ctx, &store.SuppressionInsertParams{AppID: &h.app.ID, Entries: []store.SuppressionEntry{
		{Email: "own@example.com", Reason: "manual"}, {Email: "expired@example.com", Reason: "manual", ExpiresAt: &past},
	}}); err != nil {
		t.Fatal(err)
	}
	if _, err := h.st.SuppressionInsert(ctx, &store.SuppressionInsertParams{Entries: []store.SuppressionEntry{
		{Email: "global@example.com", Reason: "manual"},
	}}); err != nil {
		t.Fatal(err)
	}
	r := jobs.NewEmailReader(h.st, testenv.Logger(t), 16)
	r.Start()
	defer r.Stop()

	var wg sync.WaitGroup
	got := make([]*store.EmailForSend, n)
	errs := make([]error, n)
	var missingErr error
	wg.Add(n + 1)
	for i, e := range emails {
		go func() {
			defer wg.Done()
			got[i], errs[i] = r.Get(ctx, e.ID)
		}()
	}
	go func() {
		defer wg.Done()
		id, _ := store.NewID()
		_, missingErr = r.Get(ctx, id)
	}()
	wg.Wait()
	for i, e := range emails {
		if errs[i] != nil || got[i] == nil || got[i].ID != e.ID || got[i].To[0].Email != e.To[0].Email {
			t.Fatalf("email %d: got %+v, err %v", i, got[i], errs[i])
		}
		want := i == 1 || i == 2 || i == 4
		if got[i].AnySuppressed != want {
			t.Errorf("email %d (%s): AnySuppressed %v, want %v", i, e.To[0].Email, got[i].AnySuppressed, want)
		}
		if got[i].QueueName != "default" || !got[i].AppIsActive {
			t.Errorf("email %d: queue %q, app active %v", i, got[i].QueueName, got[i].AppIsActive)
		}
	}
	if !errors.Is(missingErr, store.ErrNotFound) {
		t.Errorf("unknown id: err %v, want ErrNotFound", missingErr)
	}
}
