package jobs_test

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"github.com/mailqueue/mailqueue/ratelimit"
	"github.com/mailqueue/mailqueue/store"
	"github.com/mailqueue/mailqueue/testenv"
)

// limiter returns a Limiter over addrs with a key prefix of the test's own.
func limiter(t *testing.T, addrs []string, o ratelimit.Options) *ratelimit.Limiter {
	t.Helper()
	rdb := ratelimit.NewClient(addrs)
	t.Cleanup(func() { _ = rdb.Close() })
	o.Prefix = "mqtest:" + uuid.NewString() + ":"
	o.Logger = testenv.Logger(t)
	return ratelimit.New(rdb, o)
}

func redisBackends(t *testing.T) map[string][]string {
	return map[string][]string{
		"single node": {testenv.RedisAddr(t)},
		"cluster":     testenv.RedisClusterAddrs(t),
	}
}

func (h *harness) addQueue(t *testing.T, appID uuid.UUID, name string, perMinute int32) *store.Queue {
	t.Helper()
	p := &store.QueueInsertParams{AppID: appID, Name: name, Priority: 5, MaxRetries: 2, RetryDelay: []int32{1}}
	if perMinute > 0 {
		p.RateLimit = &perMinute
	}
	q, err := h.st.QueueInsert(t.Context(), p)
	if err != nil {
		t.Fatalf("QueueInsert: %v", err)
	}
	return q
}

// receivedBy returns when the sink received each message whose first
// recipient starts with prefix, in order.
func (h *harness) receivedBy(prefix string) []time.Time {
	var out []time.Time
	for _, m := range h.sink.Messages() {
		if len(m.To) > 0 && strings.HasPrefix(m.To[0], prefix) {
			out = append(out, m.Received)
		}
	}
	slices.SortFunc(out, func(a, b time.Time) int { return a.Compare(b) })
	return out
}

// expectPace checks the messages of times keep to perMinute: counted over
// window from the first, at most the burst plus the window's worth (one
// extra for send latency), and at least half the window's worth, so the
// limited flow keeps moving.
func expectPace(t *testing.T, what string, times []time.Time, perMinute int, window time.Duration) {
	t.Helper()
	if len(times) == 0 {
		t.Fatalf("%s: nothing sent", what)
	}
	n := 0
	for _, at := range times {
		if at.Sub(times[0]) <= window {
			n++
		}
	}
	allowed := float64(perMinute) * window.Minutes()
	hi := ratelimit.SendBurst(perMinute) + int(allowed) + 1
	lo := int(allowed / 2)
	t.Logf("%s: %d sent in %v (limit %d/min allows %d)", what, n, window, perMinute, hi-1)
	if n > hi || n < lo {
		t.Fatalf("%s: %d sent in the %v after the first, want %d to %d (%d/min)", what, n, window, lo, hi, perMinute)
	}
}

// TestSendQueueRateLimit sends twice a queue's per-minute limit: the SMTP
// server sees the queue's email at the limit's pace, while another queue
// of the same app is not slowed; waiting email says why, and waiting never
// uses up a retry.
func TestSendQueueRateLimit(t *testing.T) {
	t.Parallel()
	for name, addrs := range redisBackends(t) {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			const perMinute = 60 // one a second, burst 1
			h := newHarness(t, harnessOptions{limits: limiter(t, addrs, ratelimit.Options{})})
			limited := h.addQueue(t, h.app.ID, "limited", perMinute)
			var limitedEmails []*store.Email
			for i := range 2 * perMinute {
				p := h.params(fmt.Sprintf("limited-%d@example.com", i))
				p.Queue = limited
				limitedEmails = append(limitedEmails, h.insert(t, p))
			}
			for i := range 20 {
				h.insert(t, h.params(fmt.Sprintf("free-%d@example.com", i)))
			}

			deadline := time.Now().Add(10 * time.Second)
			for len(h.receivedBy("free-")) < 20 {
				if time.Now().After(deadline) {
					t.Fatalf("the unlimited queue of the same app was held back: %d of 20 sent", len(h.receivedBy("free-")))
				}
				time.Sleep(50 * time.Millisecond)
			}

			const window = 12 * time.Second
			first := h.receivedBy("limited-")
			if len(first) == 0 {
				t.Fatal("no limited email sent while the free queue finished")
			}
			time.Sleep(time.Until(first[0].Add(window + 500*time.Millisecond)))
			expectPace(t, "limited queue", h.receivedBy("limited-"), perMinute, window)

			var sent, waiting, snoozed int
			for _, e := range limitedEmails {
				got, err := h.st.EmailGet(t.Context(), h.app.ID, e.ID)
				if err != nil {
					t.Fatalf("EmailGet: %v", err)
				}
				job, err := h.client.JobGet(t.Context(), *e.JobID)
				if err != nil {
					t.Fatalf("JobGet: %v", err)
				}
				if job.Attempt > 1 || got.RetryCount != 0 {
					t.Fatalf("email %s (status %s): job attempt %d, retry_count %d; waiting for a limit used up a retry",
						e.ID, got.Status, job.Attempt, got.RetryCount)
				}
				var meta struct{ Snoozes int }
				_ = json.Unmarshal(job.Metadata, &meta)
				switch got.Status {
				case store.StatusSent:
					sent++
					if meta.Snoozes > 0 {
						snoozed++
					}
				case store.StatusQueued:
					waiting++
					if want := "rate limited: queue limit of 60/min"; got.WaitingReason != nil && *got.WaitingReason != want {
						t.Fatalf("waiting_reason %q, want %q", *got.WaitingReason, want)
					}
				}
			}
			if waiting < perMinute || snoozed == 0 {
				t.Fatalf("%d sent (%d after snoozing), %d waiting; want over half still waiting and some sent after a snooze", sent, snoozed, waiting)
			}
		})
	}
}

