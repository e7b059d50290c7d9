package main

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"

	"github.com/mailqueue/mailqueue/jobs"
	"github.com/mailqueue/mailqueue/partitions"
	"github.com/mailqueue/mailqueue/store"
	"github.com/mailqueue/mailqueue/testenv"
)

// fillBench makes a bench on a fresh migrated database with two apps, each
// with one queued template email and its send job inserted by River, and
// records them as fill templates.
func fillBench(t *testing.T) *bench {
	t.Helper()
	ctx := context.Background()
	pool := testenv.DB(t)
	client, err := river.NewClient(riverpgxv5.New(pool), &river.Config{})
	if err != nil {
		t.Fatalf("river client: %v", err)
	}
	var ids []uuid.UUID
	for i := range 2 {
		appID, queueID := uuid.Must(uuid.NewV7()), uuid.Must(uuid.NewV7())
		id, created := store.NewID()
		tx, err := pool.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, q := range []struct {
			sql  string
			args []any
		}{
			{"INSERT INTO apps (id, name) VALUES ($1, $2)", []any{appID, "app"}},
			{"INSERT INTO queues (id, app_id, name) VALUES ($1, $2, 'default')", []any{queueID, appID}},
			{`INSERT INTO emails (id, created_at, app_id, queue_id, message_id, from_address, to_addresses,
				subject, html_body, text_body, priority, max_retries)
				VALUES ($1, $2, $3, $4, $5, 'noreply@example.com', '[{"email": "user@example.com", "name": "User"}]',
				'Hello', $6, 'text body', 5, 5)`,
				[]any{id, created, appID, queueID, id.String() + "@mq.example.com", strings.Repeat("<p>html</p>", 100)}},
		} {
			if _, err := tx.Exec(ctx, q.sql, q.args...); err != nil {
				t.Fatalf("template %d: %v", i, err)
			}
		}
		lane, prio := jobs.Lane(5)
		res, err := client.InsertTx(ctx, tx, jobs.SendArgs{EmailID: id, RetryDelay: []int32{30, 120}},
			&river.InsertOpts{Queue: lane, Priority: prio, MaxAttempts: 6})
		if err != nil {
			t.Fatalf("template job: %v", err)
		}
		if _, err := tx.Exec(ctx, "UPDATE emails SET job_id = $1 WHERE id = $2", res.Job.ID, id); err != nil {
			t.Fatal(err)
		}
		if err := tx.Commit(ctx); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, id)
	}
	if _, err := pool.Exec(ctx, `CREATE TABLE bench_fill_template AS
		SELECT (t.ord - 1)::int AS k, e.id, e.created_at, e.app_id, e.job_id
		FROM unnest($1::uuid[]) WITH ORDINALITY AS t(id, ord) JOIN emails e ON e.id = t.id`, ids); err != nil {
		t.Fatal(err)
	}
	return &bench{o: &options{}, pool: pool, rep: &report{}, began: time.Now(), templated: true}
}

