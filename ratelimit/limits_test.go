package ratelimit_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"

	"github.com/mailqueue/mailqueue/ratelimit"
	"github.com/mailqueue/mailqueue/testenv"
)

// backends runs fn against a single Redis node and against the Redis
// Cluster, each with a key prefix of its own.
func backends(t *testing.T, fn func(t *testing.T, rdb redis.UniversalClient, prefix string)) {
	t.Helper()
	for name, addrs := range map[string][]string{
		"single node": {testenv.RedisAddr(t)},
		"cluster":     testenv.RedisClusterAddrs(t),
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			rdb := ratelimit.NewClient(addrs)
			t.Cleanup(func() { _ = rdb.Close() })
			fn(t, rdb, "mqtest:"+uuid.NewString()+":")
		})
	}
}

func take(t *testing.T, l *ratelimit.Limiter, s ratelimit.SendLimits) ratelimit.Decision {
	t.Helper()
	d := l.TakeSend(context.Background(), s)
	if d.Local {
		t.Fatalf("decided in-process although Redis is up: %+v", d)
	}
	return d
}

func expectDenied(t *testing.T, d ratelimit.Decision, level string, limit int) {
	t.Helper()
	if d.Allowed || d.Level != level || d.Limit != limit {
		t.Fatalf("decision %+v, want denied by the %s limit of %d", d, level, limit)
	}
	if max := time.Minute / time.Duration(limit); d.RetryAfter <= 0 || d.RetryAfter > max {
		t.Fatalf("retry after %v, want within one token's interval (%v)", d.RetryAfter, max)
	}
	if want := "rate limited: " + level + " limit of "; !strings.HasPrefix(d.Reason(), want) {
		t.Fatalf("reason %q", d.Reason())
	}
}

func TestSendBurst(t *testing.T) {
	t.Parallel()
	for perMinute, want := range map[int]int{1: 1, 59: 1, 60: 1, 61: 2, 600: 10, 6000: 100} {
		if got := ratelimit.SendBurst(perMinute); got != want {
			t.Errorf("SendBurst(%d) = %d, want %d", perMinute, got, want)
		}
	}
}

// TestTakeSendAppAndQueueTogether checks a queue's refusal spends no app
// token: the app's second token is still there for another queue.
func TestTakeSendAppAndQueueTogether(t *testing.T) {
	t.Parallel()
	backends(t, func(t *testing.T, rdb redis.UniversalClient, prefix string) {
		l := ratelimit.New(rdb, ratelimit.Options{Prefix: prefix})
		app := uuid.New()
		q1, q2, q3 := uuid.New(), uuid.New(), uuid.New()
		// The app lets 2 out at once (120/min), each queue 1 (60/min).
		s := func(q uuid.UUID) ratelimit.SendLimits {
			return ratelimit.SendLimits{AppID: app, QueueID: q, App: 120, Queue: 60}
		}
		if d := take(t, l, s(q1)); !d.Allowed {
			t.Fatalf("first email refused: %+v", d)
		}
		for range 5 {
			expectDenied(t, take(t, l, s(q1)), ratelimit.LevelQueue, 60)
		}
		if d := take(t, l, s(q2)); !d.Allowed {
			t.Fatalf("another queue of the app refused, so the queue's refusals spent app tokens: %+v", d)
		}
		expectDenied(t, take(t, l, s(q3)), ratelimit.LevelApp, 120)
		// Another app is not touched.
		if d := take(t, l, ratelimit.SendLimits{AppID: uuid.New(), QueueID: q1, App: 120, Queue: 60}); !d.Allowed {
			t.Fatalf("another app refused: %+v", d)
		}
	})
}

// TestTakeSendGlobalGivenBack checks a token taken from the global limit
// is given back when the app or queue refuses, and that the global limit
// caps the sum across apps.
func TestTakeSendGlobalGivenBack(t *testing.T) {
	t.Parallel()
	backends(t, func(t *testing.T, rdb redis.UniversalClient, prefix string) {
		l := ratelimit.New(rdb, ratelimit.Options{Prefix: prefix, Global: 120}) // 2 at once
		limited := ratelimit.SendLimits{AppID: uuid.New(), QueueID: uuid.New(), Queue: 60}
		if d := take(t, l, limited); !d.Allowed {
			t.Fatalf("first email refused: %+v", d)
		}
		for range 5 {
			expectDenied(t, take(t, l, limited), ratelimit.LevelQueue, 60)
		}
		if d := take(t, l, ratelimit.SendLimits{AppID: uuid.New(), QueueID: uuid.New()}); !d.Allowed {
			t.Fatalf("second app refused: the queue's refusals kept global tokens: %+v", d)
		}
		expectDenied(t, take(t, l, ratelimit.SendLimits{AppID: uuid.New(), QueueID: uuid.New()}), ratelimit.LevelGlobal, 120)
		// Sandbox email does not count against the global limit.
		if d := take(t, l, ratelimit.SendLimits{AppID: uuid.New(), QueueID: uuid.New(), SkipGlobal: true}); !d.Allowed {
			t.Fatalf("sandbox email refused by the global limit: %+v", d)
		}
	})
}

// TestTakeSendRate checks the shape over time: a second's worth at once,
// then the limit's pace, and that two limiters share one budget.
func TestTakeSendRate(t *testing.T) {
	t.Parallel()
	backends(t, func(t *testing.T, rdb redis.UniversalClient, prefix string) {
		a := ratelimit.New(rdb, ratelimit.Options{Prefix: prefix})
		b := ratelimit.New(rdb, ratelimit.Options{Prefix: prefix})
		s := ratelimit.SendLimits{AppID: uuid.New(), QueueID: uuid.New(), Queue: 600} // 10/s, burst 10
		start := time.Now()
		allowed := 0
		for i := 0; time.Since(start) < 1500*time.Millisecond; i++ {
			l := a
			if i%2 == 1 {
				l = b
			}
			if d := take(t, l, s); d.Allowed {
				allowed++
			}
			time.Sleep(5 * time.Millisecond)
		}
		elapsed := time.Since(start)
		want := 10 + int(elapsed.Seconds()*10)
		if allowed < want-2 || allowed > want+1 {
			t.Fatalf("%d allowed in %v by two limiters, want about %d (burst 10 + 10/s)", allowed, elapsed, want)
		}
	})
}
