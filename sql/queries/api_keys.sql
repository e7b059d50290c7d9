-- API keys: stored as SHA-256 digests; the plaintext is shown once.

-- name: APIKeyInsert
INSERT INTO api_keys (id, app_id, name, key_prefix, key_hash, key_last4, scopes, rate_limit,
                      ip_allowlist, expires_at)
VALUES (@id, @app_id, @name, @key_prefix, @key_hash, @key_last4, @scopes, @rate_limit,
        @ip_allowlist, @expires_at)
RETURNING id, app_id, name, key_prefix, key_last4, scopes, rate_limit, ip_allowlist, last_used_at,
          expires_at, grace_expires_at, replaced_by, is_active, created_at, updated_at;

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

-- name: APIKeyGet
SELECT id, app_id, name, key_prefix, key_last4, scopes, rate_limit, ip_allowlist, last_used_at,
       expires_at, grace_expires_at, replaced_by, is_active, created_at, updated_at
FROM api_keys
WHERE app_id = @app_id AND id = @id;

-- name: APIKeyGetForUpdate
-- Locks the key for the rest of the transaction, so a revocation and a
-- rotation of the same key cannot interleave.
SELECT id, app_id, name, key_prefix, key_last4, scopes, rate_limit, ip_allowlist, last_used_at,
       expires_at, grace_expires_at, replaced_by, is_active, created_at, updated_at
FROM api_keys
WHERE app_id = @app_id AND id = @id
FOR UPDATE;

-- name: APIKeyList
-- Keyset pagination, newest first; the cursor is the last row's (created_at, id).
SELECT id, app_id, name, key_prefix, key_last4, scopes, rate_limit, ip_allowlist, last_used_at,
       expires_at, grace_expires_at, replaced_by, is_active, created_at, updated_at
FROM api_keys
WHERE app_id = @app_id
  AND (@cursor_created_at::timestamptz IS NULL
       OR (created_at, id) < (@cursor_created_at, @cursor_id::uuid))
ORDER BY created_at DESC, id DESC
LIMIT @limit;

-- name: APIKeyRetire
-- Ends a key: at once (is_active false, on revocation or a rotation without
-- grace) or at grace_expires_at, when rotation hands over to replaced_by.
UPDATE api_keys
SET is_active = @is_active,
    grace_expires_at = coalesce(@grace_expires_at::timestamptz, grace_expires_at),
    replaced_by = coalesce(@replaced_by::uuid, replaced_by),
    updated_at = now()
WHERE app_id = @app_id AND id = @id
RETURNING id, app_id, name, key_prefix, key_last4, scopes, rate_limit, ip_allowlist, last_used_at,
          expires_at, grace_expires_at, replaced_by, is_active, created_at, updated_at;

-- name: APIKeyCountUsableAdmin
-- How many of an app's keys other than @id can still call admin
-- operations: revoking the last of them would lock the app out.
SELECT count(*)
FROM api_keys
WHERE app_id = @app_id AND id <> @id AND is_active
  AND 'admin' = ANY (scopes)
  AND (expires_at IS NULL OR expires_at > now())
  AND (grace_expires_at IS NULL OR grace_expires_at > now());
