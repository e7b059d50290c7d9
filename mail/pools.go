package mail

import (
	"errors"
	"log/slog"
	"sync"
	"time"
)

// unusedPoolTTL is how long a pool with no open connections may go without a
// Get before the registry forgets it.
const unusedPoolTTL = 10 * time.Minute

// Pools is a registry of Pools, one per distinct Server configuration.
type Pools struct {
	logger *slog.Logger

	mu        sync.Mutex
	pools     map[Server]*poolEntry
	lastSweep time.Time
	closed    bool
}

type poolEntry struct {
	pool    *Pool
	lastGet time.Time
}

// NewPools returns an empty registry.
func NewPools(logger *slog.Logger) *Pools {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	return &Pools{logger: logger, pools: make(map[Server]*poolEntry)}
}

// Get returns the pool for srv, creating it on first use. The key is the
// whole Server, password included, so an edited configuration gets a fresh
// pool; the superseded one is no longer handed out, its connections are
// closed by the idle timeout, and the registry drops it once it is empty.
// After CloseAll, Get returns closed pools.
func (ps *Pools) Get(srv Server) *Pool {
	ps.mu.Lock()
	defer ps.mu.Unlock()
	now := time.Now()
	if e, ok := ps.pools[srv]; ok {
		e.lastGet = now
		return e.pool
	}
	p := NewPool(srv, ps.logger)
	if ps.closed {
		_ = p.Close()
		return p
	}
	ps.pools[srv] = &poolEntry{pool: p, lastGet: now}
	if now.Sub(ps.lastSweep) > time.Minute {
		ps.lastSweep = now
		for key, e := range ps.pools {
			if now.Sub(e.lastGet) > unusedPoolTTL && e.pool.Stats().Open == 0 {
				_ = e.pool.Close()
				delete(ps.pools, key)
			}
		}
	}
	return p
}

// CloseAll closes every pool; later Gets return closed pools.
func (ps *Pools) CloseAll() error {
	ps.mu.Lock()
	ps.closed = true
	pools := ps.pools
	ps.pools = make(map[Server]*poolEntry)
	ps.mu.Unlock()

	var errs []error
	for _, e := range pools {
		errs = append(errs, e.pool.Close())
	}
	return errors.Join(errs...)
}
