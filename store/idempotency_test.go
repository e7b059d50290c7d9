package store_test

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/google/uuid"

	"github.com/mailqueue/mailqueue/store"
)

const idemOp = "email.send"

// begin runs IdempotencyBegin in a transaction of its own, optionally saving a
// response when the key is new, and commits.
func begin(t *testing.T, st *store.Store, appID uuid.UUID, key string, hash []byte, save []byte) (*store.StoredResponse, error) {
	t.Helper()
	var resp *store.StoredResponse
	err := st.Tx(t.Context(), func(tx *store.Store) error {
		r, err := tx.IdempotencyBegin(t.Context(), appID, key, idemOp, hash)
		if err != nil {
			return err
		}
		resp = r
		if r == nil && save != nil {
			return tx.IdempotencySave(t.Context(), appID, key, idemOp, hash, &store.StoredResponse{StatusCode: 202, Body: save, KeyID: "key-1"})
		}
		return nil
	})
	return resp, err
}

func TestIdempotencyBeginOutsideTx(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	if _, err := e.st.IdempotencyBegin(t.Context(), uuid.New(), "k", idemOp, []byte{1}); err == nil {
		t.Fatal("IdempotencyBegin outside Tx succeeded")
	}
}

func TestIdempotencyReplayAndMismatch(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	appA, appB := uuid.New(), uuid.New()
	hash, other := []byte("hash-1"), []byte("hash-2")
	body := []byte(`{"id":"0190","status":"queued"}`)

	resp, err := begin(t, e.st, appA, "key-1", hash, body)
	if err != nil || resp != nil {
		t.Fatalf("new key: %v, %v; want nil, nil", resp, err)
	}
	resp, err = begin(t, e.st, appA, "key-1", hash, nil)
	if err != nil || resp == nil {
		t.Fatalf("same request again: %v, %v; want the stored response", resp, err)
	}
	if resp.StatusCode != 202 || !bytes.Equal(resp.Body, body) || resp.KeyID != "key-1" {
		t.Errorf("replayed %d %q (key %q), want 202 %q (key key-1), byte for byte", resp.StatusCode, resp.Body, resp.KeyID, body)
	}
	if _, err := begin(t, e.st, appA, "key-1", other, nil); !errors.Is(err, store.ErrIdempotencyMismatch) {
		t.Errorf("same key, other request: %v, want ErrIdempotencyMismatch", err)
	}
	// The same hash under another operation is another request too.
	err = e.st.Tx(t.Context(), func(tx *store.Store) error {
		_, err := tx.IdempotencyBegin(t.Context(), appA, "key-1", "queue.create", hash)
		return err
	})
	if !errors.Is(err, store.ErrIdempotencyMismatch) {
		t.Errorf("same key, other operation: %v, want ErrIdempotencyMismatch", err)
	}
	// Keys belong to one app.
	if resp, err := begin(t, e.st, appB, "key-1", other, nil); err != nil || resp != nil {
		t.Errorf("another app's key: %v, %v; want nil, nil (new)", resp, err)
	}
}

// A key begun but rolled back (the request failed) leaves nothing behind.
func TestIdempotencyRollbackForgetsKey(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	app := uuid.New()
	boom := errors.New("handler failed")
	err := e.st.Tx(t.Context(), func(tx *store.Store) error {
		if _, err := tx.IdempotencyBegin(t.Context(), app, "k", idemOp, []byte("h")); err != nil {
			return err
		}
		if err := tx.IdempotencySave(t.Context(), app, "k", idemOp, []byte("h"), &store.StoredResponse{StatusCode: 202, Body: []byte(`{}`), KeyID: "key-1"}); err != nil {
			return err
		}
		return boom
	})
	if !errors.Is(err, boom) {
		t.Fatal(err)
	}
	if resp, err := begin(t, e.st, app, "k", []byte("other"), nil); err != nil || resp != nil {
		t.Errorf("after rollback: %v, %v; want a new key", resp, err)
	}
}

