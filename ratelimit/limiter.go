package ratelimit

import (
	"context"
	"log/slog"
	"math"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/go-redis/redis_rate/v10"
	"github.com/redis/go-redis/v9"
)

// Options configure a Limiter.
type Options struct {
	// Prefix starts every key (MQ_REDIS_PREFIX), so that several services,
	// or parallel tests, can share one Redis without sharing limits.
	Prefix string
	// Global is the service-wide send limit in emails/minute
	// (MQ_GLOBAL_RATE_LIMIT); 0 means none.
	Global int
	// API is the default per-key API limit in requests/second, with a burst
	// of the same (MQ_API_RATE_LIMIT); 0 means keys without their own
	// rate_limit are not limited.
	API int
	// Processes is how many processes share the limits
	// (MQ_RATE_LIMIT_PROCESSES): while Redis is unreachable each process
	// allows 1/Processes of every limit on its own. Default 1.
	Processes int
	// Timeout bounds each Redis call (default 250ms): a slow Redis must
	// make limits approximate, never make sending or the API wait.
	Timeout time.Duration
	// RetryRedisAfter is how long the limiter decides in-process after a
	// Redis call failed before trying Redis again (default 1s), so an
	// unreachable Redis costs one failed call a second, not one per email.
	RetryRedisAfter time.Duration
	Logger          *slog.Logger
}

// Limiter takes tokens from the send limits (limits.go) and the API keys'
// buckets (api.go). It decides in Redis, shared by every process, and falls
// back to an in-process limiter (local.go) with this process's share of
// each limit whenever Redis errors or times out. It never returns an error:
// a limit that cannot be checked exactly is checked approximately.
type Limiter struct {
	rdb       redis.UniversalClient
	rate      *redis_rate.Limiter
	prefix    string
	global    int
	api       int
	processes int
	timeout   time.Duration
	retry     time.Duration
	logger    *slog.Logger
	local     *local
	now       func() time.Time

	// downUntil (Unix nanoseconds) is when Redis may be tried again after
	// a failure; 0 while Redis answers.
	downUntil atomic.Int64
}

// New returns a Limiter over rdb (a single node or a cluster).
func New(rdb redis.UniversalClient, o Options) *Limiter {
	l := &Limiter{
		rdb: rdb, rate: redis_rate.NewLimiter(rdb), prefix: o.Prefix,
		global: o.Global, api: o.API, processes: max(o.Processes, 1),
		timeout: o.Timeout, retry: o.RetryRedisAfter, logger: o.Logger,
		local: newLocal(), now: time.Now,
	}
	if l.timeout <= 0 {
		l.timeout = 250 * time.Millisecond
	}
	if l.retry <= 0 {
		l.retry = time.Second
	}
	if l.logger == nil {
		l.logger = slog.New(slog.DiscardHandler)
	}
	return l
}

// Degraded reports whether limits are currently decided in-process
// because Redis failed (for /v1/health/detailed).
func (l *Limiter) Degraded() bool { return l.downUntil.Load() != 0 }

// redisUp reports whether to try Redis now: it answered last time, or the
// pause after its last failure is over (then one call probes it).
func (l *Limiter) redisUp() bool {
	until := l.downUntil.Load()
	return until == 0 || l.now().UnixNano() >= until
}

// redisFailed records a failed Redis call: the next RetryRedisAfter of
// decisions are made in-process.
func (l *Limiter) redisFailed(err error) {
	if l.downUntil.Swap(l.now().Add(l.retry).UnixNano()) == 0 {
		l.logger.Warn("Redis unreachable; rate limits fall back to this process's share",
			"error", err, "processes", l.processes)
	}
}

// redisOK records a successful Redis call.
func (l *Limiter) redisOK() {
	if l.downUntil.Swap(0) != 0 {
		l.logger.Info("Redis reachable again; rate limits are shared again")
	}
}

// Keys. Every key of one app carries the hash tag {app:<id>} so the app's
// and its queues' keys share a Redis Cluster slot, which the one-script
// app+queue check needs; the global key and each API key's bucket have
// tags of their own so the load spreads over the cluster. redis_rate puts
// "rate:" before the keys it is given; keys read by the scripts of this
// package spell it out, so both agree on one layout:
//
//	rate:<prefix>{global}:send            global send limit
//	rate:<prefix>{app:<id>}:send          app send limit
//	rate:<prefix>{app:<id>}:queue:<id>    queue send limit
//	rate:<prefix>{key:<id>}:api           an API key's bucket
const redisRatePrefix = "rate:"

// Lua time, as redis_rate keeps it: seconds since 2017-01-01 as a float.
// replicate_commands lets a script write after TIME on Redis before 5
// (it is the default since, and a no-op on 7).
const luaNow = `
redis.replicate_commands()
local t = redis.call("TIME")
local now = (t[1] - 1483228800) + (t[2] / 1000000)
`

// takeAll is GCRA over several keys at once, all or nothing: every key's
// theoretical arrival time (TAT) moves only if every key allows, so a
// denial at one level never spends a token of another. ARGV holds each
// key's emission interval and burst offset in seconds. It returns
// {1} when allowed, or {0, index of the denying key (1-based), seconds
// until it allows}. The keys must share a hash slot (Redis Cluster runs a
// script on one node); the state is the one redis_rate keeps, so either
// can read the other's keys.
var takeAll = redis.NewScript(luaNow + `
local tats = {}
local worst, worst_i = 0, 0
for i = 1, #KEYS do
  local interval = tonumber(ARGV[2 * i - 1])
  local offset = tonumber(ARGV[2 * i])
  local tat = tonumber(redis.call("GET", KEYS[i]) or now)
  tat = math.max(tat, now)
  local new_tat = tat + interval
  local wait = new_tat - offset - now
  if wait > 0 and wait > worst then
    worst, worst_i = wait, i
  end
  tats[i] = new_tat
end
if worst_i > 0 then
  return {0, worst_i, string.format("%.6f", worst)}
end
for i = 1, #KEYS do
  redis.call("SET", KEYS[i], string.format("%.6f", tats[i]), "EX", math.max(1, math.ceil(tats[i] - now)))
end
return {1}
`)

// giveBack returns one token taken by redis_rate (ARGV[1] is the emission
// interval in seconds): the TAT moves back by one interval, or the key goes
// when that leaves it in the past (a full bucket). It undoes a take
// exactly, except for what other takers saw in the milliseconds between.
var giveBack = redis.NewScript(luaNow + `
local tat = tonumber(redis.call("GET", KEYS[1]))
if not tat then
  return 0
end
local new_tat = tat - tonumber(ARGV[1])
if new_tat > now then
  redis.call("SET", KEYS[1], string.format("%.6f", new_tat), "EX", math.max(1, math.ceil(new_tat - now)))
else
  redis.call("DEL", KEYS[1])
end
return 1
`)

func seconds(d time.Duration) string {
	return strconv.FormatFloat(d.Seconds(), 'f', 6, 64)
}

// durationOf parses a script's seconds.
func durationOf(v any) time.Duration {
	s, _ := v.(string)
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsNaN(f) || f < 0 {
		return 0
	}
	return time.Duration(f * float64(time.Second))
}

// callCtx bounds one Redis call (Options.Timeout), keeping the caller's
// values but not waiting on its cancellation longer than that.
func (l *Limiter) callCtx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, l.timeout)
}
