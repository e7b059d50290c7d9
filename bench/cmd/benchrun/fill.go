package main

// Direct, set-based fills of the emails table for -rows-10m and -queued-1m.
//
// Going through POST /v1/emails would take hours at the accept rates of
// this machine, and what those two targets measure is the service *reading*
// a big table (GET by id) and *working* a big backlog (RSS), not accepting.
// So one real email per app is accepted through the API (the template: its
// row, its queue and its River job are exactly what the service writes), and
// the rest are copies of it made by INSERT ... SELECT FROM generate_series,
// in chunks, with their own UUIDv7 ids, created_at, message ids and
// recipients.

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"github.com/mailqueue/mailqueue/bench/load"
	"github.com/mailqueue/mailqueue/partitions"
)

// fillSpec says what a fill makes.
type fillSpec struct {
	n      int64         // rows to add
	from   time.Time     // created_at of the first row
	span   time.Duration // created_at runs evenly from from to from+span
	queued bool          // queued with an available send job each; otherwise delivered, no job
	// bodyLimit keeps only the first bodyLimit characters of html and text
	// (0 = the template's whole bodies).
	bodyLimit int
}

// fillResult is what the report says about a fill.
type fillResult struct {
	apps       int
	partitions []string
	took       time.Duration
	rows       int64
	tableBytes int64
}

// templates accepts one email per app through the API (creating apps
// benchrun-2 … benchrun-N next to the bench app) and records their rows in
// the scratch table bench_fill_template, numbered k = 0 … N-1.
func (b *bench) templates(ctx context.Context, c *load.Client, apps int) error {
	if b.templated {
		return nil
	}
	keys := []string{b.app.Key}
	for i := 2; i <= apps; i++ {
		ac := load.NewClient(c.BaseURL, "", 1, 30*time.Second)
		app, err := ac.CreateApp(ctx, b.adminKey, fmt.Sprintf("benchrun-%d", i))
		ac.Close()
		if err != nil {
			return err
		}
		keys = append(keys, app.Key)
	}
	body := load.EmailBody("", load.DefaultHTMLSize)
	var ids []string
	for _, key := range keys {
		status, data, err := c.Do(ctx, http.MethodPost, "/v1/emails", body, key)
		if err != nil {
			return fmt.Errorf("POST /v1/emails (template): %w", err)
		}
		if status/100 != 2 {
			return fmt.Errorf("POST /v1/emails (template): status %d: %s", status, load.Truncate(data, 300))
		}
		id, err := responseID(data)
		if err != nil {
			return err
		}
		ids = append(ids, id)
	}
	b.expected.Add(int64(len(ids)))
	_, err := b.pool.Exec(ctx, `CREATE TABLE bench_fill_template AS
		SELECT (t.ord - 1)::int AS k, e.id, e.created_at, e.app_id, e.job_id
		FROM unnest($1::uuid[]) WITH ORDINALITY AS t(id, ord)
		JOIN emails e ON e.id = t.id`, ids)
	if err != nil {
		return fmt.Errorf("recording the templates: %w", err)
	}
	var n int
	if err := b.pool.QueryRow(ctx, "SELECT count(*) FROM bench_fill_template").Scan(&n); err != nil {
		return err
	}
	if n != len(ids) {
		return fmt.Errorf("templates: %d of %d template emails found", n, len(ids))
	}
	b.templated = true
	return nil
}

// responseID reads the email id from a POST /v1/emails answer, whatever
// object it is nested in.
func responseID(data []byte) (string, error) {
	s := string(data)
	for _, key := range []string{`"id":"`, `"id": "`} {
		if _, rest, ok := strings.Cut(s, key); ok {
			if id, _, ok := strings.Cut(rest, `"`); ok {
				if _, err := uuid.Parse(id); err == nil {
					return id, nil
				}
			}
		}
	}
	return "", fmt.Errorf("no email id in %s", load.Truncate(data, 300))
}

