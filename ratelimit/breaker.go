package ratelimit

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// Circuit breaker states, as shown by GET /v1/health/detailed.
const (
	BreakerClosed   = "closed"
	BreakerOpen     = "open"
	BreakerHalfOpen = "half_open"
)

// DefaultPrefix starts every Redis key Mail Queue writes unless told
// otherwise, so one Redis can be shared with other programs.
const DefaultPrefix = "mq:"

// Defaults of a Breaker (DESIGN.md, decision 7).
const (
	DefaultBreakerOpenAfter  = 5
	DefaultBreakerOpenFor    = 30 * time.Second
	DefaultBreakerCloseAfter = 3
	// DefaultBreakerProbeLease is how long the single half-open probe may
	// run before another worker may probe instead: a probe whose worker
	// died must not keep the host shut forever. It is longer than one SMTP
	// send normally takes.
	DefaultBreakerProbeLease = 2 * time.Minute
)

// breakerTTL bounds how long a host's state outlives its last change, so
// hosts nobody sends to any more vanish from Redis and the health report.
const breakerTTL = 24 * time.Hour

// maxListedHosts caps the hosts the health report lists.
const maxListedHosts = 1000

// Breaker is a circuit breaker per SMTP host, its state kept in Redis so
// every worker process sees the same one (DESIGN.md, decision 7):
//
//   - closed: sends go through; OpenAfter consecutive failures open it.
//   - open: sends are refused (the caller snoozes the job) for OpenFor.
//   - half_open: after OpenFor, one send at a time (a probe, held by a
//     lease of ProbeLease) is let through; CloseAfter successful probes
//     close it, one failure opens it again for another OpenFor.
//
// Each transition is one Lua script on one key, so concurrent workers
// cannot both take the probe or lose a failure count. Times come from the
// Redis server's clock (TIME), so workers with skewed clocks agree.
//
// When Redis fails (the client's timeouts are short), the Breaker answers
// from an in-process breaker with the same rules instead, so a Redis outage
// neither stops sending nor lets a dead host be hammered by this process;
// what other processes see is then unknown. The in-process state is not
// copied back to Redis when it returns: Redis resumes where it was.
type Breaker struct {
	// OpenAfter is how many consecutive failures open the breaker.
	OpenAfter int
	// OpenFor is how long the breaker stays open before a probe.
	OpenFor time.Duration
	// CloseAfter is how many successful probes close a half-open breaker.
	CloseAfter int
	// ProbeLease is how long one probe holds the half-open breaker.
	ProbeLease time.Duration

	rdb    redis.UniversalClient
	prefix string
	local  localBreakers
	// redisDown is set while the last Redis call failed.
	redisDown atomic.Bool
	// skipUntil (unix ns) is when Redis is tried again after a failure:
	// meanwhile the in-process breaker answers at once, so an outage costs
	// one timeout per redisRetry, not one per send.
	skipUntil atomic.Int64
	// healthy maps a host to when (unix ns) this process stops trusting
	// that its breaker is closed with no failures: until then a send to it
	// asks nothing of Redis, and its success reports nothing (there is no
	// streak to break). A success reported to Redis sets it; any failure
	// clears it. Another process's view reaches this one within
	// HealthyFor, so a busy healthy host costs two Redis calls per
	// HealthyFor per process instead of two per send.
	healthy sync.Map
	// HealthyFor is how long a closed breaker is trusted without asking
	// Redis again; 0 asks on every send.
	HealthyFor time.Duration
}

// DefaultBreakerHealthyFor is how long a process trusts that a host with
// no failures is still healthy without asking Redis.
const DefaultBreakerHealthyFor = 250 * time.Millisecond

func (b *Breaker) trusted(host string) bool {
	v, ok := b.healthy.Load(host)
	return ok && time.Now().UnixNano() < v.(int64)
}

// redisRetry is how long the breaker stays local after a Redis failure.
const redisRetry = time.Second

// useRedis reports whether Redis should be asked now.
func (b *Breaker) useRedis() bool { return time.Now().UnixNano() >= b.skipUntil.Load() }

// redisFailed switches to the in-process breaker for redisRetry.
func (b *Breaker) redisFailed() {
	b.redisDown.Store(true)
	b.skipUntil.Store(time.Now().Add(redisRetry).UnixNano())
}

