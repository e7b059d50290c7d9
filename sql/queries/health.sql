-- Health: cheap whole-service numbers for /v1/health/detailed.

-- name: HealthCounts
-- Counts from River's own table: it is small (finished jobs are pruned) and
-- indexed by state, unlike the partitioned emails table.
SELECT count(*) FILTER (WHERE state IN ('available', 'scheduled', 'retryable', 'pending')) AS pending,
       count(*) FILTER (WHERE state = 'running') AS running
FROM river_job
WHERE kind = 'send_email';