// The fill statement. $1, $2: the range of g; $3: created_at of g = 0 in
// Unix ms; $4: ms between rows; $5: number of templates; $6: salt for the
// random part of the ids; $7: queued; $8: body limit (0 = whole).
//
// Row g copies template g % $5 (so the rows rotate over the apps) with:
//   - id: a UUIDv7 whose 48-bit time is its created_at in ms (as
//     store.NewID makes them), the rest md5-random with the RFC 9562 version
//     and variant bits; created_at: exactly that millisecond;
//   - message_id: <id>@<the template's domain>; the first recipient
//     user<g>@example.com;
//   - queued: status queued and a River job of the template's kind, queue,
//     priority, max_attempts and args with its own email_id, state available,
//     and emails.job_id pointing at it (ids come from River's sequence);
//   - otherwise: status delivered (sent 2 s, delivered 5 s after creation),
//     no job, as a table that has been working for months mostly holds.
const fillSQL = `
WITH src AS MATERIALIZED (
    SELECT g, (g % $5)::int AS k, ts, ms,
           (lpad(to_hex(ms), 12, '0') || '7' || substr(h, 1, 3) || '8' || substr(h, 4, 15))::uuid AS id,
           CASE WHEN $7::boolean THEN nextval(pg_get_serial_sequence('river_job', 'id')) END AS job_id
    FROM generate_series($1::bigint, $2::bigint) AS g,
         LATERAL (SELECT $3::bigint + g * $4::bigint AS ms) m,
         LATERAL (SELECT timestamptz 'epoch' + ms * interval '1 millisecond' AS ts,
                         md5(g::text || $6::text) AS h) x
), jobs AS (
    INSERT INTO river_job (id, args, kind, max_attempts, priority, queue, state, scheduled_at, created_at, metadata, tags)
    SELECT s.job_id, jsonb_set(j.args, '{email_id}', to_jsonb(s.id::text)), j.kind, j.max_attempts, j.priority,
           j.queue, 'available', s.ts, s.ts, j.metadata, j.tags
    FROM src s
    JOIN bench_fill_template t ON t.k = s.k
    JOIN river_job j ON j.id = t.job_id
    WHERE $7::boolean
)
INSERT INTO emails (id, created_at, app_id, queue_id, batch_id, idempotency_key, message_id,
                    from_address, from_name, to_addresses, cc, bcc, reply_to, subject, html_body,
                    text_body, headers, personalization_data, metadata, status, sandbox, priority,
                    retry_count, max_retries, job_id, scheduled_at, expires_at, sent_at, delivered_at, updated_at)
SELECT s.id, s.ts, e.app_id, e.queue_id, NULL, NULL, s.id::text || '@' || split_part(e.message_id, '@', 2),
       e.from_address, e.from_name,
       jsonb_set(e.to_addresses, '{0,email}', to_jsonb('user' || s.g || '@example.com')),
       e.cc, e.bcc, e.reply_to, e.subject,
       CASE WHEN $8::int > 0 THEN left(e.html_body, $8::int) ELSE e.html_body END,
       CASE WHEN $8::int > 0 THEN left(e.text_body, $8::int) ELSE e.text_body END,
       e.headers, e.personalization_data, e.metadata,
       CASE WHEN $7::boolean THEN 'queued' ELSE 'delivered' END::email_status,
       e.sandbox, e.priority, 0, e.max_retries, s.job_id, NULL, NULL,
       CASE WHEN $7::boolean THEN NULL ELSE s.ts + interval '2 seconds' END,
       CASE WHEN $7::boolean THEN NULL ELSE s.ts + interval '5 seconds' END,
       CASE WHEN $7::boolean THEN s.ts ELSE s.ts + interval '5 seconds' END
FROM src s
JOIN bench_fill_template t ON t.k = s.k
JOIN emails e ON e.id = t.id AND e.created_at = t.created_at`

// fillChunk is the number of rows one fill statement adds.
const fillChunk = 50_000

// fill adds spec.n copies of the templates in chunks on conns connections,
// after creating every monthly partition the rows need with the
// partitions package (what `mailqueue migrate` and the partition job run).
func (b *bench) fill(ctx context.Context, spec fillSpec, conns int) (fillResult, error) {
	var res fillResult
	if err := b.pool.QueryRow(ctx, "SELECT count(*) FROM bench_fill_template").Scan(&res.apps); err != nil {
		return res, err
	}
	last := spec.from.Add(spec.span)
	months := 0
	for m := monthOf(spec.from); m.Before(monthOf(last)); m = m.AddDate(0, 1, 0) {
		months++
	}
	created, err := partitions.Ensure(ctx, b.pool, spec.from, months)
	if err != nil {
		return res, err
	}
	res.partitions = created
	step := int64(1)
	if spec.n > 1 {
		step = max(1, spec.span.Milliseconds()/(spec.n-1))
	}
	start := time.Now()
	salt := randomHex(8)
	var next, done atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, conns)
	stopProgress := b.progress("fill (rows)", &done)
	for range max(1, conns) {
		wg.Go(func() {
			for ctx.Err() == nil {
				lo := next.Add(fillChunk) - fillChunk
				if lo >= spec.n {
					return
				}
				hi := min(lo+fillChunk, spec.n) - 1
				tag, err := b.pool.Exec(ctx, fillSQL, lo, hi, spec.from.UnixMilli(), step, res.apps, salt, spec.queued, spec.bodyLimit)
				if err != nil {
					errs <- fmt.Errorf("fill rows %d-%d: %w", lo, hi, err)
					return
				}
				done.Add(tag.RowsAffected())
			}
		})
	}
	wg.Wait()
	stopProgress()
	close(errs)
	if err := <-errs; err != nil {
		return res, err
	}
	if err := ctx.Err(); err != nil {
		return res, err
	}
	res.rows = done.Load()
	// Autovacuum would analyze the new rows within a minute or so; do it now
	// so the measurements do not depend on when it runs.
	for _, table := range []string{"emails", "river_job"} {
		if _, err := b.pool.Exec(ctx, "ANALYZE "+table); err != nil {
			return res, fmt.Errorf("analyze %s: %w", table, err)
		}
	}
	res.took = time.Since(start)
	_ = b.pool.QueryRow(ctx, `SELECT coalesce(sum(pg_total_relation_size(inhrelid)), 0)
		FROM pg_inherits WHERE inhparent = 'emails'::regclass`).Scan(&res.tableBytes)
	b.logf("fill: %d rows in %.0f s (%.0f rows/s)", res.rows, res.took.Seconds(), float64(res.rows)/res.took.Seconds())
	return res, nil
}

