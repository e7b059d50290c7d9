package ratelimit_test

import (
	"context"
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"

	"github.com/mailqueue/mailqueue/ratelimit"
	"github.com/mailqueue/mailqueue/testenv"
)

// redisTargets are the two deployments every breaker test runs against.
func redisTargets(t *testing.T) map[string][]string {
	return map[string][]string{
		"single node": {testenv.RedisAddr(t)},
		"cluster":     testenv.RedisClusterAddrs(t),
	}
}

// testBreaker returns a breaker with a private key prefix and a short open
// period, and a second one on its own client sharing the prefix, standing
// for another worker process.
func testBreaker(t *testing.T, addrs []string) (*ratelimit.Breaker, *ratelimit.Breaker) {
	t.Helper()
	prefix := "mqtest:" + uuid.NewString() + ":"
	mk := func() *ratelimit.Breaker {
		c := ratelimit.NewClient(addrs)
		t.Cleanup(func() { _ = c.Close() })
		b := ratelimit.NewBreaker(c, prefix)
		b.OpenFor = 300 * time.Millisecond
		b.HealthyFor = 0 // every decision from Redis; TestBreakerHealthyWindow tests the window
		return b
	}
	return mk(), mk()
}

func expectAllow(t *testing.T, b *ratelimit.Breaker, host string, allowed bool, state string) ratelimit.BreakerDecision {
	t.Helper()
	d := b.Allow(t.Context(), host)
	if d.Allowed != allowed || d.State != state || d.Local {
		t.Fatalf("Allow(%s) = %+v, want allowed=%v state=%s from Redis", host, d, allowed, state)
	}
	return d
}

// TestBreakerHealthyWindow checks the trust a process gives a healthy host:
// after a success it decides alone for HealthyFor (another process's opening
// reaches it when that ends), and its own failure ends the trust at once.
func TestBreakerHealthyWindow(t *testing.T) {
	t.Parallel()
	for name, addrs := range redisTargets(t) {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			ctx := t.Context()
			b, other := testBreaker(t, addrs)
			b.HealthyFor = 300 * time.Millisecond
			b.OpenFor, other.OpenFor = time.Minute, time.Minute
			host := "smtp-" + uuid.NewString() + ".example.com:25"

			b.Report(ctx, host, true)
			trustedAt := time.Now()
			for range 5 {
				other.Report(ctx, host, false)
			}
			expectAllow(t, other, host, false, ratelimit.BreakerOpen)
			// Still trusted here: open elsewhere, not yet seen.
			if d := b.Allow(ctx, host); !d.Allowed || d.State != ratelimit.BreakerClosed {
				t.Fatalf("within the window: %+v, want allowed (trusted)", d)
			}
			time.Sleep(time.Until(trustedAt.Add(b.HealthyFor + 20*time.Millisecond)))
			expectAllow(t, b, host, false, ratelimit.BreakerOpen)

			// A fresh host: trusted after a success, until b itself fails.
			host2 := "smtp-" + uuid.NewString() + ".example.com:25"
			b.Report(ctx, host2, true)
			for range 4 {
				other.Report(ctx, host2, false)
			}
			b.Report(ctx, host2, false) // the fifth, from b: ends its trust, goes to Redis
			expectAllow(t, b, host2, false, ratelimit.BreakerOpen)
		})
	}
}

