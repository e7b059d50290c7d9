package ratelimit

import (
	"context"
	"time"

	"github.com/go-redis/redis_rate/v10"
	"github.com/google/uuid"
)

// APIResult is the outcome of one API request against its key's bucket,
// with what the X-RateLimit-* headers report.
type APIResult struct {
	Allowed bool
	// Limit is the key's limit in requests/second (0: not limited, and
	// the other fields mean nothing).
	Limit int
	// Remaining is how many more requests the bucket would take now.
	Remaining int
	// RetryAfter is, when refused, how long until the next request fits.
	RetryAfter time.Duration
	// ResetAfter is how long until the bucket is full again.
	ResetAfter time.Duration
	// Local is true when Redis was unreachable and this process decided
	// alone, with its share of the limit.
	Local bool
}

// APILimit is the limit in requests/second of a key whose own rate_limit
// is override (0 or less: none set): its own if set, else the default
// (Options.API), which may be 0 for none.
func (l *Limiter) APILimit(override int) int {
	if override > 0 {
		return override
	}
	return l.api
}

// TakeAPI takes one request from the bucket of API key keyID. The bucket
// is a token bucket (GCRA, redis_rate) of limit requests/second with a
// burst of limit: a second's worth of requests may come at once.
func (l *Limiter) TakeAPI(ctx context.Context, keyID uuid.UUID, override int) APIResult {
	limit := l.APILimit(override)
	if limit <= 0 {
		return APIResult{Allowed: true}
	}
	key := l.prefix + "{key:" + keyID.String() + "}:api"
	if l.redisUp() {
		cctx, cancel := l.callCtx(ctx)
		res, err := l.rate.Allow(cctx, key, redis_rate.PerSecond(limit))
		cancel()
		if err == nil {
			l.redisOK()
			return APIResult{
				Allowed: res.Allowed > 0, Limit: limit, Remaining: max(res.Remaining, 0),
				RetryAfter: max(res.RetryAfter, 0), ResetAfter: max(res.ResetAfter, 0),
			}
		}
		l.redisFailed(err)
	}
	r := newRule(limit, time.Second, limit).share(l.processes)
	o := l.local.take(l.now(), []level{{key: key, rule: r}})
	return APIResult{
		Allowed: o.allowed, Limit: limit, Remaining: o.remaining,
		RetryAfter: o.retryAfter, ResetAfter: o.resetAfter, Local: true,
	}
}