func monthOf(t time.Time) time.Time {
	u := t.UTC()
	return time.Date(u.Year(), u.Month(), 1, 0, 0, 0, 0, time.UTC)
}

// describeFill is the report's paragraph on how the rows were made.
func (b *bench) describeFill(spec fillSpec, res fillResult, conns int) {
	body := "the template's whole html and text bodies (~2 KB rows)"
	if spec.bodyLimit > 0 {
		body = fmt.Sprintf("html and text bodies cut to their first %d characters (to keep the table's size on disk reasonable; the GET reads are what is measured)", spec.bodyLimit)
	}
	what := "status `delivered`, no River job (as finished email)"
	if spec.queued {
		what = "status `queued`, each with its River `send_email` job (state `available`, the template job's queue, priority, max_attempts and args with its own `email_id`), `emails.job_id` set"
	}
	parts := "none needed"
	if len(res.partitions) > 0 {
		parts = strings.Join(res.partitions, ", ")
	}
	b.rep.para("Fill (set-based, not through the API): one email per app was accepted through `POST /v1/emails` (%d apps, the bench app among them); %d copies of those rows were then inserted with `INSERT … SELECT FROM generate_series` in chunks of %d on %d connections, rotating over the apps, created_at evenly from %s to %s, each with its own UUIDv7 id (time = created_at), message id and recipient; %s; %s. No `email_events` rows were copied. Partitions created first with the partitions package: %s. Then `ANALYZE emails, river_job`. It took **%.0f s** (%.0f rows/s); the emails partitions now take %s on disk.",
		res.apps, res.rows, fillChunk, conns, spec.from.UTC().Format(time.DateTime), spec.from.Add(spec.span).UTC().Format(time.DateTime),
		what, body, parts, res.took.Seconds(), float64(res.rows)/res.took.Seconds(), gib(res.tableBytes))
}

func gib(n int64) string { return fmt.Sprintf("%.2f GiB", float64(n)/(1<<30)) }

// sampleIDs picks up to n random emails of the bench app (the GET runs with
// its key: other apps' emails would be 404).
func (b *bench) sampleIDs(ctx context.Context, n int) ([]string, error) {
	rows, err := b.pool.Query(ctx, `SELECT id::text FROM emails TABLESAMPLE SYSTEM (1)
		WHERE app_id = $1 ORDER BY random() LIMIT $2`, b.app.ID, n)
	if err != nil {
		return nil, err
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, err
	}
	if len(ids) == 0 {
		return nil, fmt.Errorf("no emails of the bench app sampled")
	}
	return ids, nil
}

// existingDB names a database kept by an earlier run (-reuse-db).
func existingDB(adminURL, name string) (*benchDB, error) {
	u, err := url.Parse(adminURL)
	if err != nil {
		return nil, fmt.Errorf("database URL: %w", err)
	}
	u.Path = "/" + name
	return &benchDB{adminURL: adminURL, name: name, url: u.String()}, nil
}

// reuse picks up the bench app of a kept database (the app of template 0)
// and gives it a fresh API key: only digests are stored, so the old run's
// key is gone.
func (b *bench) reuse(ctx context.Context) error {
	if err := b.pool.QueryRow(ctx, "SELECT app_id::text FROM bench_fill_template WHERE k = 0").Scan(&b.app.ID); err != nil {
		return fmt.Errorf("-reuse-db: no fill templates in %s: %w", b.db.name, err)
	}
	var raw [32]byte
	if _, err := rand.Read(raw[:]); err != nil {
		return err
	}
	key := "mq_live_" + base64.RawURLEncoding.EncodeToString(raw[:])
	digest := sha256.Sum256([]byte(key))
	if _, err := b.pool.Exec(ctx, `INSERT INTO api_keys (id, app_id, name, key_prefix, key_hash, key_last4, scopes)
		VALUES ($1, $2, 'benchrun -reuse-db', 'mq_live_', $3, $4, '{admin}')`,
		uuid.New(), b.app.ID, digest[:], key[len(key)-4:]); err != nil {
		return fmt.Errorf("-reuse-db: API key: %w", err)
	}
	b.app.Key = key
	b.templated = true
	return nil
}