// NewBreaker returns a Breaker with the defaults above, keeping its state
// in rdb under keys starting with prefix (DefaultPrefix when empty).
func NewBreaker(rdb redis.UniversalClient, prefix string) *Breaker {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	return &Breaker{
		OpenAfter: DefaultBreakerOpenAfter, OpenFor: DefaultBreakerOpenFor,
		CloseAfter: DefaultBreakerCloseAfter, ProbeLease: DefaultBreakerProbeLease,
		HealthyFor: DefaultBreakerHealthyFor, rdb: rdb, prefix: prefix,
	}
}

// BreakerDecision is the answer to Allow.
type BreakerDecision struct {
	// Allowed is true when the send may go ahead.
	Allowed bool
	// State is the breaker's state after the call.
	State string
	// RetryIn is, when not allowed, how long until a probe may be tried.
	RetryIn time.Duration
	// Changed is set when this call moved the breaker (open → half_open).
	Changed bool
	// Local is set when Redis failed and the in-process breaker answered.
	Local bool
}

// BreakerChange is the state change a Report caused, if any.
type BreakerChange struct {
	From, To string
	// Local is set when Redis failed and the in-process breaker answered.
	Local bool
}

// Changed reports whether the report moved the breaker.
func (c BreakerChange) Changed() bool { return c.From != c.To }

// key is the hash of one host. The braces make it a hash tag: a host's
// state is one key in one Cluster slot.
func (b *Breaker) key(host string) string { return b.prefix + "breaker:{" + host + "}" }

// hostsKey is the small set of hosts that have (had) a breaker state, so
// the health report lists them without scanning the keyspace.
func (b *Breaker) hostsKey() string { return b.prefix + "breakers" }

// allowScript decides whether a send to the host may go.
// KEYS[1] breaker hash; ARGV: open_for_ms, probe_lease_ms, ttl_ms.
// Returns {allowed 0/1, state, retry_in_ms, changed 0/1}.
var allowScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local st = redis.call('HGET', KEYS[1], 'state')
if not st or st == 'closed' then
  return {1, 'closed', 0, 0}
end
local changed = 0
if st == 'open' then
  local opened = tonumber(redis.call('HGET', KEYS[1], 'opened_at')) or 0
  local left = opened + tonumber(ARGV[1]) - now
  if left > 0 then
    return {0, 'open', left, 0}
  end
  redis.call('HSET', KEYS[1], 'state', 'half_open', 'successes', 0, 'probe_until', 0)
  redis.call('PEXPIRE', KEYS[1], ARGV[3])
  changed = 1
end
local until_ = tonumber(redis.call('HGET', KEYS[1], 'probe_until')) or 0
if now < until_ then
  return {0, 'half_open', until_ - now, changed}
end
redis.call('HSET', KEYS[1], 'probe_until', now + tonumber(ARGV[2]))
return {1, 'half_open', 0, changed}
`)

// reportScript records the outcome of a send.
// KEYS[1] breaker hash; ARGV: success 0/1, open_after, close_after, ttl_ms.
// Returns {from, to}.
var reportScript = redis.NewScript(`
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local st = redis.call('HGET', KEYS[1], 'state') or 'closed'
if ARGV[1] == '1' then
  if st == 'half_open' then
    local s = redis.call('HINCRBY', KEYS[1], 'successes', 1)
    if s >= tonumber(ARGV[3]) then
      redis.call('HSET', KEYS[1], 'state', 'closed', 'failures', 0, 'successes', 0, 'probe_until', 0)
      redis.call('PEXPIRE', KEYS[1], ARGV[4])
      return {st, 'closed'}
    end
    -- the probe is done: the next one may go
    redis.call('HSET', KEYS[1], 'probe_until', 0)
  elseif st == 'closed' then
    -- touch the key only when there is a streak to break: healthy hosts
    -- cost one read per send and no writes
    local f = tonumber(redis.call('HGET', KEYS[1], 'failures')) or 0
    if f > 0 then
      redis.call('HSET', KEYS[1], 'failures', 0)
    end
  end
  -- open: a send started before the breaker opened; it proves little
  return {st, st}
end
if st == 'half_open' then
  redis.call('HSET', KEYS[1], 'state', 'open', 'opened_at', now, 'successes', 0, 'probe_until', 0)
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
  return {st, 'open'}
end
if st == 'open' then
  return {st, st}
end
local f = redis.call('HINCRBY', KEYS[1], 'failures', 1)
redis.call('PEXPIRE', KEYS[1], ARGV[4])
if f >= tonumber(ARGV[2]) then
  redis.call('HSET', KEYS[1], 'state', 'open', 'opened_at', now, 'successes', 0, 'probe_until', 0)
  return {st, 'open'}
