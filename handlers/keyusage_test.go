package handlers

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/mailqueue/mailqueue/store"
	"github.com/mailqueue/mailqueue/testenv"
)

// TestKeyUsageBatches checks that many uses of many keys reach the
// database as one UPDATE per interval, and that last_used_at is then set.
func TestKeyUsageBatches(t *testing.T) {
	t.Parallel()
	pool := testenv.DB(t)
	st := store.New(pool, nil)
	ctx := t.Context()

	app, err := st.AppInsert(ctx, &store.AppInsertParams{Name: "usage"})
	if err != nil {
		t.Fatalf("inserting app: %v", err)
	}
	var ids []uuid.UUID
	for i := range 3 {
		plain, digest := newAPIKey(false)
		k, err := st.APIKeyInsert(ctx, &store.APIKeyInsertParams{
			AppID: app.ID, Name: "k", Prefix: prefixLive, Hash: digest, Last4: plain[len(plain)-4:],
			Scopes: defaultKeyScopes,
		})
		if err != nil {
			t.Fatalf("inserting key %d: %v", i, err)
		}
		ids = append(ids, k.ID)
	}

	u := newKeyUsage(st, testenv.Logger(t), 50*time.Millisecond)
	var writes atomic.Int32
	u.write = func(ctx context.Context, used map[uuid.UUID]time.Time) error {
		writes.Add(1)
		return st.APIKeyTouch(ctx, used)
	}
	for range 100 {
		for _, id := range ids {
			u.touch(id)
		}
	}
	runCtx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { u.run(runCtx); close(done) }()

	deadline := time.Now().Add(3 * time.Second)
	for writes.Load() == 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	// Further ticks with nothing new must not write.
	time.Sleep(200 * time.Millisecond)
	cancel()
	<-done
	if n := writes.Load(); n != 1 {
		t.Errorf("300 uses of 3 keys made %d UPDATEs, want 1", n)
	}
	var set int
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM api_keys WHERE id = ANY($1) AND last_used_at IS NOT NULL", ids).Scan(&set); err != nil {
		t.Fatal(err)
	}
	if set != len(ids) {
		t.Errorf("%d of %d keys have last_used_at", set, len(ids))
	}
}

// TestKeyUsageRetries checks that a failed write keeps the batch for the
// next flush, and that a final flush happens when the batcher stops.
func TestKeyUsageRetries(t *testing.T) {
	t.Parallel()
	u := newKeyUsage(nil, testenv.Logger(t), time.Hour)
	var got []map[uuid.UUID]time.Time
	fail := true
	u.write = func(_ context.Context, used map[uuid.UUID]time.Time) error {
		if fail {
			fail = false
			return context.DeadlineExceeded
		}
		got = append(got, used)
		return nil
	}
	id := uuid.New()
	u.touch(id)
	if err := u.flush(t.Context()); err == nil || len(got) != 0 {
		t.Fatalf("failed write reported as done")
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	u.run(ctx) // returns at once, flushing on the way out
	if len(got) != 1 || got[0][id].IsZero() {
		t.Fatalf("after retry on stop, writes = %v; want one with key %s", got, id)
	}
}
