package ratelimit_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/mailqueue/mailqueue/ratelimit"
)

func TestTakeAPI(t *testing.T) {
	t.Parallel()
	backends(t, func(t *testing.T, rdb redis.UniversalClient, prefix string) {
		ctx := context.Background()
		l := ratelimit.New(rdb, ratelimit.Options{Prefix: prefix, API: 5})
		key := uuid.New()
		for i := range 5 {
			r := l.TakeAPI(ctx, key, 0)
			if !r.Allowed || r.Limit != 5 || r.Remaining != 4-i || r.Local {
				t.Fatalf("request %d: %+v, want allowed with %d remaining", i+1, r, 4-i)
			}
			if r.ResetAfter <= 0 || r.ResetAfter > time.Second {
				t.Fatalf("request %d: reset after %v", i+1, r.ResetAfter)
			}
		}
		r := l.TakeAPI(ctx, key, 0)
		if r.Allowed || r.Remaining != 0 || r.RetryAfter <= 0 || r.RetryAfter > 200*time.Millisecond {
			t.Fatalf("sixth request: %+v, want refused for at most one interval (200ms)", r)
		}
		// The key's own rate_limit overrides the default; another key has
		// its own bucket.
		other := uuid.New()
		for i := range 8 {
			if r := l.TakeAPI(ctx, other, 8); !r.Allowed || r.Limit != 8 {
				t.Fatalf("request %d with an override of 8/s: %+v", i+1, r)
			}
		}
		if r := l.TakeAPI(ctx, other, 8); r.Allowed {
			t.Fatalf("ninth request with an override of 8/s allowed: %+v", r)
		}
		// No default and no override: not limited.
		none := ratelimit.New(rdb, ratelimit.Options{Prefix: prefix})
		if r := none.TakeAPI(ctx, key, 0); !r.Allowed || r.Limit != 0 {
			t.Fatalf("unlimited key: %+v", r)
		}
	})
}
