package main

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"

	"github.com/mailqueue/mailqueue/bench/load"
	"github.com/mailqueue/mailqueue/bench/smtpsink"
	"github.com/mailqueue/mailqueue/mail"
	"github.com/mailqueue/mailqueue/store"
)

// ceilings measures what each component can do on its own on this machine,
// without the service: the SMTP path, PostgreSQL inserts and River.
func (b *bench) ceilings(ctx context.Context) error {
	b.rep.section("Component ceilings")
	b.rep.para("Each component alone, without the service, to show where a target is out of reach on this machine. Run before the service starts, in the bench database.")
	var rows [][]string
	// cpu is the CPU time per item of this process (pool, sink, River
	// client) and the bench database's backends since c0; "" without c0.
	var c0 *cpuSnapshot
	mark := func() { c := b.takeCPU(ctx, 0); c0 = &c }
	add := func(what, how string, n int64, d time.Duration, unit string) {
		cpu := ""
		if c0 != nil {
			r := c0.perEmail(b.takeCPU(ctx, 0), n)
			cpu = r[1] + " + " + r[3]
			c0 = nil
		}
		rows = append(rows, []string{what, how, fmt.Sprint(n), fmt.Sprintf("%.2fs", d.Seconds()), fmt.Sprintf("%.0f %s/s", float64(n)/d.Seconds(), unit), cpu})
	}
	for _, size := range []int{load.DefaultHTMLSize, 100 << 10} {
		b.logf("ceilings: SMTP pool → sink, html %d bytes", size)
		mark()
		n, d, err := b.smtpCeiling(ctx, size)
		if err != nil {
			return err
		}
		add(fmt.Sprintf("SMTP: mail.Pool → smtpsink, html %s", sizeLabel(size)), "8 goroutines, pool of 8 connections", n, d, "emails")
	}
	b.logf("ceilings: PostgreSQL inserts")
	pgRows, err := b.pgCeiling(ctx)
	if err != nil {
		return err
	}
	for _, r := range pgRows {
		rows = append(rows, append(r, ""))
	}
	b.logf("ceilings: the floor of a %d-recipient batch", b.o.batchSize)
	floor, floorCPU, steps, err := b.batchFloor(ctx, b.o.batchSize)
	if err != nil {
		return err
	}
	add("PostgreSQL floor of one batch", fmt.Sprintf("one transaction, as the service does it: River InsertManyFastTx of the jobs %d ms, COPY into emails %d ms and email_events %d ms (the real tables and indexes), COMMIT %d ms; PostgreSQL CPU %d ms",
		steps[0].Milliseconds(), steps[1].Milliseconds(), steps[2].Milliseconds(), steps[3].Milliseconds(), floorCPU.Milliseconds()), int64(b.o.batchSize), floor, "recipients")
	for _, v := range []struct {
		jobs, workers int
		cooldown      time.Duration
		how           string
	}{
		{b.o.riverJobs, 100, 0, "100 workers, River's default fetch cooldown (100 ms)"},
		{max(100, b.o.riverJobs/10), 22, 0, "22 workers, River's default fetch cooldown"},
		{b.o.riverJobs, 22, 5 * time.Millisecond, "22 workers, 5 ms fetch cooldown (the service's settings)"},
		{b.o.riverJobs, 100, 5 * time.Millisecond, "100 workers, 5 ms fetch cooldown"},
	} {
		b.logf("ceilings: River, %d jobs, %d workers", v.jobs, v.workers)
		c := b.takeCPU(ctx, 0)
		ins, work, err := b.riverCeiling(ctx, v.jobs, v.workers, v.cooldown)
		if err != nil {
			return err
		}
		add("River: InsertMany", "one call", int64(v.jobs), ins, "jobs")
		c0 = &c
		add("River: work no-op jobs", v.how+"; from insert until all completed", int64(v.jobs), work, "jobs")
	}
	b.rep.table([]string{"component", "how", "count", "time", "rate", "CPU ms per item (PostgreSQL + benchrun)"}, rows)
	b.rep.para("CPU per item is the time the bench database's PostgreSQL backends and this process (the SMTP pool and sink, the River client) used, divided by the items: it says what one email or job costs whatever else the machine is doing. The River rows include the insert.")
	b.rep.para("A River queue fetches at most MaxWorkers jobs per fetch and waits FetchCooldown between fetches, so with River's default (100 ms) one queue works at most about MaxWorkers × 10 short jobs/s. The service sets MQ_FETCH_COOLDOWN (5 ms by default); the 5 ms rows show River's own ceiling on this machine with that setting.")
	return nil
}