// TestSendGlobalRateLimit checks the global limit caps the sum over apps.
func TestSendGlobalRateLimit(t *testing.T) {
	t.Parallel()
	const perMinute = 60
	h := newHarness(t, harnessOptions{limits: limiter(t, testenv.RedisClusterAddrs(t), ratelimit.Options{Global: perMinute})})
	other, err := h.st.AppInsert(t.Context(), &store.AppInsertParams{Name: "second app"})
	if err != nil {
		t.Fatalf("AppInsert: %v", err)
	}
	otherQueue := h.addQueue(t, other.ID, "default", 0)
	for i := range perMinute {
		h.insert(t, h.params(fmt.Sprintf("g-a-%d@example.com", i)))
		p := h.params(fmt.Sprintf("g-b-%d@example.com", i))
		p.AppID, p.Queue = other.ID, otherQueue
		h.insert(t, p)
	}
	const window = 10 * time.Second
	deadline := time.Now().Add(5 * time.Second)
	for len(h.receivedBy("g-")) == 0 && time.Now().Before(deadline) {
		time.Sleep(50 * time.Millisecond)
	}
	first := h.receivedBy("g-")
	if len(first) == 0 {
		t.Fatal("nothing sent")
	}
	time.Sleep(time.Until(first[0].Add(window + 500*time.Millisecond)))
	expectPace(t, "both apps", h.receivedBy("g-"), perMinute, window)
	if len(h.receivedBy("g-a-")) == 0 || len(h.receivedBy("g-b-")) == 0 {
		t.Fatalf("one app got nothing out: %d and %d", len(h.receivedBy("g-a-")), len(h.receivedBy("g-b-")))
	}
}

// TestSendAppRateLimit checks apps.settings.rate_limit holds across the
// app's queues.
func TestSendAppRateLimit(t *testing.T) {
	t.Parallel()
	h := newHarness(t, harnessOptions{limits: limiter(t, []string{testenv.RedisAddr(t)}, ratelimit.Options{})})
	perMinute := 60
	app, err := h.st.AppInsert(t.Context(), &store.AppInsertParams{Name: "limited app", Settings: store.AppSettings{RateLimit: &perMinute}})
	if err != nil {
		t.Fatalf("AppInsert: %v", err)
	}
	var emails []*store.Email
	for i, q := range []*store.Queue{h.addQueue(t, app.ID, "one", 0), h.addQueue(t, app.ID, "two", 0), h.addQueue(t, app.ID, "three", 0)} {
		p := h.params(fmt.Sprintf("app-%d@example.com", i))
		p.AppID, p.Queue = app.ID, q
		emails = append(emails, h.insert(t, p))
	}
	time.Sleep(700 * time.Millisecond)
	if n := len(h.receivedBy("app-")); n != 1 {
		t.Fatalf("%d of the app's 3 emails sent within 0.7s, want 1 (60/min over all its queues)", n)
	}
	reasons := 0
	for _, e := range emails {
		got, err := h.st.EmailGet(t.Context(), app.ID, e.ID)
		if err != nil {
			t.Fatalf("EmailGet: %v", err)
		}
		if got.WaitingReason != nil && *got.WaitingReason == "rate limited: app limit of 60/min" {
			reasons++
		}
	}
	if reasons != 2 {
		t.Fatalf("%d emails say they wait for the app limit, want 2", reasons)
	}
}

