-- Operator accounts, browser sessions and login throttling for the pages,
-- plus the indexes the operator pages read by (date ranges, live charts,
-- audit by subject). Same on both engines: times are BIGINT ms.

CREATE TABLE operators (
    email         TEXT PRIMARY KEY,
    password_hash TEXT NOT NULL,
    role          TEXT NOT NULL CHECK (role IN ('admin', 'viewer')),
    active        BOOLEAN NOT NULL DEFAULT TRUE,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL
);

-- A browser session. `id` is the SHA-256 of the cookie's random token, so a
-- copy of this table opens no session.
CREATE TABLE web_sessions (
    id         TEXT PRIMARY KEY,
    kind       TEXT NOT NULL CHECK (kind IN ('operator', 'customer')),
    subject    TEXT NOT NULL,
    role       TEXT NOT NULL CHECK (role IN ('admin', 'viewer', 'customer')),
    key_prefix TEXT,
    csrf       TEXT NOT NULL,
    created_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL
);
CREATE INDEX web_sessions_expires ON web_sessions (expires_at);

-- Failed logins per login name, shared by every replica.
CREATE TABLE login_failures (
    login_key       TEXT PRIMARY KEY,
    failures        BIGINT NOT NULL,
    locked_until    BIGINT,
    last_failure_at BIGINT NOT NULL
);

CREATE INDEX topups_created ON topups (created_at);
CREATE INDEX topups_completed ON topups (completed_at) WHERE completed_at IS NOT NULL;
CREATE INDEX exchanges_started ON exchanges (started_at);
CREATE INDEX audit_log_subject ON audit_log (subject, id);
