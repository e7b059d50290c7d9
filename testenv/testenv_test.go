package testenv

import (
	"context"
	"net"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/goleak"

	"github.com/mailqueue/mailqueue/partitions"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func TestDatabaseURLGivesFreshMigratedDatabases(t *testing.T) {
	t.Parallel()
	ctx := t.Context()

	first, second := DatabaseURL(t), DatabaseURL(t)
	if first == second {
		t.Fatalf("two calls returned the same database %s", first)
	}

	var names []string
	for _, u := range []string{first, second} {
		conn, err := pgx.Connect(ctx, u)
		if err != nil {
			t.Fatalf("connecting to %s: %v", u, err)
		}
		t.Cleanup(func() { _ = conn.Close(context.Background()) })

		var name string
		var version int
		var riverJob, partition bool
		err = conn.QueryRow(ctx, `SELECT current_database(),
				(SELECT max(version) FROM mq_schema_migrations),
				to_regclass('river_job') IS NOT NULL,
				to_regclass($1) IS NOT NULL`,
			partitions.Name("emails", time.Now())).Scan(&name, &version, &riverJob, &partition)
		if err != nil {
			t.Fatalf("inspecting %s: %v", u, err)
		}
		if version != 1 || !riverJob || !partition {
			t.Errorf("database %s: schema version %d, river_job exists %t, current emails partition exists %t; want 1, true, true",
				name, version, riverJob, partition)
		}
		names = append(names, name)
	}
	if names[0] == names[1] {
		t.Errorf("both URLs lead to database %s", names[0])
	}
}

func TestDBIsUsableAndIsolated(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	a, b := DB(t), DB(t)

	if _, err := a.Exec(ctx, "INSERT INTO apps (id, name) VALUES (gen_random_uuid(), 'isolated')"); err != nil {
		t.Fatalf("inserting an app: %v", err)
	}
	var n int
	if err := b.QueryRow(ctx, "SELECT count(*) FROM apps").Scan(&n); err != nil {
		t.Fatalf("counting apps: %v", err)
	}
	if n != 0 {
		t.Errorf("second database sees %d apps from the first", n)
	}
}

func TestLoggerWritesToTestLog(t *testing.T) {
	t.Parallel()
	// Only checks it does not panic, at any level and after the test's
	// cleanups ran; the output itself is read by eye with -v.
	logger := Logger(t)
	logger.Warn("testenv logger works", "answer", 42)
}

func TestRedisAddrAnswers(t *testing.T) {
	t.Parallel()
	if addr := RedisAddr(t); addr == "" {
		t.Error("RedisAddr returned an empty address")
	}
}

// fakeRedis listens on a free port and answers the first line it reads with
// reply, then closes the connection.
func fakeRedis(t *testing.T, reply string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listening: %v", err)
	}
	done := make(chan struct{})
	t.Cleanup(func() { ln.Close(); <-done })
	go func() {
		defer close(done)
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			buf := make([]byte, 64)
			_, _ = conn.Read(buf)
			_, _ = conn.Write([]byte(reply))
			conn.Close()
		}
	}()
	return ln.Addr().String()
}

func TestPing(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	if err := ping(ctx, fakeRedis(t, "+PONG\r\n")); err != nil {
		t.Errorf("ping of a server answering PONG: %v", err)
	}
	if err := ping(ctx, fakeRedis(t, "-LOADING Redis is loading the dataset in memory\r\n")); err == nil {
		t.Error("ping accepted a LOADING reply")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("listening: %v", err)
	}
	closed := ln.Addr().String()
	ln.Close()
	if err := ping(ctx, closed); err == nil {
		t.Error("ping of a closed port succeeded")
	}
}
