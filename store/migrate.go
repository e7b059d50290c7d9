package store

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"path"
	"regexp"
	"slices"
	"strconv"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivermigrate"

	"github.com/mailqueue/mailqueue/partitions"
	mqsql "github.com/mailqueue/mailqueue/sql"
)

// Migrate brings the database up to date, idempotently: it applies the
// embedded schema migrations that are missing, then River's migrations, then
// creates the partitions of the current month (of now) and the
// partitions.MonthsAhead months after it.
//
// Each migration runs in its own transaction together with its row in
// mq_schema_migrations. The whole run holds a session advisory lock on a
// connection of its own, so concurrent runs (several replicas starting at
// once) wait for each other instead of racing. Migrate refuses to touch a
// database whose schema is newer than the binary.
func Migrate(ctx context.Context, pool *pgxpool.Pool, logger *slog.Logger, now time.Time) error {
	migrations, err := loadMigrations(mqsql.Migrations)
	if err != nil {
		return err
	}
	return migrate(ctx, pool, logger, now, migrations)
}

// migration is one NNNN_name.up.sql file.
type migration struct {
	version int
	name    string
	sql     string
}

var migrationFile = regexp.MustCompile(`^([0-9]{4})_([a-z0-9_]+)\.(up|down)\.sql$`)

// loadMigrations reads migrations/*.sql from fsys and returns the up
// migrations sorted by version. Any surprise in the file names is an error:
// a silently skipped migration would surface much later as a missing column.
func loadMigrations(fsys fs.FS) ([]migration, error) {
	entries, err := fs.ReadDir(fsys, "migrations")
	if err != nil {
		return nil, fmt.Errorf("listing migrations: %w", err)
	}
	ups := map[int]migration{}
	downs := map[int]bool{}
	for _, e := range entries {
		m := migrationFile.FindStringSubmatch(e.Name())
		if e.IsDir() || m == nil {
			return nil, fmt.Errorf("loading migrations: %q is not named NNNN_name.up.sql or NNNN_name.down.sql", e.Name())
		}
		version, _ := strconv.Atoi(m[1]) // four digits, cannot fail
		if version == 0 {
			return nil, fmt.Errorf("loading migrations: %q: versions start at 0001", e.Name())
		}
		if m[3] == "down" {
			if downs[version] {
				return nil, fmt.Errorf("loading migrations: two down migrations numbered %04d", version)
			}
			downs[version] = true
			continue
		}
		if prev, ok := ups[version]; ok {
			return nil, fmt.Errorf("loading migrations: %04d_%s and %q share a number", version, prev.name, e.Name())
		}
		body, err := fs.ReadFile(fsys, path.Join("migrations", e.Name()))
		if err != nil {
			return nil, fmt.Errorf("reading migration %s: %w", e.Name(), err)
		}
		ups[version] = migration{version: version, name: m[2], sql: string(body)}
	}

	versions := make([]int, 0, len(ups))
	for v := range ups {
		versions = append(versions, v)
	}
	slices.Sort(versions)
	out := make([]migration, 0, len(ups))
	for i, v := range versions {
		if v != i+1 {
			return nil, fmt.Errorf("loading migrations: expected version %04d next, found %04d (gap in numbering)", i+1, v)
		}
		out = append(out, ups[v])
	}
	for v := range downs {
		if _, ok := ups[v]; !ok {
			return nil, fmt.Errorf("loading migrations: down migration %04d has no up migration", v)
		}
	}
	return out, nil
}

// RiverDroppedIndexes are the indexes of River's schema that Migrate drops:
// its GIN indexes on job args and metadata. Nothing searches jobs by either
// (River itself only when JobList is given a metadata filter, which the
// service never does), and each took a write on every job insert and every
// state change, on the send path's busiest table: without the metadata
// index a 10,000-email batch inserts its jobs in ~70 ms instead of ~85.
var RiverDroppedIndexes = []string{"river_job_args_index", "river_job_metadata_index"}

