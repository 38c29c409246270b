-- no-transaction
-- Drop-in compatibility with the old system (its clients, keys and habits).
-- See the PostgreSQL twin for the meaning of each column. SQLite cannot drop
-- the table constraint `topups_reference_once`, so `topups` is rebuilt with
-- the documented procedure: foreign keys off (outside the transaction), new
-- table, copy, drop, rename, indexes, foreign_key_check, commit.
PRAGMA foreign_keys = OFF;
BEGIN IMMEDIATE;

ALTER TABLE customers ADD COLUMN reference_policy TEXT NOT NULL DEFAULT 'unique'
    CHECK (reference_policy IN ('unique', 'free'));
ALTER TABLE customers ADD COLUMN public_status BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE customers ADD COLUMN ip_allowlist TEXT;
ALTER TABLE customers ADD COLUMN ip_allowlist_enabled BOOLEAN NOT NULL DEFAULT FALSE;

ALTER TABLE api_keys ADD COLUMN kind TEXT NOT NULL DEFAULT 'issued' CHECK (kind IN ('issued', 'imported'));
ALTER TABLE api_keys ADD COLUMN hint TEXT;
ALTER TABLE api_keys ADD COLUMN expires_at BIGINT;
ALTER TABLE api_keys ADD COLUMN last_used_at BIGINT;
ALTER TABLE api_keys ADD COLUMN replaced_by TEXT;
CREATE INDEX api_keys_customer_digest ON api_keys (customer_id, digest);

CREATE TABLE topups_rebuilt (
    id                   TEXT PRIMARY KEY,
    customer_id          TEXT NOT NULL REFERENCES customers (id),
    reference            TEXT NOT NULL,
    request_hash         TEXT NOT NULL,
    phone                TEXT NOT NULL,
    face_value           BIGINT NOT NULL CHECK (face_value > 0),
    product_id           TEXT NOT NULL,
    amount_sent          BIGINT NOT NULL,
    vat                  BIGINT NOT NULL,
    delivered            BIGINT NOT NULL,
    discount_bps         BIGINT NOT NULL,
    currency             TEXT NOT NULL,
    fx_rate_micro        BIGINT,
    held                 BIGINT NOT NULL CHECK (held >= 0),
    status               TEXT NOT NULL CHECK (status IN ('PENDING', 'PROCESSING', 'SUCCESS', 'FAILED', 'UNKNOWN')),
    attempts             BIGINT NOT NULL DEFAULT 0,
    checks               BIGINT NOT NULL DEFAULT 0,
    lease_owner          TEXT,
    lease_until          BIGINT,
    next_attempt_at      BIGINT NOT NULL,
    next_check_at        BIGINT,
    check_deadline       BIGINT,
    sync_wait_until      BIGINT,
    upstream_trans_id    TEXT,
    upstream_ven_transid TEXT,
    failure_code         TEXT,
    failure_message      TEXT,
    created_at           BIGINT NOT NULL,
    updated_at           BIGINT NOT NULL,
    completed_at         BIGINT,
    request_id           TEXT,
    ref_key              TEXT,
    idem_key             TEXT,
    retry_of             TEXT,
    number               INTEGER
);
INSERT INTO topups_rebuilt (id, customer_id, reference, request_hash, phone, face_value, product_id, amount_sent,
    vat, delivered, discount_bps, currency, fx_rate_micro, held, status, attempts, checks, lease_owner, lease_until,
    next_attempt_at, next_check_at, check_deadline, sync_wait_until, upstream_trans_id, upstream_ven_transid,
    failure_code, failure_message, created_at, updated_at, completed_at, request_id, ref_key)
SELECT id, customer_id, reference, request_hash, phone, face_value, product_id, amount_sent,
    vat, delivered, discount_bps, currency, fx_rate_micro, held, status, attempts, checks, lease_owner, lease_until,
    next_attempt_at, next_check_at, check_deadline, sync_wait_until, upstream_trans_id, upstream_ven_transid,
    failure_code, failure_message, created_at, updated_at, completed_at, request_id, reference
FROM topups ORDER BY created_at, id;
DROP TABLE topups;
ALTER TABLE topups_rebuilt RENAME TO topups;
UPDATE topups SET number = rowid;

CREATE INDEX topups_pending ON topups (next_attempt_at) WHERE status = 'PENDING';
CREATE INDEX topups_processing ON topups (lease_until) WHERE status = 'PROCESSING';
CREATE INDEX topups_unknown ON topups (next_check_at) WHERE status = 'UNKNOWN';
CREATE INDEX topups_customer_created ON topups (customer_id, created_at);
CREATE INDEX topups_customer_id ON topups (customer_id, id);
CREATE INDEX topups_lease_owner ON topups (lease_owner) WHERE lease_owner IS NOT NULL;
CREATE INDEX topups_created ON topups (created_at);
CREATE INDEX topups_completed ON topups (completed_at) WHERE completed_at IS NOT NULL;
CREATE INDEX topups_pending_created ON topups (created_at) WHERE status = 'PENDING';
CREATE UNIQUE INDEX topups_ref_key ON topups (customer_id, ref_key) WHERE ref_key IS NOT NULL;
CREATE UNIQUE INDEX topups_idem_key ON topups (customer_id, idem_key) WHERE idem_key IS NOT NULL;
CREATE INDEX topups_customer_reference ON topups (customer_id, reference);

-- The old status route's integer id: SQLite's rowid, copied on insert
-- (RETURNING does not see it; readers that need it re-read the row).
CREATE TRIGGER topups_number AFTER INSERT ON topups WHEN NEW.number IS NULL
BEGIN
    UPDATE topups SET number = NEW.rowid WHERE rowid = NEW.rowid;
END;

PRAGMA foreign_key_check;
COMMIT;
PRAGMA foreign_keys = ON;
