package store

import (
	"context"
	"net/netip"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// apiKeyQueries are the statements of sql/queries/api_keys.sql.
type apiKeyQueries struct {
	APIKeyInsert    string
	APIKeyGetByHash string
	APIKeyTouch     string
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