func TestBreakerTransitions(t *testing.T) {
	t.Parallel()
	for name, addrs := range redisTargets(t) {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			ctx := t.Context()
			b, other := testBreaker(t, addrs)
			host := "smtp-" + uuid.NewString() + ".example.com:25"

			// A success breaks a streak of failures.
			for range 4 {
				b.Report(ctx, host, false)
			}
			b.Report(ctx, host, true)
			for range 4 {
				other.Report(ctx, host, false)
			}
			expectAllow(t, b, host, true, ratelimit.BreakerClosed)

			// The fifth consecutive failure, from another process, opens it
			// for everyone.
			if c := other.Report(ctx, host, false); c.From != ratelimit.BreakerClosed || c.To != ratelimit.BreakerOpen {
				t.Fatalf("fifth failure: %+v, want closed → open", c)
			}
			d := expectAllow(t, b, host, false, ratelimit.BreakerOpen)
			if d.RetryIn <= 0 || d.RetryIn > b.OpenFor {
				t.Errorf("RetryIn = %s, want within (0, %s]", d.RetryIn, b.OpenFor)
			}

			// After OpenFor, exactly one probe at a time.
			time.Sleep(d.RetryIn + 20*time.Millisecond)
			if d := expectAllow(t, other, host, true, ratelimit.BreakerHalfOpen); !d.Changed {
				t.Errorf("first probe did not report the open → half_open change")
			}
			expectAllow(t, b, host, false, ratelimit.BreakerHalfOpen)
			// A failed probe opens it again.
			if c := other.Report(ctx, host, false); c.To != ratelimit.BreakerOpen {
				t.Fatalf("failed probe: %+v, want → open", c)
			}
			d = expectAllow(t, b, host, false, ratelimit.BreakerOpen)

			// Three successful probes close it.
			time.Sleep(d.RetryIn + 20*time.Millisecond)
			for i := range 3 {
				expectAllow(t, b, host, true, ratelimit.BreakerHalfOpen)
				expectAllow(t, other, host, false, ratelimit.BreakerHalfOpen)
				c := b.Report(ctx, host, true)
				want := ratelimit.BreakerHalfOpen
				if i == 2 {
					want = ratelimit.BreakerClosed
				}
				if c.To != want {
					t.Fatalf("success %d: %+v, want → %s", i+1, c, want)
				}
			}
			expectAllow(t, other, host, true, ratelimit.BreakerClosed)
			// Closed again means a fresh count: four failures do not open it.
			for range 4 {
				b.Report(ctx, host, false)
			}
			expectAllow(t, other, host, true, ratelimit.BreakerClosed)

			states, fromRedis, err := b.States(ctx)
			if err != nil || !fromRedis || len(states) != 1 || states[0].Host != host || states[0].State != ratelimit.BreakerClosed {
				t.Errorf("States = %+v, %v, %v; want [%s closed] from Redis", states, fromRedis, err, host)
			}
			if got := metricValue(t, "mailqueue_circuit_breaker_opens_total", host); got != 2 {
				t.Errorf("opens counter = %v, want 2", got)
			}
		})
	}
}

// TestBreakerSingleProbe races many workers for the half-open probe: the
// Lua script must hand it to exactly one.
func TestBreakerSingleProbe(t *testing.T) {
	t.Parallel()
	for name, addrs := range redisTargets(t) {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			b, other := testBreaker(t, addrs)
			host := "probe-" + uuid.NewString() + ":25"
			for range 5 {
				b.Report(t.Context(), host, false)
			}
			time.Sleep(b.OpenFor + 20*time.Millisecond)
			var allowed atomic.Int32
			var wg sync.WaitGroup
			for i := range 20 {
				wg.Go(func() {
					br := b
					if i%2 == 1 {
						br = other
					}
					if d := br.Allow(t.Context(), host); d.Allowed {
						allowed.Add(1)
					}
				})
			}
			wg.Wait()
			if n := allowed.Load(); n != 1 {
				t.Errorf("%d concurrent probes allowed, want 1", n)
			}
		})
	}
}

