package store_test

import (
	"errors"
	"fmt"
	"slices"
	"sync"
	"testing"

	"github.com/google/uuid"

	"github.com/mailqueue/mailqueue/store"
	"github.com/mailqueue/mailqueue/testenv"
)

// counts returns how many emails, events and jobs the database holds.
func (e *env) counts(t *testing.T) (emails, events, jobs int) {
	t.Helper()
	if err := e.pool.QueryRow(t.Context(),
		`SELECT (SELECT count(*) FROM emails), (SELECT count(*) FROM email_events), (SELECT count(*) FROM river_job)`).
		Scan(&emails, &events, &jobs); err != nil {
		t.Fatal(err)
	}
	return emails, events, jobs
}

func (e *env) suppress(t *testing.T, appID *uuid.UUID, addrs ...string) {
	t.Helper()
	var entries []store.SuppressionEntry
	for _, a := range addrs {
		entries = append(entries, store.SuppressionEntry{Email: a, Reason: store.ReasonManual})
	}
	if _, err := e.st.SuppressionInsert(t.Context(), &store.SuppressionInsertParams{AppID: appID, Entries: entries}); err != nil {
		t.Fatal(err)
	}
}

// A group stores each email as EmailInsert would: its own job, its events,
// and only its own suppressed recipients dropped, each app by its own list.
// Groups of four and more are written with COPY, smaller ones with a
// statement per email: both are checked.
func TestEmailAcceptGroupStoresEachEmail(t *testing.T) {
	t.Parallel()
	for _, split := range [][]int{{4}, {3, 1}} {
		t.Run(fmt.Sprint(split), func(t *testing.T) {
			t.Parallel()
			testEmailAcceptGroup(t, split)
		})
	}
}

func testEmailAcceptGroup(t *testing.T, split []int) {
	e := newEnv(t)
	ctx := t.Context()
	a, b := e.app(t, "a"), e.app(t, "b")
	qa, qb := e.queue(t, a.ID, "default"), e.queue(t, b.ID, "default")
	e.suppress(t, &a.ID, "gone@example.com")

	plain := emailParams(a.ID, qa, "one@example.com")
	partly := emailParams(a.ID, qa, "two@example.com")
	partly.Cc = []store.Address{{Email: "Gone@example.com"}}
	whole := emailParams(a.ID, qa, "gone@example.com")
	otherApp := emailParams(b.ID, qb, "gone@example.com") // not on b's list
	otherApp.Priority = 9
	ps := []*store.EmailInsertParams{plain, partly, whole, otherApp}

	var res []store.AcceptResult
	rest := ps
	for _, n := range split {
		r, err := e.st.EmailAcceptGroup(ctx, rest[:n])
		if err != nil {
			t.Fatalf("EmailAcceptGroup: %v", err)
		}
		if len(r) != n {
			t.Fatalf("%d results for %d emails", len(r), n)
		}
		res, rest = append(res, r...), rest[n:]
	}
	jobIDs := map[int64]bool{}
	for i, r := range res {
		if r.Err != nil || r.Email == nil {
			t.Fatalf("result %d: %+v", i, r)
		}
		got, err := e.st.EmailGet(ctx, ps[i].AppID, r.Email.ID)
		if err != nil {
			t.Fatalf("EmailGet %d: %v", i, err)
		}
		if got.Status != r.Email.Status {
			t.Errorf("email %d stored %s, returned %s", i, got.Status, r.Email.Status)
		}
		if r.Email.JobID != nil {
			if jobIDs[*r.Email.JobID] {
				t.Errorf("email %d shares job %d", i, *r.Email.JobID)
			}
			jobIDs[*r.Email.JobID] = true
			var emailID uuid.UUID
			if err := e.pool.QueryRow(ctx, `SELECT (args->>'email_id')::uuid FROM river_job WHERE id = $1`, *r.Email.JobID).Scan(&emailID); err != nil || emailID != r.Email.ID {
				t.Errorf("email %d: job %d is for %s (%v)", i, *r.Email.JobID, emailID, err)
			}
		}
	}
	want := []struct {
		status string
		job    bool
		events []string
		to, cc int
	}{
		{store.StatusQueued, true, []string{"queued"}, 1, 0},
		{store.StatusQueued, true, []string{"queued", "suppressed"}, 1, 0},
		{store.StatusCancelled, false, []string{"suppressed"}, 1, 0},
		{store.StatusQueued, true, []string{"queued"}, 1, 0},
	}
	for i, w := range want {
		em := res[i].Email
		if em.Status != w.status || (em.JobID != nil) != w.job || len(em.To) != w.to || len(em.Cc) != w.cc {
			t.Errorf("email %d: status %s job %v to %v cc %v; want %+v", i, em.Status, em.JobID, em.To, em.Cc, w)
		}
		if types := e.eventTypes(t, ps[i].AppID, em.ID); !slices.Equal(types, w.events) {
			t.Errorf("email %d events %v, want %v", i, types, w.events)
		}
	}
	if len(res[1].Email.Suppressed) != 1 || len(res[2].Email.Suppressed) != 1 || len(res[0].Email.Suppressed) != 0 {
		t.Errorf("suppressed: %v / %v / %v", res[0].Email.Suppressed, res[1].Email.Suppressed, res[2].Email.Suppressed)
	}
	var queue string
	if err := e.pool.QueryRow(ctx, `SELECT queue FROM river_job WHERE id = $1`, *res[3].Email.JobID).Scan(&queue); err != nil || queue != "critical" {
		t.Errorf("priority 9 email's job in lane %q (%v)", queue, err)
	}
}

