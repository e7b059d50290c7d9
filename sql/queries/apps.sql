-- Apps: the tenants. Every other table hangs off apps.id.

-- name: AppInsert
INSERT INTO apps (id, name, description, sandbox_mode, webhook_url, daily_limit, monthly_limit, settings)
VALUES (@id, @name, @description, @sandbox_mode, @webhook_url, @daily_limit, @monthly_limit, @settings)
RETURNING id, name, description, is_active, sandbox_mode, webhook_url, daily_limit, monthly_limit,
          settings, created_at, updated_at;

-- name: AppGet
SELECT id, name, description, is_active, sandbox_mode, webhook_url, daily_limit, monthly_limit,
       settings, created_at, updated_at
FROM apps
WHERE id = @id;

-- name: AppGetForUpdate
-- Locks the row so a read-modify-write (UpdateApp) cannot lose a concurrent change.
SELECT id, name, description, is_active, sandbox_mode, webhook_url, daily_limit, monthly_limit,
       settings, created_at, updated_at
FROM apps
WHERE id = @id
FOR UPDATE;

-- name: AppUpdate
-- Writes every editable field: the caller has merged the request into the
-- current row, read with AppGetForUpdate in the same transaction.
UPDATE apps
SET name = @name, description = @description, is_active = @is_active,
    sandbox_mode = @sandbox_mode, webhook_url = @webhook_url, daily_limit = @daily_limit,
    monthly_limit = @monthly_limit, settings = @settings, updated_at = now()
WHERE id = @id
RETURNING id, name, description, is_active, sandbox_mode, webhook_url, daily_limit, monthly_limit,
          settings, created_at, updated_at;

-- name: AppList
-- Newest first, keyset-paginated on (created_at, id).
SELECT id, name, description, is_active, sandbox_mode, webhook_url, daily_limit, monthly_limit,
       settings, created_at, updated_at
FROM apps
WHERE @cursor_created_at::timestamptz IS NULL
   OR (created_at, id) < (@cursor_created_at, @cursor_id::uuid)
ORDER BY created_at DESC, id DESC
LIMIT @limit;