func sizeLabel(n int) string {
	if n >= 1<<10 {
		return fmt.Sprintf("%g KB", float64(n)/1024)
	}
	return fmt.Sprintf("%d B", n)
}

func (b *bench) smtpCeiling(ctx context.Context, htmlSize int) (int64, time.Duration, error) {
	sink := smtpsink.New(smtpsink.Options{Logger: slog.New(slog.DiscardHandler)})
	if err := sink.Start(ctx); err != nil {
		return 0, 0, err
	}
	defer func() { _ = sink.Stop(context.Background()) }()
	pool := mail.NewPool(mail.Server{Host: sink.Host(), Port: sink.Port(), PoolSize: 8, Timeout: 30 * time.Second}, nil)
	defer pool.Close()
	html := load.HTML(htmlSize)
	var seq, failed atomic.Int64
	var firstErr atomic.Value
	start := time.Now()
	deadline := start.Add(b.o.ceilDur)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for time.Now().Before(deadline) && ctx.Err() == nil {
				i := seq.Add(1)
				err := pool.Send(ctx, &mail.Message{
					MessageID: fmt.Sprintf("%d.%d@bench.example.com", start.UnixNano(), i),
					From:      mail.Address{Email: "noreply@example.com", Name: "Example App"},
					To:        []mail.Address{{Email: "user@example.com", Name: "John Doe"}},
					Subject:   "Your receipt", HTML: html, Text: "Thanks!",
					Headers: map[string]string{"X-Order": "1234"},
				})
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
				}
			}
		})
	}
	wg.Wait()
	d := time.Since(start)
	if f := failed.Load(); f > 0 {
		b.problem("SMTP ceiling: %d sends failed, first: %v", f, firstErr.Load())
	}
	return sink.Stats().Messages, d, nil
}

func (b *bench) pgCeiling(ctx context.Context) ([][]string, error) {
	cfg, err := pgxpool.ParseConfig(b.db.url)
	if err != nil {
		return nil, err
	}
	cfg.MaxConns = 8
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, err
	}
	defer pool.Close()
	if _, err := pool.Exec(ctx, `CREATE TABLE bench_ceiling (
		id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
		created_at timestamptz NOT NULL DEFAULT now(),
		payload text NOT NULL)`); err != nil {
		return nil, err
	}
	defer func() { _, _ = pool.Exec(context.Background(), "DROP TABLE IF EXISTS bench_ceiling") }()
	payload := strings.Repeat("x", 2048)
	var rows [][]string
	row := func(what, how string, n int64, d time.Duration) {
		rows = append(rows, []string{what, how, fmt.Sprint(n), fmt.Sprintf("%.2fs", d.Seconds()), fmt.Sprintf("%.0f rows/s", float64(n)/d.Seconds())})
	}

	// COPY, 1000 rows per statement, one connection.
	src := make([][]any, 1000)
	for i := range src {
		src[i] = []any{payload}
	}
	var copied int64
	start := time.Now()
	for time.Since(start) < b.o.ceilDur && ctx.Err() == nil {
		n, err := pool.CopyFrom(ctx, pgx.Identifier{"bench_ceiling"}, []string{"payload"}, pgx.CopyFromRows(src))
		if err != nil {
			return nil, fmt.Errorf("COPY: %w", err)
		}
		copied += n
	}
	row("PostgreSQL: COPY", "pgx CopyFrom, 1,000 rows of 2 KB per call, 1 connection", copied, time.Since(start))

	// Single-row INSERTs, each its own transaction (autocommit), 8 connections.
	var inserted atomic.Int64
	var insErr atomic.Value
	start = time.Now()
	deadline := start.Add(b.o.ceilDur)
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for time.Now().Before(deadline) && ctx.Err() == nil {
				if _, err := pool.Exec(ctx, "INSERT INTO bench_ceiling (payload) VALUES ($1)", payload); err != nil {
					insErr.CompareAndSwap(nil, err)
					return
				}
				inserted.Add(1)
			}
		})
	}
	wg.Wait()
	if e := insErr.Load(); e != nil {
		return nil, fmt.Errorf("INSERT: %v", e)
	}
	row("PostgreSQL: single INSERT", "1 row of 2 KB per statement and commit, 8 connections", inserted.Load(), time.Since(start))
	return rows, nil
}

