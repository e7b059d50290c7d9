-- 0001_init: every table of Mail Queue's data model.
--
-- emails, email_events and audit_logs are range-partitioned by month on
-- created_at. Their ids are UUIDv7 and created_at is the timestamp inside the
-- id, so a lookup by id also knows its partition (DESIGN.md, decision 2).
-- Partitions themselves are created by the partitions package, not here.

CREATE TYPE email_status AS ENUM (
    'queued', 'processing', 'sent', 'delivered', 'bounced', 'failed',
    'cancelled', 'expired', 'uncertain'
);

CREATE TYPE email_event_type AS ENUM (
    'queued', 'processing', 'sent', 'delivered', 'deferred', 'failed',
    'uncertain', 'bounced', 'complained', 'opened', 'clicked', 'unsubscribed',
    'cancelled', 'expired', 'retried', 'suppressed'
);

CREATE TYPE suppression_reason AS ENUM (
    'hard_bounce', 'soft_bounce', 'complaint', 'unsubscribe', 'manual'
);

CREATE TYPE smtp_encryption AS ENUM ('tls', 'starttls', 'none');

CREATE TYPE webhook_status AS ENUM ('pending', 'delivered', 'failed');

CREATE TYPE user_role AS ENUM ('super_admin', 'admin', 'viewer');

CREATE TYPE actor_type AS ENUM ('user', 'app', 'system', 'admin');

