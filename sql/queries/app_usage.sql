-- App usage: emails accepted per app per UTC day and month, counted against
-- apps.daily_limit and apps.monthly_limit.

-- name: AppUsageTake
-- Adds @n to the app's counter for @period ('day' or 'month') starting
-- @period_start, only if the total stays within the app's limit for that
-- period. The limit is read in the same statement, and ON CONFLICT DO UPDATE
-- re-checks the WHERE against the latest committed count after waiting for
-- the row lock, so concurrent accepts can never overshoot.
-- No row: the app has no limit for this period (nothing is written).
-- A row with count NULL: refused. A row with count: taken; count is the new total.
WITH lim AS (
    SELECT CASE @period::text WHEN 'day' THEN daily_limit ELSE monthly_limit END AS lim
    FROM apps
    WHERE id = @app_id
), has_lim AS (
    SELECT lim FROM lim WHERE lim IS NOT NULL
), taken AS (
    INSERT INTO app_usage AS u (app_id, period, period_start, count)
    SELECT @app_id, @period::text, @period_start::date, @n::bigint
    FROM has_lim
    WHERE @n::bigint <= has_lim.lim
    ON CONFLICT (app_id, period, period_start) DO UPDATE
        SET count = u.count + EXCLUDED.count
        WHERE u.count + EXCLUDED.count <= (SELECT lim FROM has_lim)
    RETURNING u.count
)
SELECT has_lim.lim::bigint AS lim, (SELECT count FROM taken) AS count
FROM has_lim;

-- name: AppUsageLimited
-- Which of @app_ids have a daily or monthly limit: AppUsageTake writes
-- nothing for the others, so a group accept skips it for them. The limits
-- are read as AppUsageTake reads them, at the statement's start.
SELECT id
FROM apps
WHERE id = ANY(@app_ids::uuid[]) AND (daily_limit IS NOT NULL OR monthly_limit IS NOT NULL);