// An app's quota is taken per email, in order: the emails that fit are
// stored, the rest refused, and other apps' emails in the group are not
// affected.
func TestEmailAcceptGroupQuota(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := t.Context()
	day, month := int32(5), int32(3)
	limited, err := e.st.AppInsert(ctx, &store.AppInsertParams{Name: "limited", DailyLimit: &day, MonthlyLimit: &month})
	if err != nil {
		t.Fatal(err)
	}
	free := e.app(t, "free")
	ql, qf := e.queue(t, limited.ID, "default"), e.queue(t, free.ID, "default")
	var ps []*store.EmailInsertParams
	for i := range 5 {
		ps = append(ps, emailParams(limited.ID, ql, fmt.Sprintf("l%d@example.com", i)))
		ps = append(ps, emailParams(free.ID, qf, fmt.Sprintf("f%d@example.com", i)))
	}
	res, err := e.st.EmailAcceptGroup(ctx, ps)
	if err != nil {
		t.Fatalf("EmailAcceptGroup: %v", err)
	}
	stored := 0
	for i, r := range res {
		var quota *store.QuotaError
		switch {
		case ps[i].AppID == free.ID && r.Err != nil:
			t.Errorf("free app's email %d refused: %v", i, r.Err)
		case ps[i].AppID == limited.ID && stored < 3:
			if r.Err != nil {
				t.Errorf("limited app's email %d refused: %v", i, r.Err)
			}
			stored++
		case ps[i].AppID == limited.ID:
			// The day would allow it; the month refuses it, and the day
			// counted for it is given back.
			if !errors.As(r.Err, &quota) || quota.Period != store.PeriodMonth || r.Email != nil {
				t.Errorf("limited app's email %d: %+v, want the monthly quota error", i, r)
			}
		}
	}
	rows, err := e.pool.Query(ctx, `SELECT period, count FROM app_usage WHERE app_id = $1 ORDER BY period`, limited.ID)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	got := map[string]int64{}
	for rows.Next() {
		var p string
		var n int64
		if err := rows.Scan(&p, &n); err != nil {
			t.Fatal(err)
		}
		got[p] = n
	}
	if got[store.PeriodDay] != 3 || got[store.PeriodMonth] != 3 {
		t.Errorf("usage %v, want day 3 and month 3", got)
	}
	if emails, _, _ := e.counts(t); emails != 8 {
		t.Errorf("%d emails stored, want 8", emails)
	}
}

// A group that fails stores nothing; AcceptWriter then stores the emails
// one by one, so only the bad one fails.
func TestEmailAcceptGroupFailureStoresNothing(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	app := e.app(t, "a")
	q := e.queue(t, app.ID, "default")
	bad := emailParams(app.ID, q, "bad@example.com")
	bad.Priority = 0 // the priority check refuses it
	ps := []*store.EmailInsertParams{emailParams(app.ID, q, "ok@example.com"), bad}
	if _, err := e.st.EmailAcceptGroup(t.Context(), ps); err == nil {
		t.Fatal("a group with a bad email succeeded")
	}
	if emails, events, jobs := e.counts(t); emails+events+jobs != 0 {
		t.Errorf("after a failed group: %d emails, %d events, %d jobs; want none", emails, events, jobs)
	}
}

