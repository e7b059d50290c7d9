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
