-- Email batches: a batch is the set of an app's emails sharing a batch_id
-- (a UUIDv7). Its rows are written with COPY (store.EmailInsertBatch), so
-- the only statements here are reads.

-- name: EmailBatchCounts
-- Counts a batch's emails by status. Every email of a batch was created
-- after its id, so created_at >= the id's time skips older partitions.
SELECT status::text AS status, count(*) AS n
FROM emails
WHERE app_id = @app_id AND batch_id = @batch_id AND created_at >= @created_at
GROUP BY status;

-- name: SendJobIDNext
-- A job id below every job the batch is about to insert on this session
-- (taking it leaves a gap in the ids, as any rolled-back insert does).
SELECT nextval(pg_get_serial_sequence('river_job', 'id'));

-- name: SendJobIDsInserted
-- The send jobs just inserted with COPY (which returns no ids): every id
-- this session took from river_job's sequence since @after, up to currval
-- (its last one), by a range scan of the primary key. The range may hold
-- other sessions' jobs committed meanwhile; the caller keeps only those of
-- its own emails.
SELECT id, (args->>'email_id')::uuid AS email_id
FROM river_job
WHERE id > @after AND id <= currval(pg_get_serial_sequence('river_job', 'id'))
  AND kind = 'send_email';
