package store

// These tests are internal to reach loadMigrations and migrate, so they cannot
// use testenv (which imports store); migrateTestPool makes their databases.

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"log/slog"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"testing/fstest"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/mailqueue/mailqueue/partitions"
	mqsql "github.com/mailqueue/mailqueue/sql"
)

// migrateTestPool creates an empty database, dropped when the test ends, and
// returns a pool on it with maxConns connections at most (0: pgx's default).
func migrateTestPool(t *testing.T, maxConns int32) *pgxpool.Pool {
	t.Helper()
	admin := os.Getenv("MQ_TEST_DATABASE_URL")
	if admin == "" {
		admin = "postgres://postgres:postgres@127.0.0.1:5432/postgres?sslmode=disable"
	}
	name := "mq_test_" + strings.ToLower(rand.Text()[:16])
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn, err := pgx.Connect(ctx, admin)
	if err != nil {
		t.Fatalf("cannot reach PostgreSQL at %s: %v; start it with `make up`, or run `make test`", admin, err)
	}
	defer func() { _ = conn.Close(context.Background()) }()
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("creating database %s: %v", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		conn, err := pgx.Connect(ctx, admin)
		if err != nil {
			t.Errorf("connecting to drop %s: %v", name, err)
			return
		}
		defer func() { _ = conn.Close(context.Background()) }()
		if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			t.Errorf("dropping database %s: %v", name, err)
		}
	})

	u, err := url.Parse(admin)
	if err != nil {
		t.Fatalf("parsing %s: %v", admin, err)
	}
	u.Path = "/" + name
	cfg, err := pgxpool.ParseConfig(u.String())
	if err != nil {
		t.Fatalf("parsing pool config: %v", err)
	}
	if maxConns > 0 {
		cfg.MaxConns = maxConns
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		t.Fatalf("opening pool: %v", err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// migrateLog returns a logger that records into the returned buffer, read
// only once the code logging has returned.
func migrateLog() (*slog.Logger, *bytes.Buffer) {
	var buf bytes.Buffer
	return slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo})), &buf
}

func TestMigrateTwiceSecondRunIsNoOp(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	pool := migrateTestPool(t, 0)
	now := time.Date(2026, 6, 10, 12, 0, 0, 0, time.UTC)

	logger, logs := migrateLog()
	if err := Migrate(ctx, pool, logger, now); err != nil {
		t.Fatalf("first Migrate: %v", err)
	}
	if n := strings.Count(logs.String(), `msg="applied migration"`); n < 1 {
		t.Errorf("first run logged %d applied migrations, want at least 1:\n%s", n, logs)
	}
	wantPartitions := len(partitions.Tables) * (partitions.MonthsAhead + 1)
	if n := strings.Count(logs.String(), `msg="created partition"`); n != wantPartitions {
		t.Errorf("first run logged %d created partitions, want %d:\n%s", n, wantPartitions, logs)
	}
	// River's GIN indexes are dropped; the rest of its indexes stay.
	var riverIdx string
	if err := pool.QueryRow(ctx, `SELECT string_agg(indexname, ',' ORDER BY indexname) FROM pg_indexes
		WHERE tablename = 'river_job' AND (indexname = ANY($1) OR indexname IN ('river_job_kind', 'river_job_pkey'))`,
		RiverDroppedIndexes).Scan(&riverIdx); err != nil {
		t.Fatal(err)
	}
	if riverIdx != "river_job_kind,river_job_pkey" {
		t.Errorf("river_job indexes %q, want the kind index and the key without %v", riverIdx, RiverDroppedIndexes)
	}

	type state struct {
		migrations, appliedAt, river, parts string
	}
	read := func() state {
		t.Helper()
		var s state
		err := pool.QueryRow(ctx, `SELECT
				(SELECT string_agg(version || ' ' || name, ',' ORDER BY version) FROM mq_schema_migrations),
				(SELECT max(applied_at)::text FROM mq_schema_migrations),
				(SELECT string_agg(version::text, ',' ORDER BY version) FROM river_migration),
				(SELECT string_agg(inhrelid::regclass::text, ',' ORDER BY inhrelid::regclass::text) FROM pg_inherits
					WHERE inhparent IN ('emails'::regclass, 'email_events'::regclass, 'audit_logs'::regclass))`).
			Scan(&s.migrations, &s.appliedAt, &s.river, &s.parts)
		if err != nil {
			t.Fatalf("reading schema state: %v", err)
		}
		return s
	}
	before := read()
	if !strings.HasPrefix(before.migrations, "1 init") {
		t.Errorf("mq_schema_migrations holds %q, want it to start with 1 init", before.migrations)
	}
	for _, p := range []string{"emails_p2026_06", "email_events_p2026_08", "audit_logs_p2026_09"} {
		if !strings.Contains(before.parts, p) {
			t.Errorf("partition %s missing from %s", p, before.parts)
		}
	}

	logger, logs = migrateLog()
	if err := Migrate(ctx, pool, logger, now); err != nil {
		t.Fatalf("second Migrate: %v", err)
	}
	if strings.Contains(logs.String(), `msg="applied migration"`) || strings.Contains(logs.String(), `msg="created partition"`) {
		t.Errorf("second run changed something:\n%s", logs)
	}
	if after := read(); after != before {
		t.Errorf("second run changed the schema state\nbefore %+v\nafter  %+v", before, after)
	}
}

