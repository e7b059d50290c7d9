// Package testenv gives tests the real services they run against: a fresh,
// migrated PostgreSQL database per test, the Redis addresses, and a logger
// that writes to the test's log.
//
// Nothing here skips a test when a service is missing: the test fails and
// says how to start it, so a green run always means the code was exercised.
//
// Tests in package store must be external (package store_test) to use
// testenv, which imports store to migrate.
package testenv

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"
	"github.com/riverqueue/river/rivermigrate"

	"github.com/mailqueue/mailqueue/bench/smtpsink"
	mqsql "github.com/mailqueue/mailqueue/sql"
	"github.com/mailqueue/mailqueue/store"
)

const defaultAdminURL = "postgres://postgres:postgres@127.0.0.1:5432/postgres?sslmode=disable"

// adminURL is the server's maintenance database, where test databases are
// created and dropped.
func adminURL() string {
	if u := os.Getenv("MQ_TEST_DATABASE_URL"); u != "" {
		return u
	}
	return defaultAdminURL
}

// databaseURL returns the admin URL pointed at database name.
func databaseURL(t testing.TB, name string) string {
	t.Helper()
	u, err := url.Parse(adminURL())
	if err != nil || u.Scheme == "" {
		t.Fatalf("testenv: MQ_TEST_DATABASE_URL must be a postgres:// URL: %q", adminURL())
	}
	u.Path = "/" + name
	return u.String()
}

// connectAdmin opens a connection to the admin database or fails the test.
func connectAdmin(ctx context.Context, t testing.TB) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(ctx, adminURL())
	if err != nil {
		t.Fatalf("testenv: cannot reach PostgreSQL at MQ_TEST_DATABASE_URL (default %s): %v; start it with `make up`, or run `make test`", defaultAdminURL, err)
	}
	return conn
}

// closeConn closes conn with a context of its own, as the test's may be done.
func closeConn(conn *pgx.Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = conn.Close(ctx)
}

// randomName returns prefix followed by 16 random characters; lower case, so
// the name needs no quoting in psql.
func randomName(prefix string) string {
	return prefix + strings.ToLower(rand.Text()[:16])
}

// createDatabase creates database name (from template when not empty) and
// drops it when the test ends.
func createDatabase(t testing.TB, name, template string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	conn := connectAdmin(ctx, t)
	defer closeConn(conn)

	stmt := "CREATE DATABASE " + pgx.Identifier{name}.Sanitize()
	if template != "" {
		stmt += " TEMPLATE " + pgx.Identifier{template}.Sanitize()
	}
	_, err := conn.Exec(ctx, stmt)
	if pgErr := (*pgconn.PgError)(nil); template != "" && errors.As(err, &pgErr) && pgErr.Code == "3D000" {
		// The template is gone: a test run of another checkout, with
		// another schema, dropped it as old. Build it again, once.
		tmpl, terr := rebuildTemplate(t, template)
		if terr != nil {
			t.Fatalf("testenv: %v", terr)
		}
		_, err = conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()+" TEMPLATE "+pgx.Identifier{tmpl}.Sanitize())
	}
	if err != nil {
		t.Fatalf("testenv: creating database %s: %v", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		conn := connectAdmin(ctx, t)
		defer closeConn(conn)
		// FORCE ends whatever the test left connected (a pool not closed, a
		// River client not stopped) instead of failing the drop.
		if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{name}.Sanitize()+" WITH (FORCE)"); err != nil {
			t.Errorf("testenv: dropping database %s: %v", name, err)
		}
	})
	return databaseURL(t, name)
}

// EmptyDatabaseURL creates a fresh database with nothing in it, for tests of
// migration itself, and returns its URL. The database is dropped when the
// test ends.
func EmptyDatabaseURL(t testing.TB) string {
	t.Helper()
	return createDatabase(t, randomName("mq_test_"), "")
}

// DatabaseURL creates a fresh database for this test, already migrated, and
// returns its URL. The database is dropped when the test ends.
//
// It is a copy of a template database migrated once per schema: creating a
// database from a template is much faster than running the migrations.
func DatabaseURL(t testing.TB) string {
	t.Helper()
	tmpl, err := template(t)
	if err != nil {
		t.Fatalf("testenv: %v", err)
	}
	return createDatabase(t, randomName("mq_test_"), tmpl)
}

// DB returns a pool on a fresh, migrated database (see DatabaseURL). The pool
// is closed, and the database dropped, when the test ends.
func DB(t testing.TB) *pgxpool.Pool {
	t.Helper()
	dbURL := DatabaseURL(t)
	pool, err := store.NewPool(context.Background(), dbURL)
	if err != nil {
		t.Fatalf("testenv: opening pool on %s: %v", dbURL, err)
	}
	t.Cleanup(pool.Close)
	return pool
}

