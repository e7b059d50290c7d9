package ratelimit

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"
)

// Dedup is the Redis fast path in front of the PostgreSQL idempotency
// record (DESIGN.md, decision 3). A request with an Idempotency-Key first
// claims the key here with SET NX: while it runs, duplicates are turned
// away (409) without reaching PostgreSQL; once it has committed, the
// response is cached here so replays and mismatches are answered from
// Redis too. PostgreSQL stays authoritative: whoever holds the claim still
// goes through the PostgreSQL record, and on any Redis error callers skip
// this fast path and use PostgreSQL alone.
type Dedup struct {
	// TTL is how long a completed response is kept, as long as the
	// PostgreSQL record.
	TTL time.Duration
	// InFlightTTL bounds a claim whose request died without releasing it.
	// It may be short: a request outliving it only loses the fast path, the
	// PostgreSQL lock still turns duplicates away.
	InFlightTTL time.Duration

	rdb    redis.UniversalClient
	prefix string
	// skipUntil (unix ns): after a Redis failure the fast path is skipped
	// for redisRetry, so an outage costs one timeout a second, not one per
	// request.
	skipUntil atomic.Int64
}

// ErrDedupSkipped means Redis failed moments ago and is not being asked.
var ErrDedupSkipped = errors.New("idempotency fast path skipped after a recent Redis failure")

// Defaults of a Dedup.
const (
	DefaultDedupTTL         = 24 * time.Hour
	DefaultDedupInFlightTTL = 30 * time.Second
)

// ErrDedupInFlight means a request with the key is being processed.
var ErrDedupInFlight = errors.New("a request with this Idempotency-Key is in progress")

// ErrDedupMismatch means the key was used with another request.
var ErrDedupMismatch = errors.New("this Idempotency-Key was used with a different request")

// NewDedup returns a Dedup keeping its keys in rdb under prefix
// (DefaultPrefix when empty).
func NewDedup(rdb redis.UniversalClient, prefix string) *Dedup {
	if prefix == "" {
		prefix = DefaultPrefix
	}
	return &Dedup{TTL: DefaultDedupTTL, InFlightTTL: DefaultDedupInFlightTTL, rdb: rdb, prefix: prefix}
}

// DedupRecord is a completed request as cached: what identifies it and the
// response given, its body sealed by the caller.
type DedupRecord struct {
	Operation   string `json:"op"`
	RequestHash []byte `json:"hash"`
	StatusCode  int    `json:"status"`
	Body        []byte `json:"body"`
	KeyID       string `json:"key_id"`
}

// DedupClaim is held by the one request allowed to run for a key.
type DedupClaim struct {
	key   string
	token string
}

// key is the Redis key of an app's Idempotency-Key. The app id is the hash
// tag (one tenant's keys share a Cluster slot); the client's key is hashed
// so any text of any length makes a short, safe Redis key.
func (d *Dedup) key(appID uuid.UUID, key string) string {
	sum := sha256.Sum256([]byte(key))
	return d.prefix + "idem:{" + appID.String() + "}:" + hex.EncodeToString(sum[:])
}

// claimScript claims KEYS[1] with ARGV[1] for ARGV[2] ms, or returns what
// holds it.
var claimScript = redis.NewScript(`
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return false
end
return redis.call('GET', KEYS[1])
`)

// releaseScript deletes KEYS[1] if it still holds claim ARGV[1].
var releaseScript = redis.NewScript(`
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
`)

const (
	inFlightMark = "i:"
	completeMark = "c:"
)

// Begin claims appID's key for a request (operation, requestHash). It
// returns a claim when the request is the first (run it, then Complete or
// Release), the cached record when the same request completed before
// (replay it), ErrDedupInFlight, ErrDedupMismatch, or another error when
// Redis failed: then the caller must go on without the fast path.
func (d *Dedup) Begin(ctx context.Context, appID uuid.UUID, key, operation string, requestHash []byte) (*DedupClaim, *DedupRecord, error) {
	if time.Now().UnixNano() < d.skipUntil.Load() {
		return nil, nil, ErrDedupSkipped
	}
	var tok [16]byte
	_, _ = rand.Read(tok[:])
	c := &DedupClaim{key: d.key(appID, key), token: inFlightMark + hex.EncodeToString(tok[:])}
	v, err := claimScript.Run(ctx, d.rdb, []string{c.key}, c.token, d.InFlightTTL.Milliseconds()).Text()
	if errors.Is(err, redis.Nil) {
		return c, nil, nil
	}
	if err != nil {
		d.skipUntil.Store(time.Now().Add(redisRetry).UnixNano())
		return nil, nil, fmt.Errorf("claiming idempotency key in Redis: %w", err)
	}
	if len(v) >= len(inFlightMark) && v[:len(inFlightMark)] == inFlightMark {
		return nil, nil, ErrDedupInFlight
	}
	if len(v) < len(completeMark) || v[:len(completeMark)] != completeMark {
		return nil, nil, fmt.Errorf("idempotency key in Redis holds an unknown value")
	}
	var rec DedupRecord
	if err := json.Unmarshal([]byte(v[len(completeMark):]), &rec); err != nil {
		return nil, nil, fmt.Errorf("decoding cached idempotent response: %w", err)
	}
	if rec.Operation != operation || string(rec.RequestHash) != string(requestHash) {
		return nil, nil, ErrDedupMismatch
	}
	return nil, &rec, nil
}

// Complete caches the response of the claimed request once it committed in
// PostgreSQL. A failure only costs the fast path.
func (d *Dedup) Complete(ctx context.Context, c *DedupClaim, rec *DedupRecord) error {
	b, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	if err := d.rdb.Set(ctx, c.key, completeMark+string(b), d.TTL).Err(); err != nil {
		return fmt.Errorf("caching idempotent response in Redis: %w", err)
	}
	return nil
}

// Release gives the claim up when the request did not complete, so a retry
// can run.
func (d *Dedup) Release(ctx context.Context, c *DedupClaim) error {
	if err := releaseScript.Run(ctx, d.rdb, []string{c.key}, c.token).Err(); err != nil {
		return fmt.Errorf("releasing idempotency key in Redis: %w", err)
	}
	return nil
}
