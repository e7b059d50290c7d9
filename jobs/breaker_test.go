package jobs_test

import (
	"net"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/mailqueue/mailqueue/ratelimit"
	"github.com/mailqueue/mailqueue/store"
	"github.com/mailqueue/mailqueue/testenv"
)

// TestSendCircuitBreaker drives the breaker through real SMTP: five
// temporary failures open it, the next email waits (queued, snoozed, no
// attempt used, waiting_reason set) instead of failing, and after the open
// period probes deliver and close it again. Runs on a single Redis node and
// on the cluster.
func TestSendCircuitBreaker(t *testing.T) {
	t.Parallel()
	for name, addrs := range map[string][]string{
		"single node": {testenv.RedisAddr(t)},
		"cluster":     testenv.RedisClusterAddrs(t),
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			rdb := ratelimit.NewClient(addrs)
			t.Cleanup(func() { _ = rdb.Close() })
			b := ratelimit.NewBreaker(rdb, "mqtest:"+uuid.NewString()+":")
			b.OpenFor = time.Second
			h := newHarness(t, harnessOptions{breaker: b})
			host := net.JoinHostPort(h.sink.Host(), strconv.Itoa(h.sink.Port()))
			ctx := t.Context()

			// 451 at RCPT: the host's fault. One attempt each (max_retries 0).
			for range 5 {
				e := h.insert(t, h.params("tempfail@example.com"))
				h.waitStatus(t, e.ID, store.StatusFailed)
			}
			states, _, err := b.States(ctx)
			if err != nil || !slices.Equal(states, []ratelimit.BreakerStatus{{Host: host, State: ratelimit.BreakerOpen}}) {
				t.Fatalf("breakers after 5 failures = %+v, %v; want %s open", states, err, host)
			}
			before := h.sink.Stats().Messages

			e := h.insert(t, h.params("rcpt@example.com"))
			want := "circuit open for SMTP host " + host
			got := h.waitEmail(t, e.ID, "waiting for the breaker", func(e *store.Email) bool {
				return e.WaitingReason != nil && *e.WaitingReason == want
			})
			if got.Status != store.StatusQueued || got.RetryCount != 0 {
				t.Errorf("waiting email: status %s retry_count %d, want queued and 0", got.Status, got.RetryCount)
			}
			if types := eventTypes(h.events(t, e.ID)); !slices.Equal(types, []string{"queued"}) {
				t.Errorf("events while open = %v, want only [queued]", types)
			}
			if n := h.sink.Stats().Messages; n != before {
				t.Errorf("sink got %d messages while the breaker was open", n-before)
			}

			// After OpenFor the email is the probe and goes out; two more
			// successes close the breaker.
			sent := h.waitStatus(t, e.ID, store.StatusSent)
			if sent.RetryCount != 0 {
				t.Errorf("retry_count after the wait = %d, want 0 (snoozes use no attempt)", sent.RetryCount)
			}
			for range 2 {
				e := h.insert(t, h.params("rcpt@example.com"))
				h.waitStatus(t, e.ID, store.StatusSent)
			}
			states, _, err = b.States(ctx)
			if err != nil || !slices.Equal(states, []ratelimit.BreakerStatus{{Host: host, State: ratelimit.BreakerClosed}}) {
				t.Fatalf("breakers after 3 successes = %+v, %v; want %s closed", states, err, host)
			}

			// A permanent refusal of one recipient is not the host's fault.
			for range 6 {
				e := h.insert(t, h.params("permfail@example.com"))
				h.waitStatus(t, e.ID, store.StatusFailed)
			}
			if d := b.Allow(ctx, host); !d.Allowed || d.State != ratelimit.BreakerClosed {
				t.Errorf("after 6 permanent failures: %+v, want closed", d)
			}
			if r := deref(got.WaitingReason); !strings.Contains(r.(string), host) {
				t.Errorf("waiting_reason %q does not name the host", r)
			}
		})
	}
}
