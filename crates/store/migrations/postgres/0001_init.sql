-- Recarga schema, PostgreSQL flavour. Amounts are BIGINT minor units; times are
-- BIGINT milliseconds since the Unix epoch (the same on both engines).

CREATE TABLE customers (
    id            TEXT PRIMARY KEY,
    name          TEXT NOT NULL,
    currency      TEXT NOT NULL CHECK (currency IN ('MXN', 'USD')),
    fx_rate_micro BIGINT CHECK (fx_rate_micro IS NULL OR fx_rate_micro > 0),
    balance       BIGINT NOT NULL DEFAULT 0,
    credit_limit  BIGINT NOT NULL DEFAULT 0 CHECK (credit_limit >= 0),
    discount_bps  BIGINT NOT NULL DEFAULT 0 CHECK (discount_bps BETWEEN 0 AND 10000),
    min_topup     BIGINT NOT NULL,
    max_topup     BIGINT NOT NULL,
    daily_limit   BIGINT,
    catalogue     TEXT NOT NULL,
    active        BOOLEAN NOT NULL DEFAULT TRUE,
    created_at    BIGINT NOT NULL,
    updated_at    BIGINT NOT NULL,
    CONSTRAINT balance_within_credit_limit CHECK (balance >= -credit_limit),
    CONSTRAINT topup_bounds CHECK (min_topup > 0 AND max_topup >= min_topup)
);

CREATE TABLE api_keys (
    id          TEXT PRIMARY KEY,
    customer_id TEXT NOT NULL REFERENCES customers (id),
    prefix      TEXT NOT NULL UNIQUE,
    digest      TEXT NOT NULL,
    label       TEXT,
    created_at  BIGINT NOT NULL,
    revoked_at  BIGINT
);
CREATE INDEX api_keys_customer ON api_keys (customer_id);

CREATE TABLE topups (
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
    CONSTRAINT topups_reference_once UNIQUE (customer_id, reference)
);
CREATE INDEX topups_pending ON topups (next_attempt_at) WHERE status = 'PENDING';
CREATE INDEX topups_processing ON topups (lease_until) WHERE status = 'PROCESSING';
CREATE INDEX topups_unknown ON topups (next_check_at) WHERE status = 'UNKNOWN';
CREATE INDEX topups_customer_created ON topups (customer_id, created_at);
CREATE INDEX topups_customer_id ON topups (customer_id, id);

CREATE TABLE ledger (
    id            BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    customer_id   TEXT NOT NULL REFERENCES customers (id),
    topup_id      TEXT REFERENCES topups (id),
    kind          TEXT NOT NULL CHECK (kind IN ('hold', 'capture', 'release', 'credit', 'debit', 'reversal')),
    amount        BIGINT NOT NULL,
    balance_after BIGINT NOT NULL,
    actor         TEXT NOT NULL,
    reason        TEXT,
    created_at    BIGINT NOT NULL,
    CONSTRAINT topup_entries_name_their_topup CHECK (kind NOT IN ('hold', 'capture', 'release') OR topup_id IS NOT NULL),
    CONSTRAINT adjustments_have_reasons CHECK (kind NOT IN ('credit', 'debit', 'reversal') OR (reason IS NOT NULL AND reason <> ''))
);
CREATE INDEX ledger_customer ON ledger (customer_id, id);
CREATE UNIQUE INDEX ledger_one_hold ON ledger (topup_id) WHERE kind = 'hold';
CREATE UNIQUE INDEX ledger_one_settlement ON ledger (topup_id) WHERE kind IN ('capture', 'release');

CREATE FUNCTION ledger_is_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the ledger is append-only';
END;
$$;
CREATE TRIGGER ledger_append_only BEFORE UPDATE OR DELETE ON ledger
    FOR EACH ROW EXECUTE FUNCTION ledger_is_append_only();

CREATE TABLE exchanges (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    topup_id    TEXT NOT NULL REFERENCES topups (id),
    kind        TEXT NOT NULL,
    provider    TEXT NOT NULL,
    request     TEXT,
    response    TEXT,
    http_status BIGINT,
    outcome     TEXT NOT NULL,
    detail      TEXT,
    trans_id    TEXT,
    ven_transid TEXT,
    started_at  BIGINT NOT NULL,
    ended_at    BIGINT NOT NULL
);
CREATE INDEX exchanges_topup ON exchanges (topup_id, id);

CREATE TABLE topup_events (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    topup_id    TEXT NOT NULL REFERENCES topups (id),
    from_status TEXT,
    to_status   TEXT NOT NULL,
    actor       TEXT NOT NULL,
    reason      TEXT,
    created_at  BIGINT NOT NULL
);
CREATE INDEX topup_events_topup ON topup_events (topup_id, id);

CREATE TABLE audit_log (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    actor      TEXT NOT NULL,
    action     TEXT NOT NULL,
    subject    TEXT,
    before     TEXT,
    after      TEXT,
    reason     TEXT,
    created_at BIGINT NOT NULL
);