end
redis.call('HSET', KEYS[1], 'state', 'closed')
return {st, st}
`)

// Allow reports whether a send to host may go ahead now. It never fails:
// when Redis does, the in-process breaker answers.
func (b *Breaker) Allow(ctx context.Context, host string) BreakerDecision {
	if b.trusted(host) {
		return BreakerDecision{Allowed: true, State: BreakerClosed}
	}
	d := b.allow(ctx, host)
	from := d.State
	if d.Changed {
		from = BreakerOpen
	}
	observe(host, from, d.State, d.Local)
	return d
}

func (b *Breaker) allow(ctx context.Context, host string) BreakerDecision {
	if !b.useRedis() {
		d := b.local.allow(b, host, time.Now())
		d.Local = true
		return d
	}
	res, err := allowScript.Run(ctx, b.rdb, []string{b.key(host)},
		b.OpenFor.Milliseconds(), b.ProbeLease.Milliseconds(), breakerTTL.Milliseconds()).Slice()
	if err == nil {
		var d BreakerDecision
		if err = parseReply(res, func(v []any) error {
			d = BreakerDecision{
				Allowed: toInt(v[0]) == 1, State: toString(v[1]),
				RetryIn: time.Duration(toInt(v[2])) * time.Millisecond, Changed: toInt(v[3]) == 1,
			}
			return nil
		}, 4); err == nil {
			b.redisDown.Store(false)
			return d
		}
	}
	b.redisFailed()
	d := b.local.allow(b, host, time.Now())
	d.Local = true
	return d
}

// Report records the outcome of a send to host that Allow let through:
// success or a failure that is the host's fault (see the caller for what
// counts). It never fails: when Redis does, the in-process breaker records.
func (b *Breaker) Report(ctx context.Context, host string, success bool) BreakerChange {
	if !success {
		b.healthy.Delete(host)
	} else if b.trusted(host) {
		return BreakerChange{From: BreakerClosed, To: BreakerClosed}
	}
	c := b.report(ctx, host, success)
	if success && c.To == BreakerClosed && b.HealthyFor > 0 {
		b.healthy.Store(host, time.Now().Add(b.HealthyFor).UnixNano())
	}
	observe(host, c.From, c.To, c.Local)
	return c
}

func (b *Breaker) report(ctx context.Context, host string, success bool) BreakerChange {
	if !b.useRedis() {
		c := b.local.report(b, host, success, time.Now())
		c.Local = true
		return c
	}
	ok := 0
	if success {
		ok = 1
	}
	res, err := reportScript.Run(ctx, b.rdb, []string{b.key(host)},
		ok, b.OpenAfter, b.CloseAfter, breakerTTL.Milliseconds()).Slice()
	if err == nil {
		var c BreakerChange
		if err = parseReply(res, func(v []any) error {
			c = BreakerChange{From: toString(v[0]), To: toString(v[1])}
			return nil
		}, 2); err == nil {
			b.redisDown.Store(false)
			if !success {
				// Listed for the health report; a lost SADD only hides
				// the host there, it changes no decision.
				// It expires with the last state it lists.
				p := b.rdb.Pipeline()
				p.SAdd(ctx, b.hostsKey(), host)
				p.Expire(ctx, b.hostsKey(), breakerTTL)
				_, _ = p.Exec(ctx)
			}
			return c
		}
	}
	b.redisFailed()
	c := b.local.report(b, host, success, time.Now())
	c.Local = true
	return c
}

// BreakerStatus is one host's breaker as listed by States.
type BreakerStatus struct {
	Host  string
	State string
}

// States lists the hosts with a breaker state, sorted by host, and whether
// they came from Redis (false: Redis failed and this process's own
// breakers are listed).
func (b *Breaker) States(ctx context.Context) ([]BreakerStatus, bool, error) {
	hosts, err := b.rdb.SRandMemberN(ctx, b.hostsKey(), maxListedHosts).Result()
	if err != nil {
		return b.local.states(), false, fmt.Errorf("listing circuit breakers: %w", err)
	}
	cmds := make([]*redis.StringCmd, len(hosts))
	_, err = b.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, h := range hosts {
			cmds[i] = p.HGet(ctx, b.key(h), "state")
		}
		return nil
	})
	if err != nil && !errors.Is(err, redis.Nil) {
		return b.local.states(), false, fmt.Errorf("reading circuit breakers: %w", err)
	}
	out := make([]BreakerStatus, 0, len(hosts))
	var gone []any
	for i, h := range hosts {
		st, err := cmds[i].Result()
		if errors.Is(err, redis.Nil) {
			gone = append(gone, h) // expired: forget the host
			continue
		}
		out = append(out, BreakerStatus{Host: h, State: st})
	}
	if len(gone) > 0 {
		b.rdb.SRem(ctx, b.hostsKey(), gone...)
	}
	slices.SortFunc(out, func(a, b BreakerStatus) int { return compareStrings(a.Host, b.Host) })
	return out, true, nil
}

// Degraded reports whether the last Redis call failed, i.e. decisions are
// being made by this process alone.
func (b *Breaker) Degraded() bool { return b.redisDown.Load() }

func parseReply(v []any, fn func([]any) error, n int) error {
	if len(v) != n {
		return fmt.Errorf("circuit breaker script returned %d values, want %d", len(v), n)
	}
	return fn(v)
}

func toInt(v any) int64 {
	n, _ := v.(int64)
	return n
}

func toString(v any) string {
	s, _ := v.(string)
	return s
}

func compareStrings(a, b string) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}

// localBreakers is the in-process stand-in used while Redis fails. It
// follows the same rules as the scripts.
type localBreakers struct {
	mu    sync.Mutex
	hosts map[string]*localBreaker
}

type localBreaker struct {
	state      string
	failures   int
	successes  int
	openedAt   time.Time
	probeUntil time.Time
	touched    time.Time
}

// get returns host's breaker, creating it; expired ones are swept when the
// map grows, as Redis would expire them.
func (l *localBreakers) get(host string, now time.Time) *localBreaker {
	if l.hosts == nil {
		l.hosts = make(map[string]*localBreaker)
	}
	lb, ok := l.hosts[host]
	if !ok {
		if len(l.hosts) >= maxListedHosts {
			for h, v := range l.hosts {
				if now.Sub(v.touched) > breakerTTL {
					delete(l.hosts, h)
				}
			}
		}
		lb = &localBreaker{state: BreakerClosed}
		l.hosts[host] = lb
	}
	lb.touched = now
	return lb
}

func (l *localBreakers) allow(b *Breaker, host string, now time.Time) BreakerDecision {
	l.mu.Lock()
	defer l.mu.Unlock()
	lb := l.get(host, now)
	d := BreakerDecision{State: lb.state}
	switch lb.state {
	case BreakerClosed:
		d.Allowed = true
		return d
	case BreakerOpen:
		if left := lb.openedAt.Add(b.OpenFor).Sub(now); left > 0 {
			d.RetryIn = left
			return d
		}
		lb.state, lb.successes, lb.probeUntil = BreakerHalfOpen, 0, time.Time{}
		d.State, d.Changed = BreakerHalfOpen, true
	}
	if now.Before(lb.probeUntil) {
		d.RetryIn = lb.probeUntil.Sub(now)
		return d
	}
	lb.probeUntil = now.Add(b.ProbeLease)
	d.Allowed = true
	return d
}

func (l *localBreakers) report(b *Breaker, host string, success bool, now time.Time) BreakerChange {
	l.mu.Lock()
	defer l.mu.Unlock()
	lb := l.get(host, now)
	c := BreakerChange{From: lb.state, To: lb.state}
	switch {
	case success && lb.state == BreakerHalfOpen:
		lb.successes++
		lb.probeUntil = time.Time{}
		if lb.successes >= b.CloseAfter {
			lb.state, lb.failures, lb.successes = BreakerClosed, 0, 0
		}
	case success && lb.state == BreakerClosed:
		lb.failures = 0
	case !success && lb.state == BreakerHalfOpen:
		lb.state, lb.openedAt, lb.successes, lb.probeUntil = BreakerOpen, now, 0, time.Time{}
	case !success && lb.state == BreakerClosed:
		lb.failures++
		if lb.failures >= b.OpenAfter {
			lb.state, lb.openedAt, lb.successes, lb.probeUntil = BreakerOpen, now, 0, time.Time{}
		}
	}
	c.To = lb.state
	return c
}

func (l *localBreakers) states() []BreakerStatus {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make([]BreakerStatus, 0, len(l.hosts))
	for h, lb := range l.hosts {
		if lb.state == BreakerClosed && lb.failures == 0 {
			continue
		}
		out = append(out, BreakerStatus{Host: h, State: lb.state})
	}
	slices.SortFunc(out, func(a, b BreakerStatus) int { return compareStrings(a.Host, b.Host) })
	return out
}