func TestMigrateConcurrentRunsAllSucceed(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	pool := migrateTestPool(t, 0)

	const runs = 3
	errs := make([]error, runs)
	var wg sync.WaitGroup
	for i := range runs {
		wg.Go(func() {
			logger, _ := migrateLog()
			errs[i] = Migrate(ctx, pool, logger, time.Now())
		})
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Errorf("Migrate run %d: %v", i, err)
		}
	}
	var applied int
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM mq_schema_migrations WHERE version = 1").Scan(&applied); err != nil {
		t.Fatalf("counting migrations: %v", err)
	}
	if applied != 1 {
		t.Errorf("version 1 recorded %d times, want once", applied)
	}
}

// With a single-connection pool the migration lock's connection must not come
// from the pool, or River's migrator would wait for it forever.
func TestMigrateWithSingleConnectionPool(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	pool := migrateTestPool(t, 1)
	logger, _ := migrateLog()
	if err := Migrate(ctx, pool, logger, time.Now()); err != nil {
		t.Fatalf("Migrate on a one-connection pool: %v", err)
	}
}

func TestMigrateRefusesNewerSchema(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	pool := migrateTestPool(t, 0)
	logger, _ := migrateLog()
	if err := Migrate(ctx, pool, logger, time.Now()); err != nil {
		t.Fatalf("Migrate: %v", err)
	}
	if _, err := pool.Exec(ctx, "INSERT INTO mq_schema_migrations (version, name) VALUES (9999, 'from_the_future')"); err != nil {
		t.Fatalf("recording a future migration: %v", err)
	}
	err := Migrate(ctx, pool, logger, time.Now())
	if err == nil || !strings.Contains(err.Error(), "older than the schema") {
		t.Errorf("Migrate against a newer schema returned %v, want an error saying the binary is older", err)
	}
}

func TestMigrateRefusesRenamedMigration(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	pool := migrateTestPool(t, 0)
	logger, _ := migrateLog()
	migs, err := loadMigrations(mqsql.Migrations)
	if err != nil {
		t.Fatalf("loading migrations: %v", err)
	}
	if err := migrate(ctx, pool, logger, time.Now(), migs); err != nil {
		t.Fatalf("migrate: %v", err)
	}
	renamed := slices.Clone(migs)
	renamed[0].name = "renamed"
	if err := migrate(ctx, pool, logger, time.Now(), renamed); err == nil {
		t.Error("migrate accepted a migration renamed after it was applied")
	}
}

// A failing migration leaves neither its changes nor its tracking row.
func TestMigrateFailedMigrationRollsBack(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	pool := migrateTestPool(t, 0)
	logger, _ := migrateLog()
	migs, err := loadMigrations(mqsql.Migrations)
	if err != nil {
		t.Fatalf("loading migrations: %v", err)
	}
	bad := migration{version: len(migs) + 1, name: "bad", sql: "CREATE TABLE half_done (id int); SELECT no_such_function()"}
	if err := migrate(ctx, pool, logger, time.Now(), append(migs, bad)); err == nil {
		t.Fatal("migrate succeeded with a broken migration")
	}
	var newest int
	var halfDone bool
	err = pool.QueryRow(ctx, `SELECT (SELECT max(version) FROM mq_schema_migrations),
		to_regclass('half_done') IS NOT NULL`).Scan(&newest, &halfDone)
	if err != nil {
		t.Fatalf("reading state: %v", err)
	}
	if newest != len(migs) || halfDone {
		t.Errorf("after a failed version %d: newest applied %d, half_done exists %t; want %d, false",
			bad.version, newest, halfDone, len(migs))
	}
}

