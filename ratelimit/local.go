package ratelimit

import (
	"math"
	"sync"
	"time"
)

// rule is one limit as GCRA sees it: one token every interval, and up to
// burst tokens at once after a quiet spell. Every limit of this package,
// shared or in-process, is a rule, so both sides do the same maths.
type rule struct {
	interval time.Duration // emission interval: period / rate
	burst    int
}

// newRule is rate tokens per period with the given burst (at least 1).
func newRule(rate int, period time.Duration, burst int) rule {
	return rule{interval: period / time.Duration(rate), burst: max(burst, 1)}
}

// share is this process's part of r when n processes split it because Redis
// is unreachable: each gets 1/n of the rate and of the burst (rounded up,
// at least 1). The rule (MQ_RATE_LIMIT_PROCESSES): with n processes running
// the same limit, their sum stays at the shared limit (plus at most n-1
// extra tokens of burst from the rounding); with fewer processes than n
// running, the service sends below the limit, never above it.
func (r rule) share(n int) rule {
	if n <= 1 {
		return r
	}
	return rule{
		interval: r.interval * time.Duration(n),
		burst:    int(math.Ceil(float64(r.burst) / float64(n))),
	}
}

// level is one limit to take a token from, under its key.
type level struct {
	key  string
	rule rule
}

// outcome is a decision over one or more levels: allowed (a token taken
// from every level) or denied at level denied (an index into the levels),
// with how long until that level has a token again.
type outcome struct {
	allowed    bool
	denied     int
	retryAfter time.Duration
	// remaining and resetAfter describe the first level: tokens left now,
	// and how long until it is full again.
	remaining  int
	resetAfter time.Duration
}

// local is the in-process limiter used while Redis is unreachable. It keeps
// each key's theoretical arrival time (GCRA's only state) in a map, dropping
// entries that have become full buckets again.
type local struct {
	mu        sync.Mutex
	tats      map[string]time.Time
	lastSweep time.Time
}

func newLocal() *local { return &local{tats: map[string]time.Time{}} }

// take takes one token from every level, or from none: the levels are
// checked and updated under one lock, so a denial at one level never uses
// up a token of another.
func (l *local) take(now time.Time, levels []level) outcome {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.sweep(now)
	next := make([]time.Time, len(levels))
	out := outcome{allowed: true}
	for i, lv := range levels {
		tat := l.tats[lv.key]
		if tat.Before(now) {
			tat = now
		}
		newTAT := tat.Add(lv.rule.interval)
		allowAt := newTAT.Add(-time.Duration(lv.rule.burst) * lv.rule.interval)
		if wait := allowAt.Sub(now); wait > 0 {
			if !out.allowed && wait <= out.retryAfter {
				continue
			}
			out.allowed, out.denied, out.retryAfter = false, i, wait
			continue
		}
		next[i] = newTAT
		if i == 0 {
			out.remaining = int(now.Sub(allowAt) / lv.rule.interval)
			out.resetAfter = newTAT.Sub(now)
		}
	}
	if !out.allowed {
		if out.denied != 0 || len(levels) == 0 {
			return out
		}
		if tat := l.tats[levels[0].key]; tat.After(now) {
			out.resetAfter = tat.Sub(now)
		}
		return out
	}
	for i, lv := range levels {
		l.tats[lv.key] = next[i]
	}
	return out
}

// sweep forgets keys whose bucket is full again (their TAT is past), at
// most once a minute, so the map holds only recently limited keys.
func (l *local) sweep(now time.Time) {
	if now.Sub(l.lastSweep) < time.Minute {
		return
	}
	l.lastSweep = now
	for k, tat := range l.tats {
		if tat.Before(now) {
			delete(l.tats, k)
		}
	}
}