func TestFillQueued(t *testing.T) {
	ctx := context.Background()
	b := fillBench(t)
	const n = 3000
	// Across a month boundary before now: the fill must create the partitions.
	from := time.Now().UTC().AddDate(0, -2, 0)
	res, err := b.fill(ctx, fillSpec{n: n, from: from, span: 40 * 24 * time.Hour, queued: true}, 2)
	if err != nil {
		t.Fatalf("fill: %v", err)
	}
	if res.rows != n || res.apps != 2 {
		t.Errorf("fill made %d rows over %d apps, want %d over 2", res.rows, res.apps, n)
	}
	if want := partitions.Name("emails", from); !slices.Contains(res.partitions, want) {
		t.Errorf("partitions created %v, want %s among them", res.partitions, want)
	}

	rows, err := b.pool.Query(ctx, `SELECT e.id, e.created_at, e.status::text, e.app_id, e.html_body, j.state::text, j.kind, j.queue, j.args
		FROM emails e JOIN river_job j ON j.id = e.job_id
		WHERE e.id NOT IN (SELECT id FROM bench_fill_template)`)
	if err != nil {
		t.Fatal(err)
	}
	type row struct {
		id                 uuid.UUID
		created            time.Time
		status             string
		app                uuid.UUID
		html               string
		state, kind, queue string
		args               []byte
	}
	got, err := pgx.CollectRows(rows, func(r pgx.CollectableRow) (row, error) {
		var x row
		err := r.Scan(&x.id, &x.created, &x.status, &x.app, &x.html, &x.state, &x.kind, &x.queue, &x.args)
		return x, err
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != n {
		t.Fatalf("%d filled emails with their job, want %d", len(got), n)
	}
	apps := map[uuid.UUID]int{}
	lane, _ := jobs.Lane(5)
	for _, x := range got {
		apps[x.app]++
		if x.id.Version() != 7 || !store.IDTime(x.id).Equal(x.created) {
			t.Fatalf("email %s: version %d, IDTime %s, created_at %s: want a UUIDv7 holding created_at", x.id, x.id.Version(), store.IDTime(x.id), x.created)
		}
		if x.created.Before(from.Truncate(time.Millisecond)) || x.created.After(from.Add(40*24*time.Hour)) {
			t.Fatalf("email %s created_at %s outside the span", x.id, x.created)
		}
		if x.status != "queued" || x.state != "available" || x.kind != (jobs.SendArgs{}).Kind() || x.queue != lane {
			t.Fatalf("email %s: status %s, job %s %s on %s", x.id, x.status, x.state, x.kind, x.queue)
		}
		var args jobs.SendArgs
		if err := json.Unmarshal(x.args, &args); err != nil {
			t.Fatalf("job args %s: %v", x.args, err)
		}
		if args.EmailID != x.id || len(args.RetryDelay) != 2 {
			t.Fatalf("job args %+v for email %s", args, x.id)
		}
		if len(x.html) != 1100 {
			t.Fatalf("html of %d bytes, want the template's 1100", len(x.html))
		}
	}
	if len(apps) != 2 {
		t.Errorf("rows spread over %d apps, want 2", len(apps))
	}
	// River's sequence must be past the ids the fill took.
	var ahead bool
	if err := b.pool.QueryRow(ctx, "SELECT nextval(pg_get_serial_sequence('river_job', 'id')) > (SELECT max(id) FROM river_job)").Scan(&ahead); err != nil {
		t.Fatal(err)
	}
	if !ahead {
		t.Error("river_job's id sequence is not past the filled jobs")
	}
}

func TestFillDelivered(t *testing.T) {
	ctx := context.Background()
	b := fillBench(t)
	const n = 2000
	res, err := b.fill(ctx, fillSpec{n: n, from: time.Now().Add(-48 * time.Hour), span: 24 * time.Hour, bodyLimit: 64}, 1)
	if err != nil {
		t.Fatalf("fill: %v", err)
	}
	if res.rows != n {
		t.Fatalf("fill made %d rows, want %d", res.rows, n)
	}
	var delivered, withJob, longBody, jobs int
	if err := b.pool.QueryRow(ctx, `SELECT count(*) FILTER (WHERE status = 'delivered' AND sent_at IS NOT NULL AND delivered_at IS NOT NULL),
		count(*) FILTER (WHERE job_id IS NOT NULL), count(*) FILTER (WHERE length(html_body) > 64 OR length(text_body) > 64)
		FROM emails WHERE id NOT IN (SELECT id FROM bench_fill_template)`).Scan(&delivered, &withJob, &longBody); err != nil {
		t.Fatal(err)
	}
	if err := b.pool.QueryRow(ctx, "SELECT count(*) FROM river_job").Scan(&jobs); err != nil {
		t.Fatal(err)
	}
	if delivered != n || withJob != 0 || longBody != 0 || jobs != 2 {
		t.Errorf("delivered %d of %d, %d with a job, %d with long bodies, %d River jobs (want only the 2 templates')", delivered, n, withJob, longBody, jobs)
	}
}

func TestCommandLine(t *testing.T) {
	got := commandLine([]string{"-phases", "", "-name", "a b", "-rows-10m"})
	want := "go run ./bench/cmd/benchrun -phases '' -name 'a b' -rows-10m"
	if got != want {
		t.Errorf("commandLine = %s, want %s", got, want)
	}
}
