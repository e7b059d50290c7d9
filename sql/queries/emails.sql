-- Emails: partitioned by month on created_at. Every statement that finds an
-- email by id also names its created_at (the timestamp inside the UUIDv7 id),
-- so PostgreSQL touches exactly one partition.

-- name: EmailInsert
-- The email and its first event in one statement (one round trip): "queued",
-- or "suppressed" for an email stored cancelled because every recipient is
-- on a suppression list.
WITH email AS (
    INSERT INTO emails (id, created_at, app_id, queue_id, batch_id, idempotency_key, message_id,
                        from_address, from_name, to_addresses, cc, bcc, reply_to, subject, html_body,
                        text_body, headers, personalization_data, metadata, status, sandbox, priority,
                        max_retries, job_id, scheduled_at, expires_at, updated_at)
    VALUES (@id, @created_at, @app_id, @queue_id, @batch_id, @idempotency_key, @message_id,
            @from_address, @from_name, @to_addresses, @cc, @bcc, @reply_to, @subject, @html_body,
            @text_body, @headers, @personalization_data, @metadata, @status, @sandbox, @priority,
            @max_retries, @job_id, @scheduled_at, @expires_at, @created_at)
    RETURNING id, app_id, created_at
)
INSERT INTO email_events (id, created_at, email_id, app_id, event_type, event_data)
SELECT @event_id, created_at, id, app_id, @event_type, @event_data FROM email;