// rebuildTemplate forgets the template gone and looks it up (builds it)
// again.
func rebuildTemplate(t testing.TB, gone string) (string, error) {
	t.Helper()
	templateMu.Lock()
	if templateName == gone {
		templateName = ""
	}
	templateMu.Unlock()
	return template(t)
}

// The template is looked up (and built if needed) once per test binary.
var (
	templateMu   sync.Mutex
	templateName string
)

// template returns the name of the template database for the current schema,
// building it if no test binary has yet.
func template(t testing.TB) (string, error) {
	t.Helper()
	templateMu.Lock()
	defer templateMu.Unlock()
	if templateName != "" {
		return templateName, nil
	}

	name, err := templateDatabaseName(time.Now())
	if err != nil {
		return "", err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	conn := connectAdmin(ctx, t)
	defer closeConn(conn)

	// go test ./... runs packages' test binaries in parallel, and each may
	// find the template missing; the lock lets one build it while the others
	// wait. It is released when conn closes.
	if _, err := conn.Exec(ctx, "SELECT pg_advisory_lock(hashtext('mailqueue_testenv_template'))"); err != nil {
		return "", fmt.Errorf("locking to build template database: %w", err)
	}
	var found bool
	if err := conn.QueryRow(ctx, "SELECT EXISTS (SELECT FROM pg_database WHERE datname = $1)", name).Scan(&found); err != nil {
		return "", fmt.Errorf("looking for template database %s: %w", name, err)
	}
	if !found {
		if err := buildTemplate(ctx, t, conn, name); err != nil {
			return "", err
		}
	}
	templateName = name
	return name, nil
}

// buildTemplate migrates a new database and renames it to name, so that a
// database called name is always complete even if a build is interrupted.
// Older templates are dropped on the way.
func buildTemplate(ctx context.Context, t testing.TB, conn *pgx.Conn, name string) error {
	t.Helper()
	building := name + "_building"
	if _, err := conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{building}.Sanitize()+" WITH (FORCE)"); err != nil {
		return fmt.Errorf("dropping leftover %s: %w", building, err)
	}
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{building}.Sanitize()); err != nil {
		return fmt.Errorf("creating %s: %w", building, err)
	}

	pool, err := store.NewPool(ctx, databaseURL(t, building))
	if err != nil {
		return fmt.Errorf("opening pool on %s: %w", building, err)
	}
	err = store.Migrate(ctx, pool, Logger(t), time.Now())
	// CREATE DATABASE ... TEMPLATE (and the rename) fail while anything is
	// connected to the source, so the pool must be gone before going on.
	pool.Close()
	if err != nil {
		return fmt.Errorf("migrating template database: %w", err)
	}
	if _, err := conn.Exec(ctx, "ALTER DATABASE "+pgx.Identifier{building}.Sanitize()+" RENAME TO "+pgx.Identifier{name}.Sanitize()); err != nil {
		return fmt.Errorf("renaming %s to %s: %w", building, name, err)
	}

	// Templates of older schemas or months would otherwise pile up. A binary
	// of another checkout may be copying one right now: then the drop fails
	// and the template stays until a later build.
	rows, err := conn.Query(ctx, "SELECT datname FROM pg_database WHERE datname LIKE 'mq\\_tmpl\\_%' AND datname <> $1", name)
	if err != nil {
		return fmt.Errorf("listing old template databases: %w", err)
	}
	old, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return fmt.Errorf("listing old template databases: %w", err)
	}
	for _, o := range old {
		_, _ = conn.Exec(ctx, "DROP DATABASE IF EXISTS "+pgx.Identifier{o}.Sanitize())
	}
	return nil
}

// templateDatabaseName names the template after what goes into it: the
// migration files, River's latest migration, and the month, since the
// template's partitions are those of the month it was built in.
func templateDatabaseName(now time.Time) (string, error) {
	h := sha256.New()
	err := fs.WalkDir(mqsql.Migrations, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		body, err := fs.ReadFile(mqsql.Migrations, p)
		if err != nil {
			return err
		}
		fmt.Fprintf(h, "%s %d\n", p, len(body))
		h.Write(body)
		return nil
	})
	if err != nil {
		return "", fmt.Errorf("hashing migrations: %w", err)
	}
	// The driver's pool is never used: the migrator only reads its embedded
	// migration list here.
	migrator, err := rivermigrate.New(riverpgxv5.New(nil), nil)
	if err != nil {
		return "", fmt.Errorf("listing River migrations: %w", err)
	}
	versions := migrator.AllVersions()
	if len(versions) == 0 {
		return "", errors.New("listing River migrations: none embedded")
	}
	fmt.Fprintf(h, "river %d\nmonth %s\n", versions[len(versions)-1].Version, now.UTC().Format("2006-01"))
	return "mq_tmpl_" + hex.EncodeToString(h.Sum(nil))[:8], nil
}