// Concurrent accepts through the writer each get their own outcome, and
// each answered email is stored once.
func TestAcceptWriterConcurrent(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := t.Context()
	app := e.app(t, "a")
	q := e.queue(t, app.ID, "default")
	w := store.NewAcceptWriter(e.st, testenv.Logger(t), 8)
	w.Start()

	const n = 40
	var wg sync.WaitGroup
	results := make([]store.AcceptResult, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := emailParams(app.ID, q, fmt.Sprintf("r%d@example.com", i))
			if i%10 == 3 {
				p.Priority = 0
			}
			em, err := w.Accept(ctx, p)
			results[i] = store.AcceptResult{Email: em, Err: err}
		}()
	}
	wg.Wait()
	w.Stop()
	// Stopped, it still accepts, one by one.
	if _, err := w.Accept(ctx, emailParams(app.ID, q, "late@example.com")); err != nil {
		t.Errorf("Accept after Stop: %v", err)
	}

	ok := 0
	for i, r := range results {
		if i%10 == 3 {
			if r.Err == nil {
				t.Errorf("bad email %d accepted", i)
			}
			continue
		}
		if r.Err != nil || r.Email == nil || r.Email.JobID == nil {
			t.Errorf("email %d: %+v", i, r)
			continue
		}
		if _, err := e.st.EmailGet(ctx, app.ID, r.Email.ID); err != nil {
			t.Errorf("email %d not stored: %v", i, err)
		}
		ok++
	}
	if emails, events, jobs := e.counts(t); emails != ok+1 || events != ok+1 || jobs != ok+1 {
		t.Errorf("%d emails, %d events, %d jobs; want %d of each", emails, events, jobs, ok+1)
	}
}

// TestInsertIntoDeletedQueueRefused checks that every insert path holds its
// queue: once the queue is deleted, a single insert, an accept, a group
// accept and a batch into it are all refused with ErrQueueChanged and store
// nothing, so a deletion that found the queue empty stays true.
func TestInsertIntoDeletedQueueRefused(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := t.Context()
	app := e.app(t, "deleted queue")
	q := e.queue(t, app.ID, "gone")
	if err := e.st.QueueDelete(ctx, app.ID, q.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := e.st.EmailInsert(ctx, emailParams(app.ID, q, "a@example.com")); !errors.Is(err, store.ErrQueueChanged) {
		t.Errorf("EmailInsert: %v, want ErrQueueChanged", err)
	}
	if _, err := e.st.EmailAccept(ctx, emailParams(app.ID, q, "b@example.com")); !errors.Is(err, store.ErrQueueChanged) {
		t.Errorf("EmailAccept: %v, want ErrQueueChanged", err)
	}
	res, err := e.st.EmailAcceptGroup(ctx, []*store.EmailInsertParams{emailParams(app.ID, q, "c@example.com")})
	if err != nil || len(res) != 1 || !errors.Is(res[0].Err, store.ErrQueueChanged) {
		t.Errorf("EmailAcceptGroup: %+v, %v; want ErrQueueChanged for the email", res, err)
	}
	batchID, _ := store.NewID()
	_, err = e.st.EmailInsertBatch(ctx, &store.EmailBatchInsertParams{
		AppID: app.ID, Queue: q, BatchID: batchID, MessageIDDomain: "mq.example.com",
		From: store.Address{Email: "news@example.com"}, Priority: 5,
		Emails: []store.BatchEmail{{To: store.Address{Email: "d@example.com"}, Subject: "s"}},
	})
	if !errors.Is(err, store.ErrQueueChanged) {
		t.Errorf("EmailInsertBatch: %v, want ErrQueueChanged", err)
	}
	var n int
	if err := e.pool.QueryRow(ctx, "SELECT count(*) FROM emails WHERE queue_id = $1", q.ID).Scan(&n); err != nil || n != 0 {
		t.Errorf("%d emails stored in the deleted queue (%v), want 0", n, err)
	}
}
