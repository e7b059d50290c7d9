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

-- name: SendJobIDsByMark
-- The send jobs just inserted with COPY (which returns no ids), found by
-- the one-off mark in their metadata through River's GIN index on it.
SELECT id, (args->>'email_id')::uuid AS email_id
FROM river_job
WHERE metadata @> @mark::jsonb AND kind = 'send_email';
