package store

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// smtpConfigQueries are the statements of sql/queries/smtp_configs.sql.
type smtpConfigQueries struct {
	SMTPConfigInsert     string
	SMTPConfigGet        string
	SMTPConfigLock       string
	SMTPConfigList       string
	SMTPConfigUpdate     string
	SMTPConfigDelete     string
	SMTPConfigQueueNames string
}

// SMTPConfig is one of an app's SMTP relays.
type SMTPConfig struct {
	ID       uuid.UUID `db:"id"`
	AppID    uuid.UUID `db:"app_id"`
	Name     string    `db:"name"`
	Host     string    `db:"host"`
	Port     int32     `db:"port"`
	Username *string   `db:"username"`
	// Password is ciphertext sealed by secret.Box under
	// SMTPPasswordContext(ID) with the key PasswordKeyID; nil for none.
	Password      []byte    `db:"password"`
	PasswordKeyID *string   `db:"password_key_id"`
	Encryption    string    `db:"encryption"` // tls, starttls or none
	PoolSize      int32     `db:"pool_size"`
	TimeoutMS     int32     `db:"timeout_ms"`
	IsActive      bool      `db:"is_active"`
	CreatedAt     time.Time `db:"created_at"`
	UpdatedAt     time.Time `db:"updated_at"`
}

// SMTPPasswordContext binds a sealed SMTP password to its config, so a
// ciphertext copied into another row (or another app's) does not open.
func SMTPPasswordContext(configID uuid.UUID) string {
	return "smtp_configs.password:" + configID.String()
}

// SMTPConfigInsert creates c, whose ID the caller chose (the password is
// sealed under it before the row exists); ErrConflict if the app already
// has a config of that name.
func (s *Store) SMTPConfigInsert(ctx context.Context, c *SMTPConfig) (*SMTPConfig, error) {
	out, err := s.smtpConfigOne(ctx, s.q.SMTPConfigInsert, pgx.NamedArgs{
		"id": c.ID, "app_id": c.AppID, "name": c.Name, "host": c.Host, "port": c.Port,
		"username": c.Username, "password": c.Password, "password_key_id": c.PasswordKeyID,
		"encryption": c.Encryption, "pool_size": c.PoolSize, "timeout_ms": c.TimeoutMS,
	})
	if uniqueViolation(err) {
		return nil, fmt.Errorf("inserting smtp config %q: %w", c.Name, ErrConflict)
	}
	if err != nil {
		return nil, fmt.Errorf("inserting smtp config %q: %w", c.Name, err)
	}
	return out, nil
}

// SMTPConfigGet returns one of an app's SMTP configs.
func (s *Store) SMTPConfigGet(ctx context.Context, appID, id uuid.UUID) (*SMTPConfig, error) {
	c, err := s.smtpConfigOne(ctx, s.q.SMTPConfigGet, pgx.NamedArgs{"app_id": appID, "id": id})
	if err != nil {
		return nil, notFound(err, "getting smtp config")
	}
	return c, nil
}

// SMTPConfigLock returns one of an app's SMTP configs, locked until the
// end of the transaction; call it inside Tx.
func (s *Store) SMTPConfigLock(ctx context.Context, appID, id uuid.UUID) (*SMTPConfig, error) {
	c, err := s.smtpConfigOne(ctx, s.q.SMTPConfigLock, pgx.NamedArgs{"app_id": appID, "id": id})
	if err != nil {
		return nil, notFound(err, "locking smtp config")
	}
	return c, nil
}

// SMTPConfigListParams select a page of an app's SMTP configs.
type SMTPConfigListParams struct {
	AppID uuid.UUID
	Limit int
	After *Cursor
}

// SMTPConfigList returns up to Limit configs, newest first, and whether
// more follow.
func (s *Store) SMTPConfigList(ctx context.Context, p *SMTPConfigListParams) ([]*SMTPConfig, bool, error) {
	args := pgx.NamedArgs{"app_id": p.AppID, "cursor_created_at": nil, "cursor_id": nil, "limit": p.Limit + 1}
	if p.After != nil {
		args["cursor_created_at"], args["cursor_id"] = p.After.CreatedAt, p.After.ID
	}
	rows, err := s.db.Query(ctx, s.q.SMTPConfigList, args)
	if err != nil {
		return nil, false, fmt.Errorf("listing smtp configs: %w", err)
	}
	list, err := pgx.CollectRows(rows, pgx.RowToAddrOfStructByName[SMTPConfig])
	if err != nil {
		return nil, false, fmt.Errorf("listing smtp configs: %w", err)
	}
	more := len(list) > p.Limit
	if more {
		list = list[:p.Limit]
	}
	return list, more, nil
}

// SMTPConfigUpdate writes every mutable field of c (the row of c.AppID and
// c.ID) and returns the stored result; ErrNotFound if there is no such row,
// ErrConflict if the new name is taken.
func (s *Store) SMTPConfigUpdate(ctx context.Context, c *SMTPConfig) (*SMTPConfig, error) {
	out, err := s.smtpConfigOne(ctx, s.q.SMTPConfigUpdate, pgx.NamedArgs{
		"app_id": c.AppID, "id": c.ID, "name": c.Name, "host": c.Host, "port": c.Port,
		"username": c.Username, "password": c.Password, "password_key_id": c.PasswordKeyID,
		"encryption": c.Encryption, "pool_size": c.PoolSize, "timeout_ms": c.TimeoutMS,
		"is_active": c.IsActive,
	})
	if uniqueViolation(err) {
		return nil, fmt.Errorf("updating smtp config %s: %w", c.ID, ErrConflict)
	}
	if err != nil {
		return nil, notFound(err, "updating smtp config")
	}
	return out, nil
}

// SMTPConfigDelete deletes one of an app's SMTP configs; queues still
// naming it fall back to the default server, so callers check
// SMTPConfigQueueNames first.
func (s *Store) SMTPConfigDelete(ctx context.Context, appID, id uuid.UUID) error {
	tag, err := s.db.Exec(ctx, s.q.SMTPConfigDelete, pgx.NamedArgs{"app_id": appID, "id": id})
	if err != nil {
		return fmt.Errorf("deleting smtp config %s: %w", id, err)
	}
	if tag.RowsAffected() == 0 {
		return fmt.Errorf("deleting smtp config %s: %w", id, ErrNotFound)
	}
	return nil
}

// SMTPConfigQueueNames returns the names of the app's live queues that send
// through config id, in name order.
func (s *Store) SMTPConfigQueueNames(ctx context.Context, appID, id uuid.UUID) ([]string, error) {
	rows, err := s.db.Query(ctx, s.q.SMTPConfigQueueNames, pgx.NamedArgs{"app_id": appID, "id": id})
	if err != nil {
		return nil, fmt.Errorf("listing queues of smtp config %s: %w", id, err)
	}
	names, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("listing queues of smtp config %s: %w", id, err)
	}
	return names, nil
}

func (s *Store) smtpConfigOne(ctx context.Context, query string, args pgx.NamedArgs) (*SMTPConfig, error) {
	rows, err := s.db.Query(ctx, query, args)
	if err != nil {
		return nil, err
	}
	return pgx.CollectExactlyOneRow(rows, pgx.RowToAddrOfStructByName[SMTPConfig])
}

// Position is the place of an SMTP config in a list.
func (r *SMTPConfig) Position() Cursor { return Cursor{CreatedAt: r.CreatedAt, ID: r.ID} }
