package ratelimit

import (
	"context"
	"fmt"
	"time"

	"github.com/go-redis/redis_rate/v10"
	"github.com/google/uuid"
)

// Send limit levels, as a Decision names them.
const (
	LevelGlobal = "global"
	LevelApp    = "app"
	LevelQueue  = "queue"
)

// SendLimits are the limits one email is sent under, in emails/minute;
// 0 means that level has no limit.
type SendLimits struct {
	AppID   uuid.UUID
	QueueID uuid.UUID
	App     int // apps.settings.rate_limit
	Queue   int // queues.rate_limit
	// SkipGlobal leaves the global limit out: sandbox email never reaches
	// SMTP, so it must not use up what real email may send.
	SkipGlobal bool
}

// Decision is whether an email may be sent now.
type Decision struct {
	Allowed bool
	// Level is the level that refused (LevelGlobal, LevelApp, LevelQueue)
	// and Limit its limit in emails/minute.
	Level string
	Limit int
	// RetryAfter is when that level has a token again.
	RetryAfter time.Duration
	// Local is true when Redis was unreachable and this process decided
	// alone, with its share of each limit.
	Local bool
}

// Reason says why a refused email waits, for emails.waiting_reason.
func (d Decision) Reason() string {
	return fmt.Sprintf("rate limited: %s limit of %d/min", d.Level, d.Limit)
}

// SendBurst is how many emails a limit of perMinute lets out at once after
// a quiet spell: a second's worth, at least 1. A whole minute's worth at
// once would meet "600/min" with 600 emails in the first second, which is
// not what a receiving server that asked for 600/min means; one second's
// worth keeps the flow smooth while not penalising a handful sent together.
func SendBurst(perMinute int) int {
	return max(1, (perMinute+59)/60)
}

func sendRule(perMinute int) rule {
	return newRule(perMinute, time.Minute, SendBurst(perMinute))
}

func sendLimit(perMinute int) redis_rate.Limit {
	return redis_rate.Limit{Rate: perMinute, Burst: SendBurst(perMinute), Period: time.Minute}
}

// TakeSend takes one token at every limited level for one email, or none.
//
// Exactness: the app and queue levels are taken together by one Lua script
// (takeAll) over keys that share the app's hash tag, so a denial by the
// queue never spends an app token or the reverse. The global level lives
// in its own slot, so it is taken first with redis_rate; if the app or
// queue level then refuses, the global token is given back (giveBack),
// which restores the global budget exactly — other emails may briefly see
// one token fewer in the milliseconds between, never one more.
func (l *Limiter) TakeSend(ctx context.Context, s SendLimits) Decision {
	global := l.global
	if s.SkipGlobal {
		global = 0
	}
	if global == 0 && s.App == 0 && s.Queue == 0 {
		return Decision{Allowed: true}
	}
	if l.redisUp() {
		d, err := l.takeSendRedis(ctx, s, global)
		if err == nil {
			l.redisOK()
			return d
		}
		l.redisFailed(err)
	}
	return l.takeSendLocal(s, global)
}

func (l *Limiter) globalKey() string { return l.prefix + "{global}:send" }

func (l *Limiter) appKey(app uuid.UUID) string {
	return l.prefix + "{app:" + app.String() + "}:send"
}

func (l *Limiter) queueKey(app, queue uuid.UUID) string {
	return l.prefix + "{app:" + app.String() + "}:queue:" + queue.String()
}

func (l *Limiter) takeSendRedis(ctx context.Context, s SendLimits, global int) (Decision, error) {
	ctx, cancel := l.callCtx(ctx)
	defer cancel()
	if global > 0 {
		res, err := l.rate.Allow(ctx, l.globalKey(), sendLimit(global))
		if err != nil {
			return Decision{}, fmt.Errorf("taking a global send token: %w", err)
		}
		if res.Allowed == 0 {
			return Decision{Level: LevelGlobal, Limit: global, RetryAfter: res.RetryAfter}, nil
		}
	}
	var keys []string
	var args []any
	var limits []int
	var names []string
	add := func(key, name string, perMinute int) {
		r := sendRule(perMinute)
		keys = append(keys, redisRatePrefix+key)
		args = append(args, seconds(r.interval), seconds(r.interval*time.Duration(r.burst)))
		limits, names = append(limits, perMinute), append(names, name)
	}
	if s.App > 0 {
		add(l.appKey(s.AppID), LevelApp, s.App)
	}
	if s.Queue > 0 {
		add(l.queueKey(s.AppID, s.QueueID), LevelQueue, s.Queue)
	}
	if len(keys) == 0 {
		return Decision{Allowed: true}, nil
	}
	v, err := takeAll.Run(ctx, l.rdb, keys, args...).Slice()
	if err != nil {
		return Decision{}, fmt.Errorf("taking app and queue send tokens: %w", err)
	}
	if allowed, _ := v[0].(int64); allowed == 1 {
		return Decision{Allowed: true}, nil
	}
	i, _ := v[1].(int64)
	if i < 1 || int(i) > len(names) || len(v) < 3 {
		return Decision{}, fmt.Errorf("taking app and queue send tokens: unexpected answer %v", v)
	}
	d := Decision{Level: names[i-1], Limit: limits[i-1], RetryAfter: durationOf(v[2])}
	if global > 0 {
		r := sendRule(global)
		if err := giveBack.Run(ctx, l.rdb, []string{redisRatePrefix + l.globalKey()}, seconds(r.interval)).Err(); err != nil {
			// The global budget is one token short for one interval: a
			// small undercount, never an overrun. Not worth failing over.
			l.logger.Warn("could not give back a global send token", "error", err)
		}
	}
	return d, nil
}

func (l *Limiter) takeSendLocal(s SendLimits, global int) Decision {
	var levels []level
	var limits []int
	var names []string
	add := func(key, name string, perMinute int) {
		levels = append(levels, level{key: key, rule: sendRule(perMinute).share(l.processes)})
		limits, names = append(limits, perMinute), append(names, name)
	}
	if global > 0 {
		add(l.globalKey(), LevelGlobal, global)
	}
	if s.App > 0 {
		add(l.appKey(s.AppID), LevelApp, s.App)
	}
	if s.Queue > 0 {
		add(l.queueKey(s.AppID, s.QueueID), LevelQueue, s.Queue)
	}
	o := l.local.take(l.now(), levels)
	if o.allowed {
		return Decision{Allowed: true, Local: true}
	}
	return Decision{
		Level: names[o.denied], Limit: limits[o.denied], RetryAfter: o.retryAfter, Local: true,
	}
}
