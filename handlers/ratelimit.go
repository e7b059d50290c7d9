package handlers

import (
	"context"
	"log/slog"
	"math"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/mailqueue/mailqueue/config"
	"github.com/mailqueue/mailqueue/ratelimit"
	"github.com/mailqueue/mailqueue/store"
)

// limiterFrom returns the Limiter of d, or builds one from its config and
// Redis: a process running both the API and the workers passes one, so
// both see Redis go down and come back together.
func limiterFrom(d Deps) *ratelimit.Limiter {
	if d.Limiter != nil || d.Redis == nil {
		return d.Limiter
	}
	return ratelimit.New(d.Redis, limiterOptions(d.Config, d.Logger))
}

// limiterOptions are the rate-limit settings of c as ratelimit takes them.
func limiterOptions(c *config.Config, logger *slog.Logger) ratelimit.Options {
	return ratelimit.Options{
		Prefix: c.RedisPrefix, Global: c.GlobalRateLimit, API: c.APIRateLimit,
		Processes: c.RateLimitProcesses, Logger: logger,
	}
}

// rateHeaders carries the X-RateLimit-* values from the security handler,
// which knows the key and takes its token, to the response writer, which
// must send them on every response of that key, successes and errors
// alike. ogen gives the security handler no access to the response, so the
// request context carries this holder from the middleware that made it.
type rateHeaders struct {
	mu        sync.Mutex
	set       bool
	limit     int
	remaining int
	reset     int64 // Unix seconds at which the bucket is full again
}

type rateHeadersKey struct{}

func (r *rateHeaders) fill(res ratelimit.APIResult, now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.set, r.limit, r.remaining = true, res.Limit, res.Remaining
	r.reset = int64(math.Ceil(float64(now.Add(res.ResetAfter).UnixNano()) / 1e9))
}

func (r *rateHeaders) write(h http.Header) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.set {
		return
	}
	h.Set("X-RateLimit-Limit", strconv.Itoa(r.limit))
	h.Set("X-RateLimit-Remaining", strconv.Itoa(r.remaining))
	h.Set("X-RateLimit-Reset", strconv.FormatInt(r.reset, 10))
}

// withRateHeaders gives each request a rateHeaders and writes what the
// security handler put there just before the response's headers go out.
func withRateHeaders(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rh := &rateHeaders{}
		next.ServeHTTP(&rateHeaderWriter{ResponseWriter: w, rh: rh},
			r.WithContext(context.WithValue(r.Context(), rateHeadersKey{}, rh)))
	})
}

type rateHeaderWriter struct {
	http.ResponseWriter
	rh      *rateHeaders
	written bool
}

func (w *rateHeaderWriter) WriteHeader(code int) {
	if !w.written {
		w.written = true
		w.rh.write(w.Header())
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *rateHeaderWriter) Write(b []byte) (int, error) {
	if !w.written {
		w.WriteHeader(http.StatusOK)
	}
	return w.ResponseWriter.Write(b)
}

func (w *rateHeaderWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// takeAPIToken takes one request from key k's bucket (its own rate_limit,
// else MQ_API_RATE_LIMIT), fills the X-RateLimit-* headers, and refuses
// with 429 and Retry-After when the bucket is empty. Admin-secret requests
// never come here: they are not limited per key.
func (h *Handler) takeAPIToken(ctx context.Context, k *store.APIKeyAuth) error {
	if h.limiter == nil {
		return nil
	}
	override := 0
	if k.RateLimit != nil {
		override = int(*k.RateLimit)
	}
	res := h.limiter.TakeAPI(ctx, k.ID, override)
	if res.Limit == 0 {
		return nil
	}
	if rh, ok := ctx.Value(rateHeadersKey{}).(*rateHeaders); ok {
		rh.fill(res, time.Now())
	}
	if res.Allowed {
		return nil
	}
	e := newAPIError(http.StatusTooManyRequests, "rate_limited",
		"this API key is limited to %d requests per second; retry after %s", res.Limit, res.RetryAfter.Round(time.Millisecond))
	e.retryAfter = max(1, int(math.Ceil(res.RetryAfter.Seconds())))
	return e
}
