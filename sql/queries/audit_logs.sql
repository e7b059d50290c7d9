-- Audit logs: append-only record of every mutation (a trigger refuses
-- UPDATE and DELETE), partitioned by month.

-- name: AuditInsert
INSERT INTO audit_logs (id, created_at, actor_type, actor_id, app_id, action, resource_type,
                        resource_id, changes, ip_address, user_agent, request_id)
VALUES (@id, @created_at, @actor_type, @actor_id, @app_id, @action, @resource_type,
        @resource_id, @changes, @ip_address, @user_agent, @request_id);

-- name: AuditList
-- Newest first, keyset-paginated on (created_at, id).
SELECT id, created_at, actor_type, actor_id, app_id, action, resource_type, resource_id, changes,
       host(ip_address) AS ip_address, user_agent, request_id
FROM audit_logs
WHERE (@actor_id::uuid IS NULL OR actor_id = @actor_id)
  AND (@app_id::uuid IS NULL OR app_id = @app_id)
  AND (@resource_id::uuid IS NULL OR resource_id = @resource_id)
  AND (@action::text IS NULL OR action = @action)
  AND (@since::timestamptz IS NULL OR created_at >= @since)
  AND (@cursor_created_at::timestamptz IS NULL
       OR (created_at, id) < (@cursor_created_at, @cursor_id::uuid))
ORDER BY created_at DESC, id DESC
LIMIT @limit;
