package store_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"

	"github.com/mailqueue/mailqueue/jobs"
	"github.com/mailqueue/mailqueue/store"
	"github.com/mailqueue/mailqueue/testenv"
)

// env is a fresh database with a Store whose enqueuer inserts real River
// jobs through an insert-only client (no queues, no workers: nothing runs).
type env struct {
	pool *pgxpool.Pool
	st   *store.Store
}

func newEnv(t *testing.T) *env {
	t.Helper()
	pool := testenv.DB(t)
	client, err := river.NewClient(riverpgxv5.New(pool), &river.Config{Logger: testenv.Logger(t), TestOnly: true})
	if err != nil {
		t.Fatalf("creating insert-only River client: %v", err)
	}
	return &env{pool: pool, st: store.New(pool, jobs.NewEnqueuer(client))}
}

func (e *env) app(t *testing.T, name string) *store.App {
	t.Helper()
	a, err := e.st.AppInsert(t.Context(), &store.AppInsertParams{Name: name})
	if err != nil {
		t.Fatalf("AppInsert(%s): %v", name, err)
	}
	return a
}

func (e *env) queue(t *testing.T, appID uuid.UUID, name string) *store.Queue {
	t.Helper()
	q, err := e.st.QueueInsert(t.Context(), &store.QueueInsertParams{
		AppID: appID, Name: name, Priority: 5, MaxRetries: 2, RetryDelay: []int32{1, 5},
	})
	if err != nil {
		t.Fatalf("QueueInsert(%s): %v", name, err)
	}
	return q
}

// v7At returns a UUIDv7 whose timestamp is at (to the millisecond).
func v7At(at time.Time) uuid.UUID {
	id := uuid.Must(uuid.NewV7())
	ms := at.UnixMilli()
	for i := range 6 {
		id[i] = byte(ms >> (40 - 8*i))
	}
	return id
}

func TestNewLoadsEveryQuery(t *testing.T) {
	t.Parallel()
	// loadQueries panics on a missing, duplicate or unused query block.
	defer func() {
		if r := recover(); r != nil {
			t.Fatalf("store.New panicked loading sql/queries: %v", r)
		}
	}()
	if store.New(nil, nil) == nil {
		t.Fatal("store.New returned nil")
	}
}

func TestIDTime(t *testing.T) {
	t.Parallel()
	before := time.Now().Truncate(time.Millisecond)
	id, at := store.NewID()
	after := time.Now()
	if id.Version() != 7 {
		t.Fatalf("NewID version %d, want 7", id.Version())
	}
	if got := store.IDTime(id); !got.Equal(at) {
		t.Errorf("IDTime(NewID()) = %s, NewID said %s", got, at)
	}
	if at.Before(before) || at.After(after) {
		t.Errorf("NewID time %s outside [%s, %s]", at, before, after)
	}
	if at.Location() != time.UTC {
		t.Errorf("IDTime location %s, want UTC", at.Location())
	}

	want := time.Date(2031, 2, 3, 4, 5, 6, 789_000_000, time.UTC)
	if got := store.IDTime(v7At(want.Add(456 * time.Microsecond))); !got.Equal(want) {
		t.Errorf("IDTime of a v7 made at %s = %s, want it to the millisecond", want, got)
	}
	for _, id := range []uuid.UUID{uuid.New(), uuid.Nil, uuid.Max} {
		if got := store.IDTime(id); !got.IsZero() {
			t.Errorf("IDTime(%s) (version %d) = %s, want zero", id, id.Version(), got)
		}
	}
}

func TestAppInsertAndGet(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := t.Context()
	desc, limit, rate := "transactional mail", int32(1000), 50
	a, err := e.st.AppInsert(ctx, &store.AppInsertParams{
		Name: "shop", Description: &desc, DailyLimit: &limit, Settings: store.AppSettings{RateLimit: &rate},
	})
	if err != nil {
		t.Fatal(err)
	}
	if a.ID.Version() != 7 || !a.IsActive || a.SandboxMode {
		t.Errorf("new app %+v: want a v7 id, active, not sandboxed", a)
	}
	got, err := e.st.AppGet(ctx, a.ID)
	if err != nil {
		t.Fatal(err)
	}
	if got.Name != "shop" || got.Description == nil || *got.Description != desc ||
		got.DailyLimit == nil || *got.DailyLimit != limit || got.Settings.RateLimit == nil || *got.Settings.RateLimit != rate {
		t.Errorf("AppGet = %+v, want what was inserted", got)
	}
	if _, err := e.st.AppGet(ctx, uuid.New()); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("AppGet(unknown) error %v, want ErrNotFound", err)
	}
}

