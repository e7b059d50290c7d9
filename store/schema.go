package store

import (
	"context"
	"errors"
	"fmt"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	mqsql "github.com/mailqueue/mailqueue/sql"
)

// ErrNotMigrated means the database schema is older than this binary.
var ErrNotMigrated = errors.New("database schema is not up to date: run `mailqueue migrate`")

// CheckMigrated verifies the database has every migration this binary
// embeds, so a process started before `mailqueue migrate` fails at once
// with a clear message instead of on its first query.
func CheckMigrated(ctx context.Context, pool *pgxpool.Pool) error {
	migrations, err := loadMigrations(mqsql.Migrations)
	if err != nil {
		return err
	}
	want := migrations[len(migrations)-1].version
	var have int
	err = pool.QueryRow(ctx, `SELECT coalesce(max(version), 0) FROM mq_schema_migrations`).Scan(&have)
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) && pgErr.Code == "42P01" { // undefined_table
		return ErrNotMigrated
	}
	if err != nil {
		return fmt.Errorf("reading schema version: %w", err)
	}
	if have < want {
		return fmt.Errorf("%w (database at version %d, binary needs %d)", ErrNotMigrated, have, want)
	}
	return nil
}