// TestSendRedisDown kills Redis in the middle of 1,000 emails: every email
// is still delivered, exactly once, under the in-process limit, and once
// Redis is back the limits are shared again.
func TestSendRedisDown(t *testing.T) {
	t.Parallel()
	srv := testenv.StartRedis(t)
	addrs := []string{srv.Addr}
	rdb := ratelimit.NewClient(addrs)
	t.Cleanup(func() { _ = rdb.Close() })
	opts := ratelimit.Options{Prefix: "mqtest:", Logger: testenv.Logger(t), RetryRedisAfter: 200 * time.Millisecond}
	l := ratelimit.New(rdb, opts)
	h := newHarness(t, harnessOptions{limits: l})
	const total, perMinute = 1000, 6000 // 100/s, burst 100
	q := h.addQueue(t, h.app.ID, "limited", perMinute)

	ctx := t.Context()
	var wg sync.WaitGroup
	for w := range 4 {
		wg.Go(func() {
			for i := w; i < total; i += 4 {
				p := h.params(fmt.Sprintf("down-%d@example.com", i))
				p.Queue = q
				if _, err := h.st.EmailInsert(ctx, p); err != nil {
					t.Errorf("EmailInsert: %v", err)
					return
				}
			}
		})
	}

	start := time.Now()
	waitSent := func(n int, within time.Duration) {
		t.Helper()
		wctx, cancel := context.WithTimeout(ctx, within)
		defer cancel()
		if err := h.sink.WaitForMessages(wctx, n); err != nil {
			t.Fatalf("%d of %d messages at the SMTP server after %v: %v", len(h.sink.Messages()), n, time.Since(start), err)
		}
	}
	waitSent(300, 30*time.Second)
	t.Logf("300 delivered %v after the start", time.Since(start))
	srv.Kill()
	killed := time.Now()
	t.Logf("Redis killed after %d messages", len(h.sink.Messages()))
	waitSent(400, 20*time.Second)
	if !l.Degraded() {
		t.Fatal("the limiter does not say it fell back to in-process limits")
	}
	wg.Wait()
	waitSent(total, 40*time.Second)
	// Counted from the kill: the in-process limit (one process, so all of
	// it) still held, within one burst.
	after := 0
	for _, m := range h.sink.Messages() {
		if m.Received.After(killed) {
			after++
		}
	}
	if max := 100 + int(time.Since(killed).Seconds()*100) + 5; after > max {
		t.Fatalf("%d messages in the %v after Redis died; the fallback limit allows %d", after, time.Since(killed), max)
	}
	time.Sleep(200 * time.Millisecond)
	if n, err := uniqueRecipients(h, "down-"); n != total || err != nil {
		t.Fatalf("%d distinct of %d delivered: %v", n, len(h.sink.Messages()), err)
	}

	t.Logf("all %d delivered %v after the start, %v after Redis died", total, time.Since(start), time.Since(killed))

	srv.Start()
	// The client reconnects within a second or two (go-redis retries
	// dialing in the background once dials have failed).
	back := time.Now()
	for l.TakeSend(ctx, ratelimit.SendLimits{AppID: h.app.ID, QueueID: uuid.New(), Queue: 60}).Local {
		if time.Since(back) > 10*time.Second {
			t.Fatal("limits still decided in-process 10s after Redis came back")
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("limits shared again %v after Redis restarted", time.Since(back))
	other := ratelimit.New(rdb, opts)
	s := ratelimit.SendLimits{AppID: h.app.ID, QueueID: uuid.New(), Queue: 60}
	if d := l.TakeSend(ctx, s); !d.Allowed || d.Local {
		t.Fatalf("after Redis came back: %+v, want allowed in Redis", d)
	}
	if d := other.TakeSend(ctx, s); d.Allowed || d.Local {
		t.Fatalf("another limiter after Redis came back: %+v, want refused by the shared budget", d)
	}
	if l.Degraded() {
		t.Fatal("limiter still degraded after Redis came back")
	}
}

// uniqueRecipients counts the distinct first recipients starting with
// prefix, and reports any received more than once.
func uniqueRecipients(h *harness, prefix string) (int, error) {
	seen := map[string]int{}
	for _, m := range h.sink.Messages() {
		if len(m.To) > 0 && strings.HasPrefix(m.To[0], prefix) {
			seen[m.To[0]]++
		}
	}
	for rcpt, n := range seen {
		if n > 1 {
			return len(seen), fmt.Errorf("%s received %d times", rcpt, n)
		}
	}
	return len(seen), nil
}
