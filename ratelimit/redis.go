// Package ratelimit holds what Mail Queue keeps in Redis to go fast across
// many processes: rate limits, idempotency fast paths, the SMTP circuit
// breaker and the priority lanes' shared state. PostgreSQL stays the source
// of truth; everything here may be lost and rebuilt (DESIGN.md, decision 1).
package ratelimit

import (
	"context"
	"time"

	"github.com/redis/go-redis/v9"
)

// NewClient connects to one Redis node, or to a Redis Cluster when addrs
// names several. Timeouts are short on purpose: Redis only accelerates, so a
// slow Redis must degrade the service, never stall it.
func NewClient(addrs []string) redis.UniversalClient {
	return redis.NewUniversalClient(&redis.UniversalOptions{
		Addrs:        addrs,
		DialTimeout:  500 * time.Millisecond,
		ReadTimeout:  250 * time.Millisecond,
		WriteTimeout: 250 * time.Millisecond,
		PoolTimeout:  500 * time.Millisecond,
		MaxRetries:   1,
		// One address means a single node even if it is a cluster member;
		// several mean a cluster.
		IsClusterMode: len(addrs) > 1,
	})
}

// Ping reports whether Redis answers, and how long it took.
func Ping(ctx context.Context, c redis.UniversalClient) (time.Duration, error) {
	start := time.Now()
	err := c.Ping(ctx).Err()
	return time.Since(start), err
}
