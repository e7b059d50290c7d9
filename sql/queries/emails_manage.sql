-- Cancelling and retrying single emails (DELETE /v1/emails/{id},
-- POST /v1/emails/{id}/retry).

-- name: EmailRetry
-- Queues a dead email again with a new send job: a fresh attempt series
-- (retry_count 0, no last_error; the earlier errors stay in the events). An
-- expires_at already past is dropped, or the new job would expire it at
-- once. The status guard makes a concurrent retry or cancel harmless.
WITH moved AS (
    UPDATE emails
    SET status         = 'queued',
        retry_count    = 0,
        last_error     = NULL,
        waiting_reason = NULL,
        sent_at        = NULL,
        expires_at     = CASE WHEN expires_at <= @at THEN NULL ELSE expires_at END,
        job_id         = @job_id,
        updated_at     = @at
    WHERE app_id = @app_id AND id = @id AND created_at = @created_at
      AND status = ANY(@from_statuses::email_status[])
    RETURNING id, app_id
)
INSERT INTO email_events (id, created_at, email_id, app_id, event_type, event_data)
SELECT @event_id, @at, moved.id, moved.app_id, 'retried', @event_data
FROM moved;

-- name: EmailLock
-- Reads an app's email and locks it for the rest of the transaction, so a
-- cancel or retry and a worker's status change apply one after the other.
SELECT e.id, e.created_at, e.app_id, e.queue_id, e.status, e.priority, e.max_retries,
       e.scheduled_at, e.expires_at, e.last_error, e.job_id
FROM emails e
WHERE e.app_id = @app_id AND e.id = @id AND e.created_at = @created_at
FOR NO KEY UPDATE;

-- name: SendJobLockState
-- Locks an email's send job and reads its state. A locked job cannot start
-- running (River's fetch skips locked jobs), and one already running is
-- seen as such: the email is then being sent (processing).
SELECT state::text FROM river_job WHERE id = @id FOR UPDATE;

-- name: EmailQueueRetryDelay
-- The retry schedule of an email's queue, even if the queue was deleted
-- since: a retried email goes back into the queue it was accepted in.
SELECT retry_delay FROM queues WHERE id = @id;