// migrate is Migrate with the migrations passed in, so tests can feed it
// their own.
func migrate(ctx context.Context, pool *pgxpool.Pool, logger *slog.Logger, now time.Time, migrations []migration) (err error) {
	// A connection outside the pool: the session lock must stay on one
	// connection for the whole run, and River's migrator and partitions.Ensure
	// use the pool meanwhile, which a pool of one connection could not serve.
	conn, err := pgx.ConnectConfig(ctx, pool.Config().ConnConfig.Copy())
	if err != nil {
		return fmt.Errorf("connecting to migrate: %w", err)
	}
	defer func() {
		// Closing the session releases the advisory lock as well; the explicit
		// unlock only makes the release prompt and visible in the logs.
		closeCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		_ = conn.Close(closeCtx)
	}()

	logger.DebugContext(ctx, "waiting for the migration lock")
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock(hashtext('mailqueue_migrate'))"); err != nil {
		return fmt.Errorf("taking the migration lock: %w", err)
	}
	defer func() {
		unlockCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if _, uerr := conn.Exec(unlockCtx, "SELECT pg_advisory_unlock(hashtext('mailqueue_migrate'))"); uerr != nil {
			err = errors.Join(err, fmt.Errorf("releasing the migration lock: %w", uerr))
		}
	}()

	if err := applyMigrations(ctx, conn, logger, migrations); err != nil {
		return err
	}

	// River logs each migration it applies, at info, through our logger.
	migrator, err := rivermigrate.New(riverpgxv5.New(pool), &rivermigrate.Config{
		Logger: logger.With(slog.String("component", "rivermigrate")),
	})
	if err != nil {
		return fmt.Errorf("creating River migrator: %w", err)
	}
	if _, err := migrator.Migrate(ctx, rivermigrate.DirectionUp, nil); err != nil {
		return fmt.Errorf("applying River migrations: %w", err)
	}
	// Our one change to River's schema. The service leaves these indexes
	// out of River's reindexer (jobs.ReindexerIndexNames).
	for _, name := range RiverDroppedIndexes {
		if _, err := conn.Exec(ctx, "DROP INDEX IF EXISTS "+pgx.Identifier{name}.Sanitize()); err != nil {
			return fmt.Errorf("dropping %s: %w", name, err)
		}
	}

	created, err := partitions.Ensure(ctx, pool, now, partitions.MonthsAhead)
	for _, name := range created {
		logger.InfoContext(ctx, "created partition", slog.String("partition", name))
	}
	if err != nil {
		return fmt.Errorf("creating partitions: %w", err)
	}
	return nil
}

// applyMigrations applies the migrations missing from mq_schema_migrations.
// The caller holds the migration lock.
func applyMigrations(ctx context.Context, conn *pgx.Conn, logger *slog.Logger, migrations []migration) error {
	if _, err := conn.Exec(ctx, `CREATE TABLE IF NOT EXISTS mq_schema_migrations (
		version    integer PRIMARY KEY,
		name       text NOT NULL,
		applied_at timestamptz NOT NULL DEFAULT now()
	)`); err != nil {
		return fmt.Errorf("creating mq_schema_migrations: %w", err)
	}

	rows, err := conn.Query(ctx, "SELECT version, name FROM mq_schema_migrations ORDER BY version")
	if err != nil {
		return fmt.Errorf("reading applied migrations: %w", err)
	}
	applied := map[int]string{}
	var newest int
	var vrow struct {
		version int
		name    string
	}
	_, err = pgx.ForEachRow(rows, []any{&vrow.version, &vrow.name}, func() error {
		applied[vrow.version] = vrow.name
		newest = max(newest, vrow.version)
		return nil
	})
	if err != nil {
		return fmt.Errorf("reading applied migrations: %w", err)
	}

	// An older binary must not run against a newer schema: its queries may no
	// longer match the tables, and it cannot know what the newer migrations did.
	latest := 0
	if len(migrations) > 0 {
		latest = migrations[len(migrations)-1].version
	}
	if newest > latest {
		return fmt.Errorf("database schema is at version %d but this binary only knows up to %d: the binary is older than the schema, deploy a newer one", newest, latest)
	}

	for _, m := range migrations {
		if name, ok := applied[m.version]; ok {
			if name != m.name {
				return fmt.Errorf("migration %04d was applied as %q but this binary calls it %q: migrations must not be renumbered once released", m.version, name, m.name)
			}
			continue
		}
		start := time.Now()
		if err := pgx.BeginFunc(ctx, conn, func(tx pgx.Tx) error {
			// No arguments, so pgx sends the file with the simple protocol,
			// which accepts several statements at once.
			if _, err := tx.Exec(ctx, m.sql); err != nil {
				return err
			}
			_, err := tx.Exec(ctx, "INSERT INTO mq_schema_migrations (version, name) VALUES ($1, $2)", m.version, m.name)
			return err
		}); err != nil {
			return fmt.Errorf("applying migration %04d_%s: %w", m.version, m.name, err)
		}
		logger.InfoContext(ctx, "applied migration",
			slog.Int("version", m.version), slog.String("name", m.name), slog.Duration("duration", time.Since(start)))
	}
	return nil
}
