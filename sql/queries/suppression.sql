-- Suppression list: addresses not to send to, per app (app_id set) or for
-- every app (app_id NULL). Addresses are stored lower-cased. An entry whose
-- expires_at has passed no longer suppresses and is replaced by the next
-- insert for its address.

-- name: SuppressionInsertMany
-- Adds entries, skipping addresses the list already holds (unless that
-- entry has expired, in which case it is replaced). Returns the rows written.
INSERT INTO suppression_list AS s (id, app_id, email_address, reason, source_email_id, expires_at, created_at)
SELECT u.id, @app_id::uuid, u.email_address, u.reason, @source_email_id::uuid, u.expires_at, @at
FROM unnest(@ids::uuid[], @emails::text[], @reasons::suppression_reason[], @expires::timestamptz[])
     AS u (id, email_address, reason, expires_at)
ON CONFLICT (app_id, email_address) DO UPDATE
SET id = EXCLUDED.id, reason = EXCLUDED.reason, source_email_id = EXCLUDED.source_email_id,
    expires_at = EXCLUDED.expires_at, created_at = EXCLUDED.created_at
WHERE s.expires_at IS NOT NULL AND s.expires_at <= @at
RETURNING id, app_id, email_address, reason, source_email_id, expires_at, created_at;

-- name: SuppressionRecord
-- The system's write (bounce, complaint, unsubscribe): adds the entry, or
-- strengthens an existing one, never weakens it. A permanent entry stays as
-- it is; an expiring one is replaced by a permanent or longer-lived one.
INSERT INTO suppression_list AS s (id, app_id, email_address, reason, source_email_id, expires_at, created_at)
VALUES (@id, @app_id, @email_address, @reason, @source_email_id, @expires_at, @at)
ON CONFLICT (app_id, email_address) DO UPDATE
SET id = EXCLUDED.id, reason = EXCLUDED.reason, source_email_id = EXCLUDED.source_email_id,
    expires_at = EXCLUDED.expires_at, created_at = EXCLUDED.created_at
WHERE s.expires_at IS NOT NULL
  AND (EXCLUDED.expires_at IS NULL OR EXCLUDED.expires_at > s.expires_at)
RETURNING id;

-- name: SuppressionCheck
-- Which of a set of addresses are suppressed for an app, by its own list or
-- the global one. One index probe per address (suppression_list_email_idx):
-- the cost depends on the number of recipients, not the size of the list.
SELECT email_address, reason, app_id IS NULL AS global
FROM suppression_list
WHERE email_address = ANY(@emails::text[])
  AND (app_id = @app_id OR app_id IS NULL)
  AND (expires_at IS NULL OR expires_at > now())
ORDER BY email_address, app_id NULLS LAST;

-- name: SuppressionList
-- The app's entries and the global ones, newest first; keyset pagination on
-- (created_at, id).
SELECT id, app_id, email_address, reason, source_email_id, expires_at, created_at
FROM suppression_list
WHERE (app_id = @app_id OR app_id IS NULL)
  AND (expires_at IS NULL OR expires_at > now())
  AND (@reason::suppression_reason IS NULL OR reason = @reason)
  AND (@cursor_created_at::timestamptz IS NULL
       OR (created_at, id) < (@cursor_created_at, @cursor_id::uuid))
ORDER BY created_at DESC, id DESC
LIMIT @limit;

-- name: SuppressionExport
-- Every entry visible to an app, oldest first, for streaming.
SELECT id, app_id, email_address, reason, source_email_id, expires_at, created_at
FROM suppression_list
WHERE (app_id = @app_id OR app_id IS NULL)
  AND (expires_at IS NULL OR expires_at > now())
ORDER BY created_at, id;

-- name: SuppressionDelete
-- Removes an app's entry, or the global one when app_id is NULL.
DELETE FROM suppression_list
WHERE app_id IS NOT DISTINCT FROM @app_id::uuid AND email_address = @email_address
RETURNING id, app_id, email_address, reason, source_email_id, expires_at, created_at;
