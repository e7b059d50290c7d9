package store

import (
	"context"
	"fmt"
	"net/netip"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// apiKeyQueries are the statements of sql/queries/api_keys.sql.
type apiKeyQueries struct {
	APIKeyInsert           string
	APIKeyGetByHash        string
	APIKeyTouch            string
	APIKeyGet              string
	APIKeyGetForUpdate     string
	APIKeyList             string
	APIKeyRetire           string
	APIKeyCountUsableAdmin string
}

// APIKey is an app's credential as stored: everything but the key itself,
// of which only a SHA-256 digest and the last four characters are kept.
type APIKey struct {
	ID             uuid.UUID      `db:"id"`
	AppID          uuid.UUID      `db:"app_id"`
	Name           string         `db:"name"`
	Prefix         string         `db:"key_prefix"`
	Last4          string         `db:"key_last4"`
	Scopes         []string       `db:"scopes"`
	RateLimit      *int32         `db:"rate_limit"`
	IPAllowlist    []netip.Prefix `db:"ip_allowlist"`
	LastUsedAt     *time.Time     `db:"last_used_at"`
	ExpiresAt      *time.Time     `db:"expires_at"`
	GraceExpiresAt *time.Time     `db:"grace_expires_at"`
	ReplacedBy     *uuid.UUID     `db:"replaced_by"` // the key a rotation issued in its place
	IsActive       bool           `db:"is_active"`
	CreatedAt      time.Time      `db:"created_at"`
	UpdatedAt      time.Time      `db:"updated_at"`
}

// APIKeyInsertParams are the fields of a new key. Hash is the SHA-256
// digest of the full key; the plaintext never reaches the store.
type APIKeyInsertParams struct {
	AppID       uuid.UUID
	Name        string
	Prefix      string
	Hash        []byte
	Last4       string
	Scopes      []string
	RateLimit   *int32
	IPAllowlist []netip.Prefix
	ExpiresAt   *time.Time
}

// APIKeyInsert stores a new key.
func (s *Store) APIKeyInsert(ctx context.Context, p *APIKeyInsertParams) (*APIKey, error) {
	id, _ := NewID()
	allow := p.IPAllowlist
	if allow == nil {
		allow = []netip.Prefix{}
	}
	rows, err := s.db.Query(ctx, s.q.APIKeyInsert, pgx.NamedArgs{
		"id": id, "app_id": p.AppID, "name": p.Name, "key_prefix": p.Prefix, "key_hash": p.Hash,
		"key_last4": p.Last4, "scopes": p.Scopes, "rate_limit": p.RateLimit,
		"ip_allowlist": allow, "expires_at": p.ExpiresAt,
	})
	if err != nil {
		return nil, notFound(err, "inserting api key")
	}
	k, err := pgx.CollectExactlyOneRow(rows, pgx.RowToAddrOfStructByName[APIKey])
	if err != nil {
		return nil, notFound(err, "inserting api key")
	}
	return k, nil
}

// APIKeyAuth is what authenticating a request needs to know of a key.
type APIKeyAuth struct {
	ID             uuid.UUID      `db:"id"`
	AppID          uuid.UUID      `db:"app_id"`
	Prefix         string         `db:"key_prefix"`
	Scopes         []string       `db:"scopes"`
	RateLimit      *int32         `db:"rate_limit"`
	IPAllowlist    []netip.Prefix `db:"ip_allowlist"`
	ExpiresAt      *time.Time     `db:"expires_at"`
	GraceExpiresAt *time.Time     `db:"grace_expires_at"`
	IsActive       bool           `db:"is_active"`
	AppIsActive    bool           `db:"app_is_active"`
	AppSandboxMode bool           `db:"app_sandbox_mode"`
}

// APIKeyGetByHash finds a key by the SHA-256 digest of its plaintext.
func (s *Store) APIKeyGetByHash(ctx context.Context, hash []byte) (*APIKeyAuth, error) {
	rows, err := s.db.Query(ctx, s.q.APIKeyGetByHash, pgx.NamedArgs{"key_hash": hash})
	if err != nil {
		return nil, notFound(err, "looking up api key")
	}
	k, err := pgx.CollectExactlyOneRow(rows, pgx.RowToAddrOfStructByName[APIKeyAuth])
	if err != nil {
		return nil, notFound(err, "looking up api key")
	}
	return k, nil
}

// APIKeyTouch records when keys were last used, many at once.
func (s *Store) APIKeyTouch(ctx context.Context, used map[uuid.UUID]time.Time) error {
	if len(used) == 0 {
		return nil
	}
	ids := make([]uuid.UUID, 0, len(used))
	ats := make([]time.Time, 0, len(used))
	for id, at := range used {
		ids = append(ids, id)
		ats = append(ats, at)
	}
	if _, err := s.db.Exec(ctx, s.q.APIKeyTouch, pgx.NamedArgs{"ids": ids, "used_at": ats}); err != nil {
		return notFound(err, "recording api key use")
	}
	return nil
}

// APIKeyGet returns one of an app's keys by id.
func (s *Store) APIKeyGet(ctx context.Context, appID, id uuid.UUID) (*APIKey, error) {
	return s.apiKeyOne(ctx, s.q.APIKeyGet, pgx.NamedArgs{"app_id": appID, "id": id}, "getting api key")
}

// APIKeyGetForUpdate returns one of an app's keys and locks it until the
// transaction ends. Call it on a transaction-bound Store.
func (s *Store) APIKeyGetForUpdate(ctx context.Context, appID, id uuid.UUID) (*APIKey, error) {
	return s.apiKeyOne(ctx, s.q.APIKeyGetForUpdate, pgx.NamedArgs{"app_id": appID, "id": id}, "locking api key")
}

// APIKeyListParams page through an app's keys, newest first.
type APIKeyListParams struct {
	AppID uuid.UUID
	After *Cursor
	Limit int
}

// APIKeyList returns up to Limit of an app's keys, revoked ones included,
// and whether more follow.
func (s *Store) APIKeyList(ctx context.Context, p *APIKeyListParams) ([]*APIKey, bool, error) {
	args := pgx.NamedArgs{"app_id": p.AppID, "cursor_created_at": nil, "cursor_id": nil, "limit": p.Limit + 1}
	if p.After != nil {
		args["cursor_created_at"], args["cursor_id"] = p.After.CreatedAt, p.After.ID
	}
	rows, err := s.db.Query(ctx, s.q.APIKeyList, args)
	if err != nil {
		return nil, false, fmt.Errorf("listing api keys: %w", err)
	}
	list, err := pgx.CollectRows(rows, pgx.RowToAddrOfStructByName[APIKey])
	if err != nil {
		return nil, false, fmt.Errorf("listing api keys: %w", err)
	}
	more := len(list) > p.Limit
	if more {
		list = list[:p.Limit]
	}
	return list, more, nil
}

// APIKeyRetireParams say how a key ends. A revocation sets only Active
// false; a rotation also sets GraceExpiresAt and ReplacedBy, and keeps
// Active true while the grace period runs. Nil fields are left unchanged.
type APIKeyRetireParams struct {
	AppID          uuid.UUID
	ID             uuid.UUID
	Active         bool
	GraceExpiresAt *time.Time
	ReplacedBy     *uuid.UUID
}

// APIKeyRetire applies p and returns the key as it now is.
func (s *Store) APIKeyRetire(ctx context.Context, p *APIKeyRetireParams) (*APIKey, error) {
	return s.apiKeyOne(ctx, s.q.APIKeyRetire, pgx.NamedArgs{
		"app_id": p.AppID, "id": p.ID, "is_active": p.Active,
		"grace_expires_at": p.GraceExpiresAt, "replaced_by": p.ReplacedBy,
	}, "retiring api key")
}

// APIKeyCountUsableAdmin counts the app's keys other than exceptID that can
// still authenticate with the admin scope.
func (s *Store) APIKeyCountUsableAdmin(ctx context.Context, appID, exceptID uuid.UUID) (int, error) {
	var n int
	if err := s.db.QueryRow(ctx, s.q.APIKeyCountUsableAdmin, pgx.NamedArgs{"app_id": appID, "id": exceptID}).Scan(&n); err != nil {
		return 0, fmt.Errorf("counting admin api keys: %w", err)
	}
	return n, nil
}

func (s *Store) apiKeyOne(ctx context.Context, query string, args pgx.NamedArgs, what string) (*APIKey, error) {
	rows, err := s.db.Query(ctx, query, args)
	if err != nil {
		return nil, notFound(err, what)
	}
	k, err := pgx.CollectExactlyOneRow(rows, pgx.RowToAddrOfStructByName[APIKey])
	if err != nil {
		return nil, notFound(err, what)
	}
	return k, nil
}

// Position is the place of an API key in a list.
func (r *APIKey) Position() Cursor { return Cursor{CreatedAt: r.CreatedAt, ID: r.ID} }