// Logger returns a logger writing text to the test's log, at the level named
// by MQ_TEST_LOG_LEVEL (debug, info, warn or error; default warn).
func Logger(t testing.TB) *slog.Logger {
	t.Helper()
	level := slog.LevelWarn
	if s := os.Getenv("MQ_TEST_LOG_LEVEL"); s != "" {
		if err := level.UnmarshalText([]byte(s)); err != nil {
			t.Fatalf("testenv: MQ_TEST_LOG_LEVEL=%q: %v", s, err)
		}
	}
	w := &testWriter{t: t}
	// Registered first, so it runs after the cleanups of whatever the logger
	// is handed to: t.Log panics once the test is over, and a goroutine that
	// outlives the test must not crash the binary for a log line.
	t.Cleanup(func() { w.done.Store(true) })
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: level}))
}

// testWriter sends each write, one log record, to t.Log.
type testWriter struct {
	t    testing.TB
	done atomic.Bool
}

func (w *testWriter) Write(p []byte) (int, error) {
	if w.done.Load() {
		fmt.Fprintf(os.Stderr, "%s (logged after the test ended): %s", w.t.Name(), p)
		return len(p), nil
	}
	w.t.Log(strings.TrimSuffix(string(p), "\n"))
	return len(p), nil
}

// RedisAddr returns the address of the single-node Redis for tests, from
// MQ_TEST_REDIS_ADDR (default 127.0.0.1:6379), after checking it answers.
func RedisAddr(t testing.TB) string {
	t.Helper()
	addr := os.Getenv("MQ_TEST_REDIS_ADDR")
	if addr == "" {
		addr = "127.0.0.1:6379"
	}
	if err := ping(t.Context(), addr); err != nil {
		t.Fatalf("testenv: Redis at %s (MQ_TEST_REDIS_ADDR) does not answer: %v; start it with `make up`, or run `make test`", addr, err)
	}
	return addr
}

// RedisClusterAddrs returns the nodes of the Redis cluster for tests, from
// MQ_TEST_REDIS_CLUSTER_ADDRS (comma-separated, default 127.0.0.1:7000 to
// 127.0.0.1:7005), after checking each answers.
func RedisClusterAddrs(t testing.TB) []string {
	t.Helper()
	var addrs []string
	if s := os.Getenv("MQ_TEST_REDIS_CLUSTER_ADDRS"); s != "" {
		for a := range strings.SplitSeq(s, ",") {
			if a = strings.TrimSpace(a); a != "" {
				addrs = append(addrs, a)
			}
		}
	} else {
		for port := 7000; port <= 7005; port++ {
			addrs = append(addrs, fmt.Sprintf("127.0.0.1:%d", port))
		}
	}
	for _, addr := range addrs {
		if err := ping(t.Context(), addr); err != nil {
			t.Fatalf("testenv: Redis cluster node %s (MQ_TEST_REDIS_CLUSTER_ADDRS) does not answer: %v; start the cluster with `make cluster-up`, or run `make test`", addr, err)
		}
	}
	return addrs
}

// ping sends a RESP PING to addr and expects PONG, without pulling a Redis
// client into every test binary that only needs the address.
func ping(ctx context.Context, addr string) error {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return err
	}
	defer conn.Close()
	if deadline, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(deadline)
	}
	if _, err := conn.Write([]byte("*1\r\n$4\r\nPING\r\n")); err != nil {
		return fmt.Errorf("sending PING: %w", err)
	}
	reply, err := bufio.NewReader(conn).ReadString('\n')
	if err != nil {
		return fmt.Errorf("reading PING reply: %w", err)
	}
	if reply = strings.TrimSpace(reply); reply != "+PONG" {
		return fmt.Errorf("PING answered %q", reply)
	}
	return nil
}

// SMTPSink starts an in-process SMTP sink for the test and stops it at
// Cleanup, failing the test if it cannot.
func SMTPSink(t testing.TB, opts smtpsink.Options) *smtpsink.Sink {
	t.Helper()
	sink := smtpsink.New(opts)
	if err := sink.Start(t.Context()); err != nil {
		t.Fatalf("starting smtpsink: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := sink.Stop(ctx); err != nil {
			t.Errorf("stopping smtpsink: %v", err)
		}
	})
	return sink
}
