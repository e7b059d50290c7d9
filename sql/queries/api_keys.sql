-- API keys: stored as SHA-256 digests; the plaintext is shown once.

-- name: APIKeyInsert
INSERT INTO api_keys (id, app_id, name, key_prefix, key_hash, key_last4, scopes, rate_limit,
                      ip_allowlist, expires_at)
VALUES (@id, @app_id, @name, @key_prefix, @key_hash, @key_last4, @scopes, @rate_limit,
        @ip_allowlist, @expires_at)
RETURNING id, app_id, name, key_prefix, key_last4, scopes, rate_limit, ip_allowlist, last_used_at,
          expires_at, grace_expires_at, is_active, created_at, updated_at;

-- name: APIKeyGetByHash
-- The authentication lookup: one indexed probe, with what the auth check
-- needs of the key's app.
SELECT k.id, k.app_id, k.key_prefix, k.scopes, k.rate_limit, k.ip_allowlist, k.expires_at,
       k.grace_expires_at, k.is_active, a.is_active AS app_is_active, a.sandbox_mode AS app_sandbox_mode
FROM api_keys k
JOIN apps a ON a.id = k.app_id
WHERE k.key_hash = @key_hash;

-- name: APIKeyTouch
-- Records use of many keys at once; called from a batcher, not per request.
UPDATE api_keys
SET last_used_at = greatest(last_used_at, t.used_at)
FROM unnest(@ids::uuid[], @used_at::timestamptz[]) AS t(id, used_at)
WHERE api_keys.id = t.id;
