-- Reverses 0001_init. Destroys all data; for development only.
DROP TABLE IF EXISTS gdpr_requests, idempotency_keys, app_usage, app_reputation, audit_logs, users,
    tracking_links, scheduled_jobs, webhook_deliveries, suppression_list, email_events,
    emails, queues, api_keys, smtp_configs, apps CASCADE;
DROP FUNCTION IF EXISTS audit_logs_append_only();
DROP TYPE IF EXISTS actor_type, user_role, webhook_status, smtp_encryption,
    suppression_reason, email_event_type, email_status;
-- Scheduling
DROP TABLE IF EXISTS scheduled_job_runs CASCADE;
