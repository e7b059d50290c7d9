-- Scheduled jobs: recurring emails, queued at every tick of a cron
-- expression evaluated in an IANA time zone. next_run_at (UTC) is the next
-- occurrence; the due scan (jobs/schedule.go) fires it and moves it on.

-- name: ScheduledJobInsert
-- Inserts nothing when queue_id is not one of the app's live queues.
WITH ins AS (
    INSERT INTO scheduled_jobs (id, app_id, queue_id, name, cron_expression, timezone, email_template,
                                is_active, sandbox, next_run_at, created_at, updated_at)
    SELECT @id, @app_id, q.id, @name, @cron_expression, @timezone, @email_template,
           @is_active, @sandbox, @next_run_at, @now, @now
    FROM queues q
    WHERE q.id = @queue_id AND q.app_id = @app_id AND q.deleted_at IS NULL
    RETURNING *
)
SELECT ins.id, ins.app_id, ins.queue_id, q.name AS queue_name, ins.name, ins.cron_expression,
       ins.timezone, ins.email_template, ins.is_active, ins.sandbox, ins.last_run_at, ins.next_run_at,
       ins.created_at, ins.updated_at
FROM ins JOIN queues q ON q.id = ins.queue_id;

-- name: ScheduledJobGet
SELECT j.id, j.app_id, j.queue_id, q.name AS queue_name, j.name, j.cron_expression, j.timezone,
       j.email_template, j.is_active, j.sandbox, j.last_run_at, j.next_run_at, j.created_at, j.updated_at
FROM scheduled_jobs j
JOIN queues q ON q.id = j.queue_id
WHERE j.app_id = @app_id AND j.id = @id;

-- name: ScheduledJobLock
-- Reads an app's job and locks it for the rest of the transaction: an update
-- and the due scan apply one after the other.
SELECT j.id, j.app_id, j.queue_id, q.name AS queue_name, j.name, j.cron_expression, j.timezone,
       j.email_template, j.is_active, j.sandbox, j.last_run_at, j.next_run_at, j.created_at, j.updated_at
FROM scheduled_jobs j
JOIN queues q ON q.id = j.queue_id
WHERE j.app_id = @app_id AND j.id = @id
FOR NO KEY UPDATE OF j;

-- name: ScheduledJobList
-- Keyset pagination, newest first; the cursor is the last row's (created_at, id).
SELECT j.id, j.app_id, j.queue_id, q.name AS queue_name, j.name, j.cron_expression, j.timezone,
       j.email_template, j.is_active, j.sandbox, j.last_run_at, j.next_run_at, j.created_at, j.updated_at
FROM scheduled_jobs j
JOIN queues q ON q.id = j.queue_id
WHERE j.app_id = @app_id
  AND (@cursor_created_at::timestamptz IS NULL
       OR (j.created_at, j.id) < (@cursor_created_at, @cursor_id::uuid))
ORDER BY j.created_at DESC, j.id DESC
LIMIT @limit;

-- name: ScheduledJobUpdate
-- Writes every editable field (the caller merges the request into the
-- locked row). Updates nothing when queue_id is not one of the app's live
-- queues.
UPDATE scheduled_jobs j
SET name = @name, queue_id = @queue_id, cron_expression = @cron_expression, timezone = @timezone,
    email_template = @email_template, is_active = @is_active, next_run_at = @next_run_at,
    updated_at = @now
WHERE j.app_id = @app_id AND j.id = @id
  AND EXISTS (SELECT 1 FROM queues q WHERE q.id = @queue_id AND q.app_id = @app_id AND q.deleted_at IS NULL);

-- name: ScheduledJobDelete
DELETE FROM scheduled_jobs WHERE app_id = @app_id AND id = @id;

-- name: ScheduledJobClaimDue
-- The due scan's claim: one due job, locked until the transaction that
-- fires it commits. SKIP LOCKED lets concurrent scanners pass each other;
-- once the claim commits, next_run_at is in the future and the job is no
-- longer due. No app filter: the scan serves every app.
SELECT j.id, j.app_id, j.queue_id, q.name AS queue_name, j.name, j.cron_expression, j.timezone,
       j.email_template, j.is_active, j.sandbox, j.last_run_at, j.next_run_at, j.created_at, j.updated_at
FROM scheduled_jobs j
JOIN queues q ON q.id = j.queue_id
WHERE j.is_active AND j.next_run_at <= @now
  AND (@id::uuid IS NULL OR j.id = @id)
  AND (@occurrence_at::timestamptz IS NULL OR j.next_run_at = @occurrence_at)
ORDER BY j.next_run_at
LIMIT 1
FOR NO KEY UPDATE OF j SKIP LOCKED;

-- name: ScheduledJobAdvance
-- Records a fired occurrence and moves the job to its next one (NULL, with
-- is_active false, when the schedule no longer yields one).
UPDATE scheduled_jobs
SET last_run_at = @last_run_at, next_run_at = @next_run_at, is_active = is_active AND @next_run_at::timestamptz IS NOT NULL,
    updated_at = @now
WHERE id = @id;

-- name: ScheduledJobRunInsert
-- Claims an occurrence. Inserts nothing when the occurrence already fired.
INSERT INTO scheduled_job_runs (scheduled_job_id, occurrence_at)
VALUES (@scheduled_job_id, @occurrence_at)
ON CONFLICT (scheduled_job_id, occurrence_at) DO NOTHING;

-- name: ScheduledJobRunPrune
-- Keeps a job's run history short: occurrences far behind next_run_at can
-- never be looked at again.
DELETE FROM scheduled_job_runs
WHERE scheduled_job_id = @scheduled_job_id AND occurrence_at < @before;

-- name: ScheduledJobRunFinish
-- Records what a claimed occurrence did: the email it queued, or why it
-- queued none.
UPDATE scheduled_job_runs SET email_id = @email_id, skipped_reason = @skipped_reason
WHERE scheduled_job_id = @scheduled_job_id AND occurrence_at = @occurrence_at;
