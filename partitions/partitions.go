// Package partitions manages the monthly partitions of the range-partitioned
// tables: creation ahead of time, and later retention and archival.
//
// emails, email_events and audit_logs are partitioned by month on created_at
// and have no default partition, so a row whose month has no partition is
// refused. Ensure therefore runs at migrate time and periodically from a job,
// always a few months ahead of the clock.
package partitions

import (
	"context"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"
)

// Tables are the tables partitioned by month on created_at.
var Tables = []string{"emails", "email_events", "audit_logs"}

// MonthsAhead is how many months after the current one Ensure is asked to
// cover, so a missed maintenance run or two never leaves inserts without a
// partition.
const MonthsAhead = 3

// lockTimeout bounds the wait for the ACCESS EXCLUSIVE lock that creating a
// partition takes on its parent: queued behind a long query, the waiting DDL
// would block every insert into the table. Failing is better; the next run
// retries, and MonthsAhead leaves months of slack.
const lockTimeout = "10s"

// DB is what Ensure needs from a database handle. *pgxpool.Pool, *pgx.Conn
// and pgx.Tx all satisfy it.
type DB interface {
	Begin(ctx context.Context) (pgx.Tx, error)
	QueryRow(ctx context.Context, sql string, args ...any) pgx.Row
}

// Name returns the name of table's partition for the month containing month
// (taken in UTC), e.g. emails_p2026_11.
func Name(table string, month time.Time) string {
	m := month.UTC()
	return fmt.Sprintf("%s_p%04d_%02d", table, m.Year(), int(m.Month()))
}

// monthStart returns midnight UTC on the first day of t's month (in UTC).
func monthStart(t time.Time) time.Time {
	u := t.UTC()
	return time.Date(u.Year(), u.Month(), 1, 0, 0, 0, 0, time.UTC)
}

// Ensure creates, for every table in Tables, the partitions of the month of
// now (UTC) and of the monthsAhead months after it, when they are missing.
// It returns the names of the partitions it created, in table then month
// order; partitions that already existed are not listed.
//
// Concurrent calls, from this or other processes, are safe: each creation
// happens in its own transaction under a transaction-level advisory lock and
// re-checks existence once the lock is held. When db is a pgx.Tx the nested
// transactions are savepoints, so the lock and the lock_timeout setting last
// until the caller's transaction ends.
func Ensure(ctx context.Context, db DB, now time.Time, monthsAhead int) (created []string, err error) {
	if monthsAhead < 0 {
		return nil, fmt.Errorf("ensuring partitions: monthsAhead %d is negative", monthsAhead)
	}
	first := monthStart(now)
	for _, table := range Tables {
		for i := range monthsAhead + 1 {
			start := first.AddDate(0, i, 0)
			ok, err := create(ctx, db, table, start)
			if err != nil {
				return created, err
			}
			if ok {
				created = append(created, Name(table, start))
			}
		}
	}
	return created, nil
}

// exists reports whether a relation called name is in the schema where
// CREATE TABLE puts it. It reads pg_class with a fresh snapshot rather than
// calling to_regclass, whose catalog cache can still hold "missing" for a
// table another session has just created: it is refreshed only when the
// session next takes a lock on a table, which an advisory lock is not.
func exists(ctx context.Context, db DB, name string) (bool, error) {
	var found bool
	if err := db.QueryRow(ctx, `SELECT EXISTS (SELECT FROM pg_class
		WHERE relname = $1 AND relnamespace = current_schema()::regnamespace)`, name).Scan(&found); err != nil {
		return false, fmt.Errorf("checking whether partition %s exists: %w", name, err)
	}
	return found, nil
}

// create makes table's partition for the month starting at start unless it
// exists, and reports whether it made it.
func create(ctx context.Context, db DB, table string, start time.Time) (bool, error) {
	name := Name(table, start)
	// The common case, every run after the first of the month: nothing to do,
	// so no transaction and no lock.
	if found, err := exists(ctx, db, name); err != nil || found {
		return false, err
	}

	tx, err := db.Begin(ctx)
	if err != nil {
		return false, fmt.Errorf("starting transaction to create partition %s: %w", name, err)
	}
	defer func() { _ = tx.Rollback(ctx) }()

	if _, err := tx.Exec(ctx, "SELECT set_config('lock_timeout', $1, true)", lockTimeout); err != nil {
		return false, fmt.Errorf("setting lock_timeout to create partition %s: %w", name, err)
	}
	// Serialises creators so that the re-check below is reliable and the
	// return value names only what this call created.
	if _, err := tx.Exec(ctx, "SELECT pg_advisory_xact_lock(hashtext('mailqueue_partitions'))"); err != nil {
		return false, fmt.Errorf("locking to create partition %s: %w", name, err)
	}
	if found, err := exists(ctx, tx, name); err != nil || found {
		return false, err
	}

	// DDL takes no bind parameters. The identifiers are quoted and the bounds
	// are formatted from time values, never from input.
	const layout = "2006-01-02 15:04:05+00"
	ddl := fmt.Sprintf("CREATE TABLE IF NOT EXISTS %s PARTITION OF %s FOR VALUES FROM ('%s') TO ('%s')",
		pgx.Identifier{name}.Sanitize(), pgx.Identifier{table}.Sanitize(),
		start.Format(layout), start.AddDate(0, 1, 0).Format(layout))
	if _, err := tx.Exec(ctx, ddl); err != nil {
		return false, fmt.Errorf("creating partition %s: %w", name, err)
	}
	if err := tx.Commit(ctx); err != nil {
		return false, fmt.Errorf("committing partition %s: %w", name, err)
	}
	return true, nil
}
