package ratelimit_test

import (
	"context"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/mailqueue/mailqueue/ratelimit"
	"github.com/mailqueue/mailqueue/testenv"
)

// TestFallbackWhenRedisIsDown checks that without Redis the limits still
// hold, at this process's share, and that no call waits on the dead Redis.
func TestFallbackWhenRedisIsDown(t *testing.T) {
	t.Parallel()
	rdb := ratelimit.NewClient([]string{"127.0.0.1:1"})
	t.Cleanup(func() { _ = rdb.Close() })
	// Two processes: each allows half of 120/min, i.e. 1/s with a burst of 1.
	l := ratelimit.New(rdb, ratelimit.Options{Prefix: "mqtest:", Processes: 2, API: 10})
	ctx := context.Background()
	s := ratelimit.SendLimits{AppID: uuid.New(), QueueID: uuid.New(), Queue: 120}
	start := time.Now()
	d := l.TakeSend(ctx, s)
	if !d.Allowed || !d.Local {
		t.Fatalf("first email: %+v, want allowed in-process", d)
	}
	d = l.TakeSend(ctx, s)
	if d.Allowed || d.Level != ratelimit.LevelQueue || d.RetryAfter <= 500*time.Millisecond || d.RetryAfter > time.Second {
		t.Fatalf("second email: %+v, want refused for about a second (half of 120/min)", d)
	}
	if !l.Degraded() {
		t.Fatal("limiter does not report that it is degraded")
	}
	key := uuid.New()
	for i := range 5 {
		if r := l.TakeAPI(ctx, key, 0); !r.Allowed || !r.Local || r.Remaining != 4-i {
			t.Fatalf("API request %d: %+v, want allowed in-process (5 of 10/s)", i+1, r)
		}
	}
	if r := l.TakeAPI(ctx, key, 0); r.Allowed {
		t.Fatalf("sixth API request allowed: the process's share is 5/s: %+v", r)
	}
	for range 100 {
		l.TakeSend(ctx, s)
	}
	if took := time.Since(start); took > 2*time.Second {
		t.Fatalf("100 decisions took %v with Redis down: calls wait on the dead Redis", took)
	}
}

// TestFallbackAndBack kills a Redis of the test's own while limits are in
// use, then restarts it: limits hold in-process meanwhile, and once Redis
// is back two limiters share one budget again.
func TestFallbackAndBack(t *testing.T) {
	t.Parallel()
	srv := testenv.StartRedis(t)
	rdb := ratelimit.NewClient([]string{srv.Addr})
	t.Cleanup(func() { _ = rdb.Close() })
	opts := ratelimit.Options{Prefix: "mqtest:", RetryRedisAfter: 100 * time.Millisecond}
	a, b := ratelimit.New(rdb, opts), ratelimit.New(rdb, opts)
	ctx := context.Background()
	s := ratelimit.SendLimits{AppID: uuid.New(), QueueID: uuid.New(), Queue: 60}
	if d := a.TakeSend(ctx, s); !d.Allowed || d.Local {
		t.Fatalf("first email: %+v", d)
	}
	if d := b.TakeSend(ctx, s); d.Allowed || d.Local {
		t.Fatalf("second email through another limiter: %+v, want refused by the shared limit", d)
	}

	srv.Kill()
	// Each limiter now decides alone: its own first token is there.
	for _, l := range []*ratelimit.Limiter{a, b} {
		d := l.TakeSend(ctx, s)
		if !d.Local {
			t.Fatalf("decided in Redis although it is dead: %+v", d)
		}
	}

	srv.Start()
	time.Sleep(150 * time.Millisecond) // past RetryRedisAfter
	s.QueueID = uuid.New()
	var allowed, local int
	for _, l := range []*ratelimit.Limiter{a, b, a, b} {
		d := l.TakeSend(ctx, s)
		if d.Allowed {
			allowed++
		}
		if d.Local {
			local++
		}
	}
	if allowed != 1 || local != 0 {
		t.Fatalf("after Redis came back: %d of 4 allowed, %d decided in-process; want 1 and 0 (one shared budget)", allowed, local)
	}
	if a.Degraded() || b.Degraded() {
		t.Fatal("limiters still report being degraded")
	}
}