type noopArgs struct{}

func (noopArgs) Kind() string { return "bench_noop" }

type noopWorker struct {
	river.WorkerDefaults[noopArgs]
	done *atomic.Int64
}

func (w *noopWorker) Work(context.Context, *river.Job[noopArgs]) error {
	w.done.Add(1)
	return nil
}

// riverCeiling inserts n no-op jobs with one InsertMany and times it, and
// the time from the insert until a client with maxWorkers completed them all.
func (b *bench) riverCeiling(ctx context.Context, n, maxWorkers int, cooldown time.Duration) (insert, work time.Duration, err error) {
	const queue = "bench_ceiling"
	var done atomic.Int64
	workers := river.NewWorkers()
	river.AddWorker(workers, &noopWorker{done: &done})
	client, err := river.NewClient(riverpgxv5.New(b.pool), &river.Config{
		Logger:        slog.New(slog.DiscardHandler),
		Queues:        map[string]river.QueueConfig{queue: {MaxWorkers: maxWorkers}},
		Workers:       workers,
		FetchCooldown: cooldown, // 0 = River's default
	})
	if err != nil {
		return 0, 0, err
	}
	if err := client.Start(ctx); err != nil {
		return 0, 0, err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = client.Stop(sctx)
		_, _ = b.pool.Exec(context.Background(), "DELETE FROM river_job WHERE queue = $1", queue)
	}()
	params := make([]river.InsertManyParams, n)
	for i := range params {
		params[i] = river.InsertManyParams{Args: noopArgs{}, InsertOpts: &river.InsertOpts{Queue: queue}}
	}
	start := time.Now()
	if _, err := client.InsertMany(ctx, params); err != nil {
		return 0, 0, fmt.Errorf("InsertMany: %w", err)
	}
	insert = time.Since(start)
	deadline := time.Now().Add(b.o.drainTimeout)
	for done.Load() < int64(n) {
		if time.Now().After(deadline) || ctx.Err() != nil {
			return insert, 0, fmt.Errorf("the River client worked %d of %d jobs within %s", done.Load(), n, b.o.drainTimeout)
		}
		time.Sleep(2 * time.Millisecond)
	}
	return insert, time.Since(start), nil
}

// floorArgs are shaped like the service's send job arguments.
type floorArgs struct {
	EmailID    uuid.UUID `json:"email_id"`
	RetryDelay []int     `json:"retry_delay,omitempty"`
}

func (floorArgs) Kind() string { return "bench_floor" }

