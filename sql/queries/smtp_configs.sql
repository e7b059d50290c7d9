-- SMTP configs: an app's relays. The password is AES-256-GCM ciphertext
-- (secret.Box) with the id of the key that sealed it; it is read only to
-- send or test, and never returned by the API.

-- name: SMTPConfigInsert
INSERT INTO smtp_configs (id, app_id, name, host, port, username, password, password_key_id,
                          encryption, pool_size, timeout_ms)
VALUES (@id, @app_id, @name, @host, @port, @username, @password, @password_key_id,
        @encryption::smtp_encryption, @pool_size, @timeout_ms)
RETURNING id, app_id, name, host, port, username, password, password_key_id,
          encryption::text AS encryption, pool_size, timeout_ms, is_active, created_at, updated_at;

-- name: SMTPConfigGet
SELECT id, app_id, name, host, port, username, password, password_key_id,
       encryption::text AS encryption, pool_size, timeout_ms, is_active, created_at, updated_at
FROM smtp_configs
WHERE app_id = @app_id AND id = @id;

-- name: SMTPConfigLock
-- Reads a config for update or delete. FOR UPDATE conflicts with the
-- FOR KEY SHARE lock a queue insert or update takes on the config it names,
-- so a delete waits for such a write and then sees its queue.
SELECT id, app_id, name, host, port, username, password, password_key_id,
       encryption::text AS encryption, pool_size, timeout_ms, is_active, created_at, updated_at
FROM smtp_configs
WHERE app_id = @app_id AND id = @id
FOR UPDATE;

-- name: SMTPConfigList
-- Keyset pagination, newest first; the cursor is the last row's (created_at, id).
SELECT id, app_id, name, host, port, username, password, password_key_id,
       encryption::text AS encryption, pool_size, timeout_ms, is_active, created_at, updated_at
FROM smtp_configs
WHERE app_id = @app_id
  AND (@cursor_created_at::timestamptz IS NULL
       OR (created_at, id) < (@cursor_created_at, @cursor_id::uuid))
ORDER BY created_at DESC, id DESC
LIMIT @limit;

-- name: SMTPConfigUpdate
-- Writes every mutable column: the caller read the row with SMTPConfigLock
-- and applied the request's changes to it.
UPDATE smtp_configs
SET name = @name, host = @host, port = @port, username = @username, password = @password,
    password_key_id = @password_key_id, encryption = @encryption::smtp_encryption,
    pool_size = @pool_size, timeout_ms = @timeout_ms, is_active = @is_active, updated_at = now()
WHERE app_id = @app_id AND id = @id
RETURNING id, app_id, name, host, port, username, password, password_key_id,
          encryption::text AS encryption, pool_size, timeout_ms, is_active, created_at, updated_at;

-- name: SMTPConfigDelete
DELETE FROM smtp_configs WHERE app_id = @app_id AND id = @id;

-- name: SMTPConfigQueueNames
-- The live queues sending through a config; deleting it would silently move
-- them to the default server (ON DELETE SET NULL).
SELECT name
FROM queues
WHERE app_id = @app_id AND smtp_config_id = @id AND deleted_at IS NULL
ORDER BY name;
