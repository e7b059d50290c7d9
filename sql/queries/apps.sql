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
