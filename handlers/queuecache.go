package handlers

import (
	"context"
	"sync"
	"time"

	"github.com/google/uuid"

	"github.com/mailqueue/mailqueue/store"
)

// queueCache keeps the queues POST /v1/emails looked up, by app and name,
// with their versions, so a busy client does not cost a queue read per
// email. It is never trusted blindly: the accept checks the version in its
// transaction (store.ErrQueueChanged), and the request is then redone with
// a fresh read, so a changed, draining or deleted queue is seen exactly as
// without the cache. The short life only bounds memory and wasted redos.
type queueCache struct {
	store *store.Store
	ttl   time.Duration

	mu      sync.Mutex
	entries map[queueCacheKey]queueCacheEntry
}

type queueCacheKey struct {
	app  uuid.UUID
	name string
}

type queueCacheEntry struct {
	queue   *store.Queue // shared: read only
	version int64
	expires time.Time
}

func newQueueCache(s *store.Store, ttl time.Duration) *queueCache {
	return &queueCache{store: s, ttl: ttl, entries: map[queueCacheKey]queueCacheEntry{}}
}

// get returns app's queue name and its version, from the cache when it has
// a live entry (cached reports which). A queue that does not exist is
// store.ErrNotFound and is not cached.
func (c *queueCache) get(ctx context.Context, app uuid.UUID, name string) (q *store.Queue, version int64, cached bool, err error) {
	k := queueCacheKey{app, name}
	now := time.Now()
	c.mu.Lock()
	e, ok := c.entries[k]
	c.mu.Unlock()
	if ok && now.Before(e.expires) {
		return e.queue, e.version, true, nil
	}
	q, version, err = c.store.QueueGetByNameVersion(ctx, app, name)
	if err != nil {
		return nil, 0, false, err
	}
	c.mu.Lock()
	if len(c.entries) > 10_000 { // unbounded growth guard; entries are cheap to refetch
		clear(c.entries)
	}
	c.entries[k] = queueCacheEntry{queue: q, version: version, expires: now.Add(c.ttl)}
	c.mu.Unlock()
	return q, version, false, nil
}

// drop forgets app's queue name.
func (c *queueCache) drop(app uuid.UUID, name string) {
	c.mu.Lock()
	delete(c.entries, queueCacheKey{app, name})
	c.mu.Unlock()
}