func TestIdempotencyConcurrentRequestIsInFlight(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := t.Context()
	app := uuid.New()
	hash := []byte("h")

	err := e.st.Tx(ctx, func(first *store.Store) error {
		if r, err := first.IdempotencyBegin(ctx, app, "k", idemOp, hash); err != nil || r != nil {
			t.Fatalf("first Begin: %v, %v", r, err)
		}
		// A second transaction on another connection while the first is open.
		err := e.st.Tx(ctx, func(second *store.Store) error {
			_, err := second.IdempotencyBegin(ctx, app, "k", idemOp, hash)
			return err
		})
		if !errors.Is(err, store.ErrIdempotencyInFlight) {
			t.Errorf("second Begin while the first is open: %v, want ErrIdempotencyInFlight", err)
		}
		// Another key is not held up.
		if resp, err := begin(t, e.st, app, "other-key", hash, nil); err != nil || resp != nil {
			t.Errorf("another key while the first is open: %v, %v", resp, err)
		}
		return first.IdempotencySave(ctx, app, "k", idemOp, hash, &store.StoredResponse{StatusCode: 201, Body: []byte(`{"ok":true}`), KeyID: "key-1"})
	})
	if err != nil {
		t.Fatal(err)
	}
	// Once the first commits, the second gets its response.
	resp, err := begin(t, e.st, app, "k", hash, nil)
	if err != nil || resp == nil || resp.StatusCode != 201 {
		t.Fatalf("after the first committed: %+v, %v; want the stored 201", resp, err)
	}
}

func TestIdempotencyKeyExpiresAfter24Hours(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx := t.Context()
	app := uuid.New()
	oldHash, newHash := []byte("old"), []byte("new")
	if _, err := begin(t, e.st, app, "k", oldHash, []byte(`{"v":1}`)); err != nil {
		t.Fatal(err)
	}
	if _, err := e.pool.Exec(ctx, `UPDATE idempotency_keys SET created_at = now() - interval '25 hours'`); err != nil {
		t.Fatal(err)
	}

	// Expired: a different request with the key is new, not a mismatch, and
	// its response replaces the old row.
	resp, err := begin(t, e.st, app, "k", newHash, []byte(`{"v":2}`))
	if err != nil || resp != nil {
		t.Fatalf("expired key: %v, %v; want nil, nil", resp, err)
	}
	resp, err = begin(t, e.st, app, "k", newHash, nil)
	if err != nil || resp == nil || !bytes.Equal(resp.Body, []byte(`{"v":2}`)) {
		t.Fatalf("replay after replacement: %+v, %v; want {\"v\":2}", resp, err)
	}
	if _, err := begin(t, e.st, app, "k", oldHash, nil); !errors.Is(err, store.ErrIdempotencyMismatch) {
		t.Errorf("old request after replacement: %v, want ErrIdempotencyMismatch", err)
	}
	var rows int
	if err := e.pool.QueryRow(ctx, `SELECT count(*) FROM idempotency_keys WHERE created_at > now() - interval '1 minute'`).Scan(&rows); err != nil || rows != 1 {
		t.Errorf("%d fresh rows (%v), want the one replaced row", rows, err)
	}

	// IdempotencyDeleteOld removes only expired keys.
	if _, err := begin(t, e.st, app, "old-key", oldHash, []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	if _, err := e.pool.Exec(ctx, `UPDATE idempotency_keys SET created_at = now() - interval '25 hours' WHERE key = 'old-key'`); err != nil {
		t.Fatal(err)
	}
	n, err := e.st.IdempotencyDeleteOld(ctx)
	if err != nil || n != 1 {
		t.Errorf("IdempotencyDeleteOld = %d, %v; want 1", n, err)
	}
	if resp, err := begin(t, e.st, app, "k", newHash, nil); err != nil || resp == nil {
		t.Errorf("fresh key after cleanup: %v, %v; want it kept", resp, err)
	}
}

func TestIdempotencyBeginHonoursContext(t *testing.T) {
	t.Parallel()
	e := newEnv(t)
	ctx, cancel := context.WithCancel(t.Context())
	err := e.st.Tx(ctx, func(tx *store.Store) error {
		cancel()
		_, err := tx.IdempotencyBegin(ctx, uuid.New(), "k", idemOp, []byte("h"))
		return err
	})
	if err == nil {
		t.Error("IdempotencyBegin with a cancelled context succeeded")
	}
}
