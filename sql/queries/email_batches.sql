-- Email batches: a batch is the set of an app's emails sharing a batch_id
-- (a UUIDv7). Its rows are written with COPY (store.EmailInsertBatch), so
-- the only statements here are reads.

-- name: EmailBatchCounts
-- Counts a batch's emails by status. Every email of a batch was created
-- after its id, so created_at >= the id's time skips older partitions.
-- Queued emails whose send job is running count as processing (EmailGet).
SELECT CASE WHEN e.status = 'queued' AND j.id IS NOT NULL THEN 'processing' ELSE e.status::text END AS status,
       count(*) AS n
FROM emails e
LEFT JOIN river_job j ON j.id = e.job_id AND j.state = 'running' AND e.status = 'queued'
                     AND e.updated_at <= j.attempted_at
WHERE e.app_id = @app_id AND e.batch_id = @batch_id AND e.created_at >= @created_at
GROUP BY 1;

-- name: SendJobIDNext
-- A job id below every job the batch is about to insert on this session
-- (taking it leaves a gap in the ids, as any rolled-back insert does).
SELECT nextval(pg_get_serial_sequence('river_job', 'id'));

-- name: SendJobIDRange
-- The last job id this session took from river_job's sequence, and the
-- email ids of the jobs at @after + 1 and at that last id: when the batch's
-- session took every id in between, its jobs hold them in insert order
-- (COPY takes each row's default in turn), which the two ends confirm.
SELECT l.last,
       (SELECT (args->>'email_id')::uuid FROM river_job WHERE id = @after::bigint + 1 AND kind = 'send_email'),
       (SELECT (args->>'email_id')::uuid FROM river_job WHERE id = l.last AND kind = 'send_email')
FROM (SELECT currval(pg_get_serial_sequence('river_job', 'id')) AS last) l;

-- name: SendJobIDsInserted
-- The send jobs just inserted with COPY (which returns no ids): every id
-- this session took from river_job's sequence since @after, up to currval
-- (its last one), by a range scan of the primary key (the subquery is
-- evaluated once, so it bounds the scan). The range may hold other
-- sessions' jobs committed meanwhile, of any kind; the caller keeps only
-- those of its own emails. (No condition on kind: with one, the planner may
-- AND in river_job_kind, which covers every queued send job.)
SELECT id, CASE WHEN kind = 'send_email' THEN (args->>'email_id')::uuid END AS email_id
FROM river_job
WHERE id > @after AND id <= (SELECT currval(pg_get_serial_sequence('river_job', 'id')));
