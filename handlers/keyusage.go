package handlers

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/mailqueue/mailqueue/store"
)

// keyUsageInterval is how often last_used_at reaches the database. The
// column is for people deciding which keys are stale, so ten seconds of
// lag costs nothing, while a write per request would double the database
// load of every read endpoint.
const keyUsageInterval = 10 * time.Second

// keyUsage collects which keys authenticated requests and when, in memory,
// and records them with one UPDATE per interval for all keys at once.
type keyUsage struct {
	interval time.Duration
	// write records a batch; store.APIKeyTouch, replaceable in tests to
	// count statements.
	write  func(ctx context.Context, used map[uuid.UUID]time.Time) error
	logger *slog.Logger

	mu      sync.Mutex
	pending map[uuid.UUID]time.Time
}

func newKeyUsage(s *store.Store, logger *slog.Logger, interval time.Duration) *keyUsage {
	return &keyUsage{interval: interval, write: s.APIKeyTouch, logger: logger, pending: map[uuid.UUID]time.Time{}}
}

// startKeyUsage returns a batcher whose flushing runs until ctx ends.
func startKeyUsage(ctx context.Context, s *store.Store, logger *slog.Logger) *keyUsage {
	u := newKeyUsage(s, logger, keyUsageInterval)
	go u.run(ctx)
	return u
}

// touch notes that key id was used now. It only takes a lock and writes a
// map entry, so it is cheap enough for every request.
func (u *keyUsage) touch(id uuid.UUID) {
	if u == nil {
		return
	}
	now := time.Now()
	u.mu.Lock()
	u.pending[id] = now
	u.mu.Unlock()
}

// run flushes every interval until ctx ends, then once more so the last
// interval's use is not lost on shutdown.
func (u *keyUsage) run(ctx context.Context) {
	t := time.NewTicker(u.interval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
			if err := u.flush(ctx); err != nil {
				u.logger.WarnContext(ctx, "recording api key use failed; will retry", "error", err)
			}
		case <-ctx.Done():
			// The database may already be closing; a lost last_used_at
			// is harmless, so this is not worth a warning.
			final, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
			if err := u.flush(final); err != nil {
				u.logger.InfoContext(final, "api key use of the last interval not recorded at shutdown", "error", err)
			}
			cancel()
			return
		}
	}
}

// flush writes what was collected since the last flush. On failure the
// entries go back into the map (unless newer use replaced them), to be
// tried again next time: the map holds at most one entry per key, so it
// cannot grow without bound while the database is away.
func (u *keyUsage) flush(ctx context.Context) error {
	u.mu.Lock()
	batch := u.pending
	if len(batch) == 0 {
		u.mu.Unlock()
		return nil
	}
	u.pending = make(map[uuid.UUID]time.Time, len(batch))
	u.mu.Unlock()

	if err := u.write(ctx, batch); err != nil {
		u.mu.Lock()
		for id, at := range batch {
			if cur, ok := u.pending[id]; !ok || cur.Before(at) {
				u.pending[id] = at
			}
		}
		u.mu.Unlock()
		return fmt.Errorf("recording use of %d api keys: %w", len(batch), err)
	}
	return nil
}
