-- Email events: the history of every email, partitioned by month like emails.

-- name: EventInsert
INSERT INTO email_events (id, created_at, email_id, app_id, event_type, event_data)
VALUES (@id, @created_at, @email_id, @app_id, @event_type, @event_data);

-- name: EventList
-- Events are never older than their email, so created_at >= the email's
-- created_at skips every earlier partition.
SELECT id, created_at, email_id, event_type, event_data
FROM email_events
WHERE app_id = @app_id AND email_id = @email_id AND created_at >= @email_created_at
  AND (@cursor_created_at::timestamptz IS NULL
       OR (created_at, id) > (@cursor_created_at, @cursor_id::uuid))
ORDER BY created_at, id
LIMIT @limit;

-- name: EventCount
-- How many events of one type an email has; the send worker asks only
-- when it must (after an uncertain delivery), never per email.
SELECT count(*)
FROM email_events
WHERE email_id = @email_id AND created_at >= @email_created_at AND event_type = @event_type;

-- name: EventInsertForApp
-- Records an event of an app's email if that email still exists (it may
-- have been deleted since, e.g. by retention); reports nothing otherwise.
INSERT INTO email_events (id, created_at, email_id, app_id, event_type, event_data)
SELECT @id, @at, e.id, e.app_id, @event_type, @event_data
FROM emails e
WHERE e.id = @email_id AND e.created_at = @email_created_at AND e.app_id = @app_id;