func TestQueueInsert(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := t.Context()
	appA, appB := e.app(t, "a"), e.app(t, "b")

	q, err := e.st.QueueInsert(ctx, &store.QueueInsertParams{AppID: appA.ID, Name: "default", Priority: 5, MaxRetries: 5})
	if err != nil {
		t.Fatal(err)
	}
	if len(q.RetryDelay) != len(store.DefaultRetryDelay) || q.RetryDelay[0] != store.DefaultRetryDelay[0] {
		t.Errorf("queue without retry_delay got %v, want the default %v", q.RetryDelay, store.DefaultRetryDelay)
	}
	if got, err := e.st.QueueGetByName(ctx, appA.ID, "default"); err != nil || got.ID != q.ID {
		t.Errorf("QueueGetByName = %v, %v; want queue %s", got, err, q.ID)
	}
	if _, err := e.st.QueueGet(ctx, appB.ID, q.ID); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("QueueGet with another app's id: %v, want ErrNotFound", err)
	}

	_, err = e.st.QueueInsert(ctx, &store.QueueInsertParams{AppID: appA.ID, Name: "default", Priority: 5})
	if !errors.Is(err, store.ErrConflict) {
		t.Errorf("duplicate queue name: %v, want ErrConflict", err)
	}
	// Another app may use the same name.
	if _, err := e.st.QueueInsert(ctx, &store.QueueInsertParams{AppID: appB.ID, Name: "default", Priority: 5}); err != nil {
		t.Errorf("same name in another app: %v", err)
	}

	cfgID, _ := store.NewID()
	if _, err := e.pool.Exec(ctx, `INSERT INTO smtp_configs (id, app_id, name, host, port) VALUES ($1, $2, 'relay', 'smtp.example.com', 587)`,
		cfgID, appA.ID); err != nil {
		t.Fatal(err)
	}
	_, err = e.st.QueueInsert(ctx, &store.QueueInsertParams{AppID: appB.ID, Name: "stolen", Priority: 5, SMTPConfigID: &cfgID})
	if !errors.Is(err, store.ErrNotFound) {
		t.Errorf("queue of app B with app A's smtp config: %v, want ErrNotFound", err)
	}
	if _, err := e.st.QueueGetByName(ctx, appB.ID, "stolen"); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("the refused queue exists: %v", err)
	}
	own, err := e.st.QueueInsert(ctx, &store.QueueInsertParams{AppID: appA.ID, Name: "relayed", Priority: 5, SMTPConfigID: &cfgID})
	if err != nil {
		t.Fatalf("queue with its own app's smtp config: %v", err)
	}
	if own.SMTPConfigID == nil || *own.SMTPConfigID != cfgID {
		t.Errorf("smtp_config_id = %v, want %s", own.SMTPConfigID, cfgID)
	}
}

func TestTxRollsBackOnError(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := t.Context()
	boom := errors.New("boom")
	var id uuid.UUID
	err := e.st.Tx(ctx, func(tx *store.Store) error {
		a, err := tx.AppInsert(ctx, &store.AppInsertParams{Name: "doomed"})
		if err != nil {
			return err
		}
		id = a.ID
		// Nested Tx joins the outer transaction.
		return tx.Tx(ctx, func(inner *store.Store) error {
			if _, err := inner.AppGet(ctx, id); err != nil {
				return err
			}
			return boom
		})
	})
	if !errors.Is(err, boom) {
		t.Fatalf("Tx returned %v, want boom", err)
	}
	if _, err := e.st.AppGet(ctx, id); !errors.Is(err, store.ErrNotFound) {
		t.Errorf("app inserted in a rolled-back Tx: %v, want ErrNotFound", err)
	}
}

func TestHealthCountsGet(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := t.Context()
	app := e.app(t, "a")
	q := e.queue(t, app.ID, "default")
	for range 3 {
		if _, err := e.st.EmailInsert(ctx, emailParams(app.ID, q, "rcpt@example.com")); err != nil {
			t.Fatal(err)
		}
	}
	c, err := e.st.HealthCountsGet(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if c.Pending != 3 || c.Running != 0 {
		t.Errorf("HealthCounts = %+v, want 3 pending", c)
	}
}

func TestPing(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if err := e.st.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	if e.st.Pool() != e.pool {
		t.Error("Pool() is not the pool given to New")
	}
}