CREATE TABLE apps (
    id                    uuid PRIMARY KEY,
    name                  varchar(200) NOT NULL,
    description           text,
    is_active             boolean NOT NULL DEFAULT true,
    sandbox_mode          boolean NOT NULL DEFAULT false,
    webhook_url           varchar(2048),
    -- AES-256-GCM ciphertext; webhook_secret_key_id names the key that made it.
    webhook_secret        bytea,
    webhook_secret_key_id varchar(32),
    daily_limit           integer CHECK (daily_limit > 0),
    monthly_limit         integer CHECK (monthly_limit > 0),
    settings              jsonb NOT NULL DEFAULT '{}',
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX apps_is_active_idx ON apps (is_active);
CREATE INDEX apps_created_idx ON apps (created_at DESC, id DESC); -- ListApps keyset

CREATE TABLE smtp_configs (
    id              uuid PRIMARY KEY,
    app_id          uuid NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    name            varchar(200) NOT NULL,
    host            varchar(253) NOT NULL,
    port            integer NOT NULL CHECK (port BETWEEN 1 AND 65535),
    username        varchar(320),
    -- AES-256-GCM ciphertext of the password; never returned by the API.
    password        bytea,
    password_key_id varchar(32),
    encryption      smtp_encryption NOT NULL DEFAULT 'starttls',
    pool_size       integer NOT NULL DEFAULT 5 CHECK (pool_size BETWEEN 1 AND 100),
    timeout_ms      integer NOT NULL DEFAULT 30000 CHECK (timeout_ms BETWEEN 100 AND 300000),
    is_active       boolean NOT NULL DEFAULT true,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
-- Names are unique per app (the API answers 409); the index also serves
-- every lookup by app.
CREATE UNIQUE INDEX smtp_configs_app_name_idx ON smtp_configs (app_id, name);

-- API keys are high-entropy tokens, so a SHA-256 digest with a unique index
-- is the right store (DESIGN.md, decision 4); bcrypt is for user passwords.
CREATE TABLE api_keys (
    id               uuid PRIMARY KEY,
    app_id           uuid NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    name             varchar(200) NOT NULL,
    key_prefix       varchar(8) NOT NULL CHECK (key_prefix IN ('mq_live_', 'mq_test_')),
    key_hash         bytea NOT NULL CHECK (length(key_hash) = 32),
    key_last4        varchar(4) NOT NULL,
    scopes           text[] NOT NULL DEFAULT '{email:send,email:read}',
    rate_limit       integer CHECK (rate_limit > 0),
    ip_allowlist     cidr[] NOT NULL DEFAULT '{}',
    last_used_at     timestamptz,
    expires_at       timestamptz,
    -- Set on the old key when it is rotated: it keeps working until then.
    grace_expires_at timestamptz,
    replaced_by      uuid REFERENCES api_keys (id),
    is_active        boolean NOT NULL DEFAULT true,
    created_at       timestamptz NOT NULL DEFAULT now(),
    updated_at       timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX api_keys_key_hash_idx ON api_keys (key_hash);
CREATE INDEX api_keys_app_id_idx ON api_keys (app_id);
CREATE INDEX api_keys_is_active_idx ON api_keys (is_active);

CREATE TABLE queues (
    id             uuid PRIMARY KEY,
    app_id         uuid NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    name           varchar(64) NOT NULL,
    priority       smallint NOT NULL DEFAULT 5 CHECK (priority BETWEEN 1 AND 10),
    rate_limit     integer CHECK (rate_limit > 0), -- emails per minute; NULL = unlimited
    max_retries    smallint NOT NULL DEFAULT 5 CHECK (max_retries BETWEEN 0 AND 25),
    retry_delay    integer[] NOT NULL DEFAULT '{30,120,600,3600}', -- seconds
    smtp_config_id uuid REFERENCES smtp_configs (id) ON DELETE SET NULL,
    is_paused      boolean NOT NULL DEFAULT false,
    is_draining    boolean NOT NULL DEFAULT false,
    settings       jsonb NOT NULL DEFAULT '{}',
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now(),
    -- Queues are soft-deleted: their emails keep pointing at them.
    deleted_at     timestamptz
);
CREATE UNIQUE INDEX queues_app_name_idx ON queues (app_id, name) WHERE deleted_at IS NULL;

-- No foreign keys point into the partitioned tables: a partition must be
-- droppable on its own schedule (retention), so the references from events,
-- links and deliveries to emails are kept by the code that writes them.
-- Nor do emails' own references have foreign keys: app_id is always the
-- authenticated app, apps are never deleted and queues only soft-deleted,
-- and every insert transaction holds its queue itself, once, FOR KEY SHARE
-- and live (store.queueHold), which is what orders it against a queue's
-- deletion. Keys would add a lookup and a row lock per email (two of them
-- cost ~11 µs an email, 110 ms of a 10,000-email batch's COPY).
CREATE TABLE emails (
    id                   uuid NOT NULL,
    created_at           timestamptz NOT NULL,
    app_id               uuid NOT NULL, -- apps (id)
    queue_id             uuid NOT NULL, -- queues (id)
    batch_id             uuid,
    idempotency_key      varchar(255),
    message_id           varchar(998) NOT NULL,
    from_address         varchar(320) NOT NULL,
    from_name            varchar(256),
    to_addresses         jsonb NOT NULL,
    cc                   jsonb,
    bcc                  jsonb,
    reply_to             text, -- an RFC 5322 mailbox; encoded names can be long
    subject              varchar(998) NOT NULL,
    -- Bodies are TOASTed, which compresses them; no application-level gzip.
    html_body            text,
    text_body            text,
    headers              jsonb,
    personalization_data jsonb,
    metadata             jsonb,
    status               email_status NOT NULL DEFAULT 'queued',
    -- Accepted from a sandbox app or with an mq_test_ key: never sent over SMTP.
    sandbox              boolean NOT NULL DEFAULT false,
    priority             smallint NOT NULL CHECK (priority BETWEEN 1 AND 10),
    retry_count          smallint NOT NULL DEFAULT 0,
    max_retries          smallint NOT NULL,
    last_error           text,
    -- Why a queued email is not moving (rate limited, circuit open, paused);
    -- cleared by every status change.
    waiting_reason       text,
    job_id               bigint, -- river_job.id of the current send attempt series
    scheduled_at         timestamptz,
    expires_at           timestamptz,
    sent_at              timestamptz,
    delivered_at         timestamptz,
    updated_at           timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (id, created_at)
) PARTITION BY RANGE (created_at);
CREATE INDEX emails_app_created_idx ON emails (app_id, created_at DESC, id DESC);
CREATE INDEX emails_app_status_idx ON emails (app_id, status, created_at DESC);
CREATE INDEX emails_queue_status_idx ON emails (queue_id, status);
CREATE INDEX emails_scheduled_at_idx ON emails (scheduled_at) WHERE scheduled_at IS NOT NULL;
CREATE INDEX emails_batch_id_idx ON emails (batch_id) WHERE batch_id IS NOT NULL;
-- No index on message_id: ours is <email id>@<domain>, so a bounce or reply that
-- quotes it finds the email by primary key, in one partition (the id is a UUIDv7).
CREATE INDEX emails_idempotency_key_idx ON emails (app_id, idempotency_key) WHERE idempotency_key IS NOT NULL;

CREATE TABLE email_events (
    id         uuid NOT NULL,
    created_at timestamptz NOT NULL,
    email_id   uuid NOT NULL,
    app_id     uuid NOT NULL,
    event_type email_event_type NOT NULL,
    event_data jsonb,
    PRIMARY KEY (id, created_at)
) PARTITION BY RANGE (created_at);
CREATE INDEX email_events_email_idx ON email_events (email_id, created_at);
CREATE INDEX email_events_app_type_idx ON email_events (app_id, event_type, created_at);

CREATE TABLE suppression_list (
    id              uuid PRIMARY KEY,
    app_id          uuid REFERENCES apps (id) ON DELETE CASCADE, -- NULL = global
    email_address   varchar(320) NOT NULL, -- stored lower-cased
    reason          suppression_reason NOT NULL,
    source_email_id uuid,
    expires_at      timestamptz, -- NULL = permanent
    created_at      timestamptz NOT NULL DEFAULT now(),
    UNIQUE NULLS NOT DISTINCT (app_id, email_address)
);
CREATE INDEX suppression_list_email_idx ON suppression_list (email_address);

CREATE TABLE webhook_deliveries (
    id              uuid PRIMARY KEY,
    app_id          uuid NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    email_id        uuid,
    event_type      varchar(64) NOT NULL,
    payload         jsonb NOT NULL,
    status          webhook_status NOT NULL DEFAULT 'pending',
    attempts        smallint NOT NULL DEFAULT 0,
    last_error      text,
    response_status integer,
    next_retry_at   timestamptz,
    delivered_at    timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX webhook_deliveries_app_idx ON webhook_deliveries (app_id, created_at DESC);
CREATE INDEX webhook_deliveries_status_idx ON webhook_deliveries (status);
CREATE INDEX webhook_deliveries_next_retry_idx ON webhook_deliveries (next_retry_at) WHERE status = 'pending';

CREATE TABLE scheduled_jobs (
    id              uuid PRIMARY KEY,
    app_id          uuid NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    queue_id        uuid NOT NULL REFERENCES queues (id) ON DELETE CASCADE,
    name            varchar(200) NOT NULL,
    cron_expression varchar(200) NOT NULL,
    timezone        varchar(64) NOT NULL DEFAULT 'UTC',
    email_template  jsonb NOT NULL,
    is_active       boolean NOT NULL DEFAULT true,
    last_run_at     timestamptz,
    next_run_at     timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX scheduled_jobs_next_run_idx ON scheduled_jobs (next_run_at) WHERE is_active;
CREATE INDEX scheduled_jobs_app_idx ON scheduled_jobs (app_id);

CREATE TABLE tracking_links (
    id              uuid PRIMARY KEY,
    email_id        uuid NOT NULL,
    app_id          uuid NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    short_code      varchar(12) NOT NULL,
    original_url    text NOT NULL,
    click_count     integer NOT NULL DEFAULT 0,
    last_clicked_at timestamptz,
    created_at      timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX tracking_links_short_code_idx ON tracking_links (short_code);
CREATE INDEX tracking_links_email_idx ON tracking_links (email_id);

CREATE TABLE users (
    id            uuid PRIMARY KEY,
    email         varchar(320) NOT NULL,
    password_hash varchar(100) NOT NULL, -- bcrypt, cost 12
    name          varchar(200),
    role          user_role NOT NULL DEFAULT 'viewer',
    mfa_secret    bytea, -- AES-256-GCM ciphertext
    mfa_key_id    varchar(32),
    last_login_at timestamptz,
    is_active     boolean NOT NULL DEFAULT true,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX users_email_idx ON users (lower(email));

CREATE TABLE audit_logs (
    id            uuid NOT NULL,
    created_at    timestamptz NOT NULL,
    actor_type    actor_type NOT NULL,
    actor_id      uuid,
    app_id        uuid, -- the tenant the action concerns, NULL for global actions
    action        varchar(100) NOT NULL,
    resource_type varchar(64) NOT NULL,
    resource_id   uuid,
    changes       jsonb,
    ip_address    inet,
    user_agent    varchar(512),
    request_id    varchar(64),
    PRIMARY KEY (id, created_at)
) PARTITION BY RANGE (created_at);
CREATE INDEX audit_logs_actor_idx ON audit_logs (actor_id, created_at DESC);
CREATE INDEX audit_logs_resource_idx ON audit_logs (resource_id, created_at DESC);
CREATE INDEX audit_logs_created_idx ON audit_logs (created_at DESC);

-- audit_logs is append-only: rows can be added and whole partitions dropped by
-- retention, never edited or removed one by one.
CREATE FUNCTION audit_logs_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit_logs is append-only: % refused', TG_OP
        USING ERRCODE = 'insufficient_privilege';
END;
$$;
CREATE TRIGGER audit_logs_append_only
    BEFORE UPDATE OR DELETE ON audit_logs
    FOR EACH ROW EXECUTE FUNCTION audit_logs_append_only();

CREATE TABLE app_reputation (
    id                 uuid PRIMARY KEY,
    app_id             uuid NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    bounce_rate_24h    numeric(6, 5) NOT NULL DEFAULT 0,
    complaint_rate_24h numeric(6, 5) NOT NULL DEFAULT 0,
    reputation_score   numeric(5, 2) NOT NULL DEFAULT 100 CHECK (reputation_score BETWEEN 0 AND 100),
    is_throttled       boolean NOT NULL DEFAULT false,
    throttle_reason    text,
    updated_at         timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX app_reputation_app_idx ON app_reputation (app_id);

-- Emails accepted per app per day and per month (UTC), for daily_limit and
-- monthly_limit. Only apps with a limit write here.
CREATE TABLE app_usage (
    app_id       uuid NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    period       varchar(5) NOT NULL CHECK (period IN ('day', 'month')),
    period_start date NOT NULL,
    count        bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (app_id, period, period_start)
);

-- Stripe-style idempotency (DESIGN.md, decision 3): the first response to a
-- key is stored with a hash of its request and replayed for 24 hours.
-- app_id is the nil UUID for admin requests.
CREATE TABLE idempotency_keys (
    app_id       uuid NOT NULL,
    key          varchar(255) NOT NULL,
    operation    varchar(64) NOT NULL,
    request_hash bytea NOT NULL,
    status_code  smallint NOT NULL,
    -- The response, AES-256-GCM sealed: it can hold secrets shown once
    -- (a new API key), which must not rest in plaintext.
    response        bytea NOT NULL,
    response_key_id varchar(32) NOT NULL,
    created_at   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (app_id, key)
);
CREATE INDEX idempotency_keys_created_idx ON idempotency_keys (created_at);

CREATE TABLE gdpr_requests (
    id           uuid PRIMARY KEY,
    app_id       uuid NOT NULL REFERENCES apps (id) ON DELETE CASCADE,
    email        varchar(320) NOT NULL,
    type         varchar(16) NOT NULL CHECK (type IN ('export', 'delete')),
    status       varchar(16) NOT NULL DEFAULT 'pending'
                 CHECK (status IN ('pending', 'processing', 'completed', 'failed')),
    result       jsonb,
    created_at   timestamptz NOT NULL DEFAULT now(),
    completed_at timestamptz
);
CREATE INDEX gdpr_requests_app_idx ON gdpr_requests (app_id, created_at DESC);

-- Scheduling: recurring jobs (scheduled_jobs above).
-- sandbox: the job was created with a test key or by a sandbox app, so the
-- emails it queues are sandboxed as the API would have sandboxed them.
ALTER TABLE scheduled_jobs ADD COLUMN sandbox boolean NOT NULL DEFAULT false;
-- One row per fired occurrence: the primary key is what makes each occurrence
-- queue its email exactly once, whichever scanner (leader) gets there, even
-- if the same occurrence is looked at again after a crash or leader change.
CREATE TABLE scheduled_job_runs (
    scheduled_job_id uuid NOT NULL REFERENCES scheduled_jobs (id) ON DELETE CASCADE,
    occurrence_at    timestamptz NOT NULL,
    email_id         uuid, -- NULL when the occurrence was skipped
    skipped_reason   text,
    created_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (scheduled_job_id, occurrence_at)
);
-- Suppression lists: listing an app's entries (plus the global ones) newest
-- first without sorting the whole table.
CREATE INDEX suppression_list_app_created_idx ON suppression_list (app_id, created_at DESC, id DESC);
