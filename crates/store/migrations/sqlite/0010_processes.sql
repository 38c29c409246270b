-- The processes that claim work (see the PostgreSQL twin). On SQLite a
-- starting process owns the database alone: it removes every other row, and
-- the PROCESSING top-ups those processes claimed (topups.lease_process) are
-- rescued to UNKNOWN at once.
CREATE TABLE processes (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    label      TEXT NOT NULL,
    started_at BIGINT NOT NULL,
    seen_at    BIGINT NOT NULL
);
ALTER TABLE topups ADD COLUMN lease_process BIGINT;
CREATE INDEX topups_lease_process ON topups (lease_process) WHERE status = 'PROCESSING';