// batchFloor is the least PostgreSQL work of an n-recipient batch: in one
// transaction, as the service does it, River's fastest insert
// (InsertManyFastTx, COPY) of n send-shaped jobs and COPY of n rows into
// the real emails and email_events tables, with their indexes, then
// COMMIT. No HTTP, JSON or validation. The rows are deleted afterwards.
// pgCPU is the PostgreSQL CPU time the transaction used.
// steps are the times of the River insert, the two COPYs and the COMMIT.
func (b *bench) batchFloor(ctx context.Context, n int) (took, pgCPU time.Duration, steps []time.Duration, err error) {
	pool, err := store.NewPool(ctx, b.db.url)
	if err != nil {
		return 0, 0, nil, err
	}
	defer pool.Close()
	// Connected before the clock starts, so the backend's CPU can be read
	// on both sides of the transaction.
	if err := pool.Ping(ctx); err != nil {
		return 0, 0, nil, err
	}
	client, err := river.NewClient(riverpgxv5.New(pool), &river.Config{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		return 0, 0, nil, err
	}
	app, queue, batch := uuid.New(), uuid.New(), uuid.New()
	defer func() {
		bg := context.Background()
		_, _ = pool.Exec(bg, "DELETE FROM river_job WHERE kind = 'bench_floor'")
		_, _ = pool.Exec(bg, "DELETE FROM email_events WHERE app_id = $1", app)
		_, _ = pool.Exec(bg, "DELETE FROM emails WHERE app_id = $1", app)
	}()

	html := load.HTML(load.DefaultHTMLSize)
	now := time.Now().UTC().Truncate(time.Microsecond)
	ids := make([]uuid.UUID, n)
	jobs := make([]river.InsertManyParams, n)
	emails := make([][]any, n)
	events := make([][]any, n)
	for i := range n {
		ids[i] = uuid.Must(uuid.NewV7())
		jobs[i] = river.InsertManyParams{Args: floorArgs{EmailID: ids[i]}, InsertOpts: &river.InsertOpts{Queue: "bench_floor", Priority: 2}}
		emails[i] = []any{ids[i], now, app, queue, batch, fmt.Sprintf("%s@bench.example.com", ids[i]),
			"noreply@example.com", "Example App", fmt.Sprintf(`[{"email":"user%d@example.com"}]`, i),
			"Your receipt", html, "Thanks!", `{"X-Order":"1234"}`, fmt.Sprintf(`{"index":"%d"}`, i),
			"queued", int16(5), int16(3), int64(i + 1), now}
		events[i] = []any{uuid.Must(uuid.NewV7()), now, ids[i], app, "queued"}
	}
	steps = make([]time.Duration, 4)
	pg0, start := b.pgCPU(ctx), time.Now()
	tx, err := pool.Begin(ctx)
	if err != nil {
		return 0, 0, nil, err
	}
	defer func() { _ = tx.Rollback(context.Background()) }()
	t := time.Now()
	if _, err := client.InsertManyFastTx(ctx, tx, jobs); err != nil {
		return 0, 0, nil, fmt.Errorf("InsertManyFastTx: %w", err)
	}
	steps[0], t = time.Since(t), time.Now()
	if _, err := tx.CopyFrom(ctx, pgx.Identifier{"emails"}, []string{"id", "created_at", "app_id", "queue_id", "batch_id",
		"message_id", "from_address", "from_name", "to_addresses", "subject", "html_body", "text_body", "headers",
		"metadata", "status", "priority", "max_retries", "job_id", "updated_at"}, pgx.CopyFromRows(emails)); err != nil {
		return 0, 0, nil, fmt.Errorf("COPY emails: %w", err)
	}
	steps[1], t = time.Since(t), time.Now()
	if _, err := tx.CopyFrom(ctx, pgx.Identifier{"email_events"}, []string{"id", "created_at", "email_id", "app_id", "event_type"},
		pgx.CopyFromRows(events)); err != nil {
		return 0, 0, nil, fmt.Errorf("COPY email_events: %w", err)
	}
	steps[2], t = time.Since(t), time.Now()
	if err := tx.Commit(ctx); err != nil {
		return 0, 0, nil, err
	}
	steps[3] = time.Since(t)
	took = time.Since(start)
	return took, b.pgCPU(ctx) - pg0, steps, nil
}
