-- Queues: an app's named streams of email, each with its own priority and limits.

-- name: QueueInsert
-- Inserts nothing when smtp_config_id names another app's config: the
-- foreign key alone would accept any tenant's id.
INSERT INTO queues (id, app_id, name, priority, rate_limit, max_retries, retry_delay, smtp_config_id, settings)
SELECT @id, @app_id, @name, @priority, @rate_limit, @max_retries, @retry_delay, @smtp_config_id::uuid, @settings
WHERE @smtp_config_id::uuid IS NULL
   OR EXISTS (SELECT 1 FROM smtp_configs WHERE id = @smtp_config_id::uuid AND app_id = @app_id)
RETURNING id, app_id, name, priority, rate_limit, max_retries, retry_delay, smtp_config_id,
          is_paused, is_draining, settings, created_at, updated_at;

-- name: QueueGet
SELECT id, app_id, name, priority, rate_limit, max_retries, retry_delay, smtp_config_id,
       is_paused, is_draining, settings, created_at, updated_at
FROM queues
WHERE app_id = @app_id AND id = @id AND deleted_at IS NULL;

-- name: QueueGetByName
SELECT id, app_id, name, priority, rate_limit, max_retries, retry_delay, smtp_config_id,
       is_paused, is_draining, settings, created_at, updated_at
FROM queues
WHERE app_id = @app_id AND name = @name AND deleted_at IS NULL;

-- name: QueueGetByNameVersion
-- QueueGetByName with the row's version (xmin, which every UPDATE changes),
-- for a cache that QueueVersions checks before use.
SELECT id, app_id, name, priority, rate_limit, max_retries, retry_delay, smtp_config_id,
       is_paused, is_draining, settings, created_at, updated_at, xmin::text::bigint AS version
FROM queues
WHERE app_id = @app_id AND name = @name AND deleted_at IS NULL;

-- name: QueueVersions
-- The versions of those of @ids that are live queues, locked FOR KEY SHARE:
-- every email insert holds its queue so (store.queueHold), and a deletion
-- waits for the accept (see QueueLockForDelete).
SELECT id, xmin::text::bigint AS version
FROM queues
WHERE id = ANY(@ids::uuid[]) AND deleted_at IS NULL
FOR KEY SHARE;

-- name: QueueLock
-- Reads a queue and locks it for the rest of the transaction, so concurrent
-- changes to one queue apply one after the other and each audit entry's
-- "before" is what that change really replaced. FOR NO KEY UPDATE does not
-- conflict with the FOR KEY SHARE lock an email insert takes on its queue
-- (store.queueHold), so editing or pausing a queue never holds up accepting email.
SELECT id, app_id, name, priority, rate_limit, max_retries, retry_delay, smtp_config_id,
       is_paused, is_draining, settings, created_at, updated_at
FROM queues
WHERE app_id = @app_id AND id = @id AND deleted_at IS NULL
FOR NO KEY UPDATE;

-- name: QueueLockForDelete
-- FOR UPDATE, unlike QueueLock, conflicts with the FOR KEY SHARE lock an
-- email insert holds on its queue (store.queueHold): emails being accepted into the queue
-- commit before the pending count is taken, and later ones wait for the
-- deletion to commit.
SELECT id, app_id, name, priority, rate_limit, max_retries, retry_delay, smtp_config_id,
       is_paused, is_draining, settings, created_at, updated_at
FROM queues
WHERE app_id = @app_id AND id = @id AND deleted_at IS NULL
FOR UPDATE;

-- name: QueueList
-- Keyset pagination, newest first; the cursor is the last row's (created_at, id).
SELECT id, app_id, name, priority, rate_limit, max_retries, retry_delay, smtp_config_id,
       is_paused, is_draining, settings, created_at, updated_at
FROM queues
WHERE app_id = @app_id AND deleted_at IS NULL
  AND (@cursor_created_at::timestamptz IS NULL
       OR (created_at, id) < (@cursor_created_at, @cursor_id::uuid))
ORDER BY created_at DESC, id DESC
LIMIT @limit;

-- name: QueueUpdate
-- Writes every editable field (the caller merges the request into the
-- current row). Like QueueInsert, it updates nothing when smtp_config_id
-- names another app's config.
UPDATE queues
SET name = @name, priority = @priority, rate_limit = @rate_limit, max_retries = @max_retries,
    retry_delay = @retry_delay, smtp_config_id = @smtp_config_id::uuid, settings = @settings,
    updated_at = now()
WHERE app_id = @app_id AND id = @id AND deleted_at IS NULL
  AND (@smtp_config_id::uuid IS NULL
       OR EXISTS (SELECT 1 FROM smtp_configs WHERE id = @smtp_config_id::uuid AND app_id = @app_id))
RETURNING id, app_id, name, priority, rate_limit, max_retries, retry_delay, smtp_config_id,
          is_paused, is_draining, settings, created_at, updated_at;

-- name: QueueSetState
-- Pause, resume and drain. NULL leaves a flag as it is; updated_at moves only
-- when a flag changes, so repeating a call changes nothing.
UPDATE queues
SET is_paused   = coalesce(@is_paused::boolean, is_paused),
    is_draining = coalesce(@is_draining::boolean, is_draining),
    updated_at  = CASE
        WHEN (is_paused, is_draining) IS DISTINCT FROM
             (coalesce(@is_paused::boolean, is_paused), coalesce(@is_draining::boolean, is_draining))
        THEN now() ELSE updated_at END
