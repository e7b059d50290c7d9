package ratelimit_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/mailqueue/mailqueue/ratelimit"
	"github.com/mailqueue/mailqueue/testenv"
)

// TestNewClient checks one address gives a single-node client and several
// give a cluster client, each able to write and read keys in any slot.
func TestNewClient(t *testing.T) {
	t.Parallel()
	for name, addrs := range map[string][]string{
		"single node": {testenv.RedisAddr(t)},
		"cluster":     testenv.RedisClusterAddrs(t),
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			ctx := context.Background()
			c := ratelimit.NewClient(addrs)
			defer c.Close()
			_, isCluster := c.(*redis.ClusterClient)
			if isCluster != (len(addrs) > 1) {
				t.Fatalf("client type %T for %d addresses", c, len(addrs))
			}
			if _, err := ratelimit.Ping(ctx, c); err != nil {
				t.Fatalf("ping: %v", err)
			}
			// Keys spread over many slots: every master of a cluster is reached.
			for i := range 50 {
				key := "mq:test:" + uuid.NewString()
				if err := c.Set(ctx, key, i, 0).Err(); err != nil {
					t.Fatalf("set %s: %v", key, err)
				}
				if got, err := c.Get(ctx, key).Int(); err != nil || got != i {
					t.Fatalf("get %s = %d, %v", key, got, err)
				}
				c.Del(ctx, key)
			}
		})
	}
}

// TestPingFailsFast checks a dead Redis is reported quickly, not after a
// long stall: Redis only accelerates, so its absence must never block.
func TestPingFailsFast(t *testing.T) {
	t.Parallel()
	c := ratelimit.NewClient([]string{"127.0.0.1:1"})
	defer c.Close()
	start := time.Now()
	if _, err := ratelimit.Ping(context.Background(), c); err == nil {
		t.Fatal("ping of a closed port succeeded")
	}
	// A generous bound: the point is "seconds, not minutes".
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("ping of a dead Redis took %s", d)
	}
}
