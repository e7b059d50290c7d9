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