-- name: EmailGet
-- "processing" is not written by the worker: an email is processing while
-- it is queued, its send job is running (River's state), and the row has
-- not changed since that attempt began (once the worker records a deferral
-- or a wait, it is queued again even before River files the job away).
-- This saves a status write and an event per email (jobs/send.go).
SELECT e.id, e.created_at, e.app_id, e.queue_id, q.name AS queue_name, e.batch_id, e.message_id,
       e.from_address, e.from_name, e.to_addresses, e.cc, e.bcc, e.reply_to, e.subject,
       e.html_body, e.text_body, e.headers, e.metadata,
       CASE WHEN e.status = 'queued' AND j.state = 'running' AND e.updated_at <= j.attempted_at
            THEN 'processing'::email_status ELSE e.status END AS status,
       e.sandbox, e.priority, e.retry_count,
       e.max_retries, e.last_error, e.waiting_reason, e.job_id, e.scheduled_at, e.expires_at, e.sent_at,
       e.delivered_at, e.updated_at,
       j.scheduled_at AS job_scheduled_at, j.attempt AS job_attempt
FROM emails e
JOIN queues q ON q.id = e.queue_id
LEFT JOIN river_job j ON j.id = e.job_id AND j.state IN ('available', 'scheduled', 'retryable', 'running', 'pending')
WHERE e.app_id = @app_id AND e.id = @id AND e.created_at = @created_at;

-- name: EmailGetForSend
-- The workers' read, for many emails at once (one per waiting worker): each
-- email plus what sending it needs of its queue and app, and whether any of
-- its recipients is on a suppression list (then the worker asks which). No
-- app filter: each job was created for its email by the API.
SELECT e.id, e.created_at, e.app_id, e.queue_id, q.name AS queue_name, e.batch_id, e.message_id,
       e.from_address, e.from_name, e.to_addresses, e.cc, e.bcc, e.reply_to, e.subject,
       e.html_body, e.text_body, e.headers, e.metadata, e.status, e.sandbox, e.priority, e.retry_count,
       e.max_retries, e.last_error, e.waiting_reason, e.job_id, e.scheduled_at, e.expires_at, e.sent_at,
       e.delivered_at, e.updated_at,
       NULL::timestamptz AS job_scheduled_at, NULL::smallint AS job_attempt,
       q.smtp_config_id AS queue_smtp_config_id, q.is_paused AS queue_is_paused,
       q.settings AS queue_settings, a.is_active AS app_is_active,
       -- Send limits in emails/minute (NULL = none), for the rate limiter.
       q.rate_limit AS queue_rate_limit, (a.settings ->> 'rate_limit')::numeric::integer AS app_rate_limit,
       EXISTS (
           SELECT 1 FROM suppression_list s
           WHERE s.email_address IN (
                   SELECT lower(btrim(r ->> 'email'))
                   FROM jsonb_array_elements(e.to_addresses || coalesce(e.cc, '[]') || coalesce(e.bcc, '[]')) AS r)
             AND (s.app_id = e.app_id OR s.app_id IS NULL)
             AND (s.expires_at IS NULL OR s.expires_at > now())
       ) AS any_suppressed
FROM unnest(@ids::uuid[], @created_ats::timestamptz[]) AS k (id, created_at)
-- One key lookup per email, in the one partition its created_at names (the
-- LIMIT keeps the planner from turning it into a join over every partition).
CROSS JOIN LATERAL (SELECT * FROM emails WHERE id = k.id AND created_at = k.created_at LIMIT 1) AS e
JOIN queues q ON q.id = e.queue_id
JOIN apps a ON a.id = e.app_id;

-- name: EmailList
-- Keyset pagination, newest first; the cursor is the last row's (created_at, id).
SELECT e.id, e.created_at, e.app_id, e.queue_id, q.name AS queue_name, e.batch_id, e.message_id,
       e.from_address, e.from_name, e.to_addresses, e.cc, e.bcc, e.reply_to, e.subject,
       NULL::text AS html_body, NULL::text AS text_body, e.headers, e.metadata,
       CASE WHEN e.status = 'queued' AND j.id IS NOT NULL THEN 'processing'::email_status
            ELSE e.status END AS status,
       e.sandbox, e.priority, e.retry_count, e.max_retries, e.last_error, e.waiting_reason, e.job_id, e.scheduled_at,
       e.expires_at, e.sent_at, e.delivered_at, e.updated_at,
       NULL::timestamptz AS job_scheduled_at, NULL::smallint AS job_attempt
FROM emails e
JOIN queues q ON q.id = e.queue_id
-- Running send jobs make queued emails "processing" (see EmailGet).
LEFT JOIN river_job j ON j.id = e.job_id AND j.state = 'running' AND e.status = 'queued'
                     AND e.updated_at <= j.attempted_at
WHERE e.app_id = @app_id
  -- processing is stored as queued (a running job) or, in older rows, as processing.
  AND (@status::email_status IS NULL
       OR e.status = CASE WHEN @status = 'processing' THEN 'queued'::email_status ELSE @status END
       OR (@status = 'processing' AND e.status = 'processing'))
  AND (@status::email_status IS NULL OR @status NOT IN ('queued', 'processing')
       OR (@status = 'queued') = (j.id IS NULL) OR e.status = 'processing')
  AND (@queue_name::text IS NULL OR q.name = @queue_name)
  AND (@batch_id::uuid IS NULL OR e.batch_id = @batch_id)
  AND (@since::timestamptz IS NULL OR e.created_at >= @since)
  AND (@cursor_created_at::timestamptz IS NULL
       OR (e.created_at, e.id) < (@cursor_created_at, @cursor_id::uuid))
ORDER BY e.created_at DESC, e.id DESC
LIMIT @limit;

-- name: EmailTransition
-- Moves an email to a new status and records the event in one statement. The
-- from_statuses guard makes late or duplicate workers harmless: an email that
-- was cancelled or already sent is not touched, and no event is written.
WITH moved AS (
    UPDATE emails
    SET status       = @status,
        last_error   = CASE WHEN @set_last_error::boolean THEN @last_error ELSE last_error END,
        retry_count  = coalesce(@retry_count, retry_count),
        sent_at      = coalesce(@sent_at, sent_at),
        delivered_at = coalesce(@delivered_at, delivered_at),
        waiting_reason = NULL,
        updated_at   = @at
    WHERE id = @id AND created_at = @created_at AND status = ANY(@from_statuses::email_status[])
    RETURNING id, app_id
)
INSERT INTO email_events (id, created_at, email_id, app_id, event_type, event_data)
SELECT @event_id, @at, moved.id, moved.app_id, @event_type, @event_data
FROM moved;

-- name: EmailTransitionMany
-- EmailTransition for many emails in one statement (the send workers' group
-- commit). Each row carries its own guard, given as comma-separated
-- statuses; the ords of the rows that moved come back. One email must not
-- appear twice.
WITH t AS (
    SELECT *
    FROM unnest(@ords::int[], @ids::uuid[], @created_ats::timestamptz[], @from_statuses::text[],
                @statuses::email_status[], @set_last_errors::boolean[], @last_errors::text[],
                @retry_counts::smallint[], @sent_ats::timestamptz[], @delivered_ats::timestamptz[],
                @ats::timestamptz[], @event_ids::uuid[], @event_types::email_event_type[], @event_datas::jsonb[])
        AS t (ord, id, created_at, from_statuses, status, set_last_error, last_error, retry_count, sent_at,
              delivered_at, at, event_id, event_type, event_data)
), moved AS (
    UPDATE emails e
    SET status       = t.status,
        last_error   = CASE WHEN t.set_last_error THEN t.last_error ELSE e.last_error END,
        retry_count  = coalesce(t.retry_count, e.retry_count),
        sent_at      = coalesce(t.sent_at, e.sent_at),
        delivered_at = coalesce(t.delivered_at, e.delivered_at),
        waiting_reason = NULL,
        updated_at   = t.at
    FROM t
    WHERE e.id = t.id AND e.created_at = t.created_at
      AND e.status = ANY(string_to_array(t.from_statuses, ',')::email_status[])
    RETURNING t.ord, t.event_id, t.at, e.id, e.app_id, t.event_type, t.event_data
), events AS (
    INSERT INTO email_events (id, created_at, email_id, app_id, event_type, event_data)
    SELECT event_id, at, id, app_id, event_type, event_data FROM moved
)
SELECT ord FROM moved;

-- name: EmailSetWaiting
-- Records why a queued email is waiting. Writes nothing when the reason is
-- unchanged, so a job snoozed again and again costs one read.
UPDATE emails
SET waiting_reason = @reason, updated_at = now()
WHERE id = @id AND created_at = @created_at AND status = 'queued'
  AND waiting_reason IS DISTINCT FROM @reason;

-- name: EmailSetRecipients
-- Replaces the recipients of an email not sent yet (some were found
-- suppressed just before sending) and records why, in one statement.
WITH changed AS (
    UPDATE emails
    SET to_addresses = @to_addresses, cc = @cc, bcc = @bcc, updated_at = @at
    WHERE id = @id AND created_at = @created_at AND status IN ('queued', 'processing')
    RETURNING id, app_id
)
INSERT INTO email_events (id, created_at, email_id, app_id, event_type, event_data)
SELECT @event_id, @at, changed.id, changed.app_id, @event_type, @event_data
FROM changed;
