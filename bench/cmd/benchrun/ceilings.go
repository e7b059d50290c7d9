package main

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"
	"github.com/riverqueue/river"
	"github.com/riverqueue/river/riverdriver/riverpgxv5"

	"github.com/mailqueue/mailqueue/bench/load"
	"github.com/mailqueue/mailqueue/bench/smtpsink"
	"github.com/mailqueue/mailqueue/mail"
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
