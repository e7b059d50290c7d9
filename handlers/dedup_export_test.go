package handlers

import (
	"sync"
	"sync/atomic"

	"github.com/google/uuid"
)

// postgresLookups counts, per app and Idempotency-Key, the requests that
// reached the PostgreSQL idempotency record.
var postgresLookups sync.Map

func init() {
	onIdempotencyPostgres = func(appID uuid.UUID, key string) {
		v, _ := postgresLookups.LoadOrStore(appID.String()+"\x00"+key, new(atomic.Int64))
		v.(*atomic.Int64).Add(1)
	}
}

// IdempotencyPostgresLookups is how many requests with appID's key went to
// the PostgreSQL idempotency record.
func IdempotencyPostgresLookups(appID uuid.UUID, key string) int64 {
	v, ok := postgresLookups.Load(appID.String() + "\x00" + key)
	if !ok {
		return 0
	}
	return v.(*atomic.Int64).Load()
}