func TestLoadMigrations(t *testing.T) {
	t.Parallel()
	file := func(body string) *fstest.MapFile { return &fstest.MapFile{Data: []byte(body)} }

	got, err := loadMigrations(fstest.MapFS{
		"migrations/0002_second.up.sql":   file("two"),
		"migrations/0001_init.up.sql":     file("one"),
		"migrations/0001_init.down.sql":   file("undo one"),
		"migrations/0010_tenth.up.sql":    file("ten"),
		"migrations/0003_third.up.sql":    file("three"),
		"migrations/0004_fourth.up.sql":   file("four"),
		"migrations/0005_fifth.up.sql":    file("five"),
		"migrations/0006_sixth.up.sql":    file("six"),
		"migrations/0007_seventh.up.sql":  file("seven"),
		"migrations/0008_eighth.up.sql":   file("eight"),
		"migrations/0009_ninth.up.sql":    file("nine"),
		"migrations/0009_ninth.down.sql":  file("undo nine"),
		"migrations/0010_tenth.down.sql":  file("undo ten"),
		"migrations/0002_second.down.sql": file("undo two"),
	})
	if err != nil {
		t.Fatalf("loadMigrations: %v", err)
	}
	if len(got) != 10 {
		t.Fatalf("loaded %d migrations, want 10", len(got))
	}
	for i, m := range got {
		if m.version != i+1 {
			t.Errorf("migration %d has version %d", i, m.version)
		}
	}
	if got[0].name != "init" || got[0].sql != "one" || got[9].name != "tenth" || got[9].sql != "ten" {
		t.Errorf("first and last are %+v and %+v", got[0], got[9])
	}

	for name, fsys := range map[string]fstest.MapFS{
		"malformed name":  {"migrations/0001_init.up.sql": file("x"), "migrations/2_second.up.sql": file("x")},
		"capitals":        {"migrations/0001_Init.up.sql": file("x")},
		"not up or down":  {"migrations/0001_init.sql": file("x")},
		"gap":             {"migrations/0001_init.up.sql": file("x"), "migrations/0003_third.up.sql": file("x")},
		"not from 1":      {"migrations/0002_init.up.sql": file("x")},
		"zero":            {"migrations/0000_init.up.sql": file("x")},
		"duplicate":       {"migrations/0001_init.up.sql": file("x"), "migrations/0001_other.up.sql": file("x")},
		"orphan down":     {"migrations/0001_init.up.sql": file("x"), "migrations/0002_next.down.sql": file("x")},
		"directory":       {"migrations/0001_init.up.sql": file("x"), "migrations/0002_dir.up.sql/x": file("x")},
		"no migrations/":  {"other/0001_init.up.sql": file("x")},
		"duplicate down":  {"migrations/0001_init.up.sql": file("x"), "migrations/0001_init.down.sql": file("x"), "migrations/0001_again.down.sql": file("x")},
		"stray extension": {"migrations/0001_init.up.sql": file("x"), "migrations/README.md": file("x")},
	} {
		if got, err := loadMigrations(fsys); err == nil {
			t.Errorf("%s: loadMigrations accepted it and returned %+v", name, got)
		}
	}
}

func TestEmbeddedMigrationsLoad(t *testing.T) {
	t.Parallel()
	migs, err := loadMigrations(mqsql.Migrations)
	if err != nil {
		t.Fatalf("embedded migrations: %v", err)
	}
	if len(migs) == 0 || migs[0].name != "init" {
		t.Errorf("embedded migrations start with %+v, want 0001_init", migs)
	}
}

func TestAuditLogsAreAppendOnly(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	pool := migrateTestPool(t, 0)
	logger, _ := migrateLog()
	now := time.Now()
	if err := Migrate(ctx, pool, logger, now); err != nil {
		t.Fatalf("Migrate: %v", err)
	}
	id := uuid.New()
	_, err := pool.Exec(ctx, `INSERT INTO audit_logs (id, created_at, actor_type, action, resource_type)
		VALUES ($1, $2, 'system', 'app.create', 'app')`, id, now)
	if err != nil {
		t.Fatalf("inserting an audit log: %v", err)
	}
	for _, stmt := range []string{
		"UPDATE audit_logs SET action = 'app.delete' WHERE id = $1",
		"DELETE FROM audit_logs WHERE id = $1",
	} {
		_, err := pool.Exec(ctx, stmt, id)
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "42501" {
			t.Errorf("%s: got %v, want SQLSTATE 42501", stmt, err)
		}
	}
	var n int
	if err := pool.QueryRow(ctx, "SELECT count(*) FROM audit_logs WHERE id = $1 AND action = 'app.create'", id).Scan(&n); err != nil {
		t.Fatalf("counting audit logs: %v", err)
	}
	if n != 1 {
		t.Errorf("audit log row count is %d after the refused changes, want 1", n)
	}
}