// TestBreakerRedisDown kills the Redis holding an open breaker: decisions
// must come fast from the in-process breaker, which follows the same rules,
// and Degraded must say so.
func TestBreakerRedisDown(t *testing.T) {
	t.Parallel()
	addr, stop := startPrivateRedis(t)
	c := ratelimit.NewClient([]string{addr})
	t.Cleanup(func() { _ = c.Close() })
	b := ratelimit.NewBreaker(c, "")
	b.OpenFor = time.Second
	ctx := t.Context()
	host := "down-" + uuid.NewString() + ":25"

	for range 5 {
		b.Report(ctx, host, false)
	}
	expectAllow(t, b, host, false, ratelimit.BreakerOpen)
	if b.Degraded() {
		t.Fatal("Degraded with Redis up")
	}
	stop()

	start := time.Now()
	d := b.Allow(ctx, host)
	if !d.Local || !d.Allowed || d.State != ratelimit.BreakerClosed {
		t.Fatalf("Allow with Redis down = %+v, want allowed by a fresh local breaker", d)
	}
	// Generous: "a second or two, not a hang".
	if took := time.Since(start); took > 3*time.Second {
		t.Errorf("Allow with Redis down took %s", took)
	}
	if !b.Degraded() {
		t.Error("not Degraded with Redis down")
	}
	for range 5 {
		if c := b.Report(ctx, host, false); !c.Local {
			t.Fatalf("Report with Redis down was not local: %+v", c)
		}
	}
	if d := b.Allow(ctx, host); d.Allowed || d.State != ratelimit.BreakerOpen || !d.Local {
		t.Fatalf("local breaker after 5 failures = %+v, want open", d)
	}
	time.Sleep(b.OpenFor + 20*time.Millisecond)
	if d := b.Allow(ctx, host); !d.Allowed || d.State != ratelimit.BreakerHalfOpen {
		t.Fatalf("local breaker after OpenFor = %+v, want a half-open probe", d)
	}
	if d := b.Allow(ctx, host); d.Allowed {
		t.Fatalf("local breaker allowed a second probe: %+v", d)
	}
	for range 3 {
		b.Report(ctx, host, true)
		b.Allow(ctx, host)
	}
	if d := b.Allow(ctx, host); !d.Allowed || d.State != ratelimit.BreakerClosed {
		t.Fatalf("local breaker after 3 successes = %+v, want closed", d)
	}
	states, fromRedis, err := b.States(ctx)
	if err == nil || fromRedis {
		t.Errorf("States with Redis down: %v, %v; want an error and local states", states, err)
	}
}

// startPrivateRedis runs a throwaway redis-server on a free port, so a test
// can take it down without touching the shared one. stop kills it (and is
// also run at Cleanup).
func startPrivateRedis(t *testing.T) (addr string, stop func()) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	_ = l.Close()
	cmd := exec.Command("redis-server", "--port", strconv.Itoa(port), "--bind", "127.0.0.1",
		"--save", "", "--appendonly", "no", "--dir", t.TempDir())
	if err := cmd.Start(); err != nil {
		t.Skipf("cannot start redis-server: %v", err)
	}
	var once sync.Once
	stop = func() {
		once.Do(func() {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		})
	}
	t.Cleanup(stop)
	addr = fmt.Sprintf("127.0.0.1:%d", port)
	c := redis.NewClient(&redis.Options{Addr: addr})
	defer c.Close()
	deadline := time.Now().Add(5 * time.Second)
	for c.Ping(context.Background()).Err() != nil {
		if time.Now().After(deadline) {
			t.Fatalf("private redis-server on %s never answered", addr)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return addr, stop
}

// metricValue reads a counter or gauge with a host label from the default
// registry that /metrics serves.
func metricValue(t *testing.T, name, host string) float64 {
	t.Helper()
	mfs, err := prometheus.DefaultGatherer.Gather()
	if err != nil {
		t.Fatalf("gathering metrics: %v", err)
	}
	var sum float64
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		for _, m := range mf.GetMetric() {
			for _, l := range m.GetLabel() {
				if l.GetName() == "host" && l.GetValue() == host {
					sum += m.GetCounter().GetValue() + m.GetGauge().GetValue()
				}
			}
		}
	}
	return sum
}
