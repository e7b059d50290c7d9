-- Idempotency keys (DESIGN.md, decision 3).

-- name: IdempotencyLock
-- Serialises requests with the same key for the length of one transaction;
-- false means another request with this key is in flight (answer 409).
SELECT pg_try_advisory_xact_lock(hashtextextended(@app_id::text || ':' || @key, 0));

-- name: IdempotencyGet
SELECT operation, request_hash, status_code, response, response_key_id
FROM idempotency_keys
WHERE app_id = @app_id AND key = @key AND created_at > now() - interval '24 hours';

-- name: IdempotencyInsert
-- An expired row for the same key is replaced: keys are reusable after 24h.
INSERT INTO idempotency_keys (app_id, key, operation, request_hash, status_code, response, response_key_id)
VALUES (@app_id, @key, @operation, @request_hash, @status_code, @response, @response_key_id)
ON CONFLICT (app_id, key) DO UPDATE
SET operation = excluded.operation, request_hash = excluded.request_hash,
    status_code = excluded.status_code, response = excluded.response,
    response_key_id = excluded.response_key_id, created_at = now();

-- name: IdempotencyDeleteOld
DELETE FROM idempotency_keys WHERE created_at < now() - interval '24 hours';