WHERE app_id = @app_id AND id = @id AND deleted_at IS NULL
RETURNING id, app_id, name, priority, rate_limit, max_retries, retry_delay, smtp_config_id,
          is_paused, is_draining, settings, created_at, updated_at;

-- name: QueueDelete
-- Soft delete: emails keep pointing at the row, and the name is free again
-- (the unique index covers live queues only).
UPDATE queues SET deleted_at = now(), updated_at = now()
WHERE app_id = @app_id AND id = @id AND deleted_at IS NULL;

-- name: QueueHolds
-- What stops a queue from being deleted: emails still waiting or being sent,
-- and scheduled jobs that would create more. Uses emails (queue_id, status).
SELECT (SELECT count(*) FROM emails
        WHERE app_id = @app_id AND queue_id = @queue_id AND status IN ('queued', 'processing')) AS pending,
       (SELECT count(*) FROM scheduled_jobs
        WHERE app_id = @app_id AND queue_id = @queue_id) AS scheduled_jobs;

-- name: QueueCancelQueued
-- Cancels the queue's emails that no worker has taken yet. Their send jobs
-- are locked first (jobs before emails, the order EmailCancel uses too), so
-- none can start meanwhile (River's fetch skips locked jobs); an email whose
-- job is already running is being sent (processing) and is left to finish:
-- it is in SMTP's hands, and marking it cancelled could hide a message that
-- was delivered. Only emails whose job was locked here, or that have none,
-- are cancelled. Their jobs, when they run, find the email cancelled and do
-- nothing.
WITH locked AS (
    SELECT j.id, j.state
    FROM river_job j
    WHERE j.id IN (SELECT q.job_id FROM emails q
                   WHERE q.app_id = @app_id AND q.queue_id = @queue_id AND q.status = 'queued'
                     AND q.job_id IS NOT NULL)
    FOR UPDATE OF j
)
UPDATE emails e SET status = 'cancelled', updated_at = now()
WHERE e.app_id = @app_id AND e.queue_id = @queue_id AND e.status = 'queued'
  AND (e.job_id IS NULL OR e.job_id IN (SELECT id FROM locked WHERE state <> 'running'))
RETURNING e.id, e.created_at;

-- name: QueueCancelEvents
-- The "cancelled" events of the emails QueueCancelQueued moved, one per
-- email, written in the same transaction.
INSERT INTO email_events (id, created_at, email_id, app_id, event_type, event_data)
SELECT ev.id, ev.created_at, ev.email_id, @app_id, 'cancelled', @event_data
FROM unnest(@ids::uuid[], @created_ats::timestamptz[], @email_ids::uuid[]) AS ev (id, created_at, email_id);

-- name: QueueStats
-- Counts a queue's emails by state. These counts read every partition of
-- emails through the (queue_id, status) index: fine for a stats endpoint,
-- not something to put on a hot path. The first part only needs queue_id and
-- status, so it can be an index-only scan; only queued emails are read from
-- the heap, to tell due ones from those waiting for their schedule or a
-- retry.
WITH q AS (
    SELECT id FROM queues WHERE app_id = @app_id AND id = @queue_id AND deleted_at IS NULL
), by_status AS (
    SELECT count(*) FILTER (WHERE e.status = 'processing')
           -- queued with a running send job (see EmailGet); from the few
           -- running jobs, not the many queued emails
           + (SELECT count(*) FROM river_job j
              JOIN emails r ON r.id = (j.args ->> 'email_id')::uuid AND r.job_id = j.id
                           AND r.updated_at <= j.attempted_at
              JOIN q ON r.queue_id = q.id
              WHERE j.state = 'running' AND j.kind = 'send_email' AND r.status = 'queued') AS processing,
           count(*) FILTER (WHERE e.status IN ('sent', 'delivered'))     AS sent,
           count(*) FILTER (WHERE e.status = 'failed')                   AS failed,
           count(*) FILTER (WHERE e.status = 'cancelled')                AS cancelled
    FROM emails e JOIN q ON e.queue_id = q.id
), waiting AS (
    SELECT e.created_at, e.scheduled_at,
           e.scheduled_at > now() OR (j.state = 'retryable' AND j.scheduled_at > now()) AS later
    FROM emails e
    JOIN q ON e.queue_id = q.id
    LEFT JOIN river_job j ON j.id = e.job_id
    WHERE e.status = 'queued' AND (j.state IS DISTINCT FROM 'running' OR e.updated_at > j.attempted_at)
)
SELECT (SELECT count(*) FROM waiting WHERE later IS NOT TRUE)   AS pending,
       (SELECT count(*) FROM waiting WHERE later)               AS scheduled,
       by_status.processing, by_status.sent, by_status.failed, by_status.cancelled,
       (SELECT extract(epoch FROM now() - min(coalesce(scheduled_at, created_at)))::float8
        FROM waiting WHERE later IS NOT TRUE)                   AS oldest_pending_age_seconds
FROM by_status
WHERE EXISTS (SELECT 1 FROM q); -- no row for an unknown queue: not found, not zeros
