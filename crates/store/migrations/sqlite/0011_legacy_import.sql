-- no-transaction
-- Imports of the old system (see the PostgreSQL twin for the meaning of each
-- column). SQLite cannot change the ledger's kind CHECK in place, so the
-- ledger is rebuilt with the documented procedure (foreign keys off outside
-- the transaction, new table, copy, drop, rename, indexes and triggers,
-- foreign_key_check, commit).
PRAGMA foreign_keys = OFF;
BEGIN IMMEDIATE;

CREATE TABLE import_runs (
    id          TEXT PRIMARY KEY,
    source      TEXT NOT NULL,
    started_at  BIGINT NOT NULL,
    finished_at BIGINT,
    report      TEXT
);
ALTER TABLE customers ADD COLUMN import_run TEXT REFERENCES import_runs (id);
ALTER TABLE customers ADD COLUMN commission_bps BIGINT NOT NULL DEFAULT 0;

ALTER TABLE topups ADD COLUMN origin TEXT NOT NULL DEFAULT 'recarga' CHECK (origin IN ('recarga', 'legacy'));
ALTER TABLE topups ADD COLUMN import_run TEXT;
ALTER TABLE topups ADD COLUMN legacy_price BIGINT;
ALTER TABLE topups ADD COLUMN legacy TEXT;

CREATE TABLE ledger_rebuilt (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    customer_id   TEXT NOT NULL REFERENCES customers (id),
    topup_id      TEXT REFERENCES topups (id),
    kind          TEXT NOT NULL CHECK (kind IN ('hold', 'capture', 'release', 'credit', 'debit', 'reversal', 'import')),
    amount        BIGINT NOT NULL,
    balance_after BIGINT NOT NULL,
    actor         TEXT NOT NULL,
    reason        TEXT,
    created_at    BIGINT NOT NULL,
    CONSTRAINT topup_entries_name_their_topup CHECK (kind NOT IN ('hold', 'capture', 'release') OR topup_id IS NOT NULL),
    CONSTRAINT adjustments_have_reasons CHECK (kind NOT IN ('credit', 'debit', 'reversal', 'import') OR (reason IS NOT NULL AND reason <> ''))
);
INSERT INTO ledger_rebuilt (id, customer_id, topup_id, kind, amount, balance_after, actor, reason, created_at)
SELECT id, customer_id, topup_id, kind, amount, balance_after, actor, reason, created_at FROM ledger ORDER BY id;
DROP TABLE ledger;
ALTER TABLE ledger_rebuilt RENAME TO ledger;
CREATE INDEX ledger_customer ON ledger (customer_id, id);
CREATE UNIQUE INDEX ledger_one_hold ON ledger (topup_id) WHERE kind = 'hold';
CREATE UNIQUE INDEX ledger_one_settlement ON ledger (topup_id) WHERE kind IN ('capture', 'release');
CREATE UNIQUE INDEX ledger_one_import ON ledger (customer_id) WHERE kind = 'import';
CREATE INDEX ledger_topup_idx ON ledger (topup_id);
CREATE TRIGGER ledger_no_update BEFORE UPDATE ON ledger
BEGIN
    SELECT RAISE(ABORT, 'the ledger is append-only');
END;
CREATE TRIGGER ledger_no_delete BEFORE DELETE ON ledger
BEGIN
    SELECT RAISE(ABORT, 'the ledger is append-only');
END;

CREATE TABLE legacy_history (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    import_run  TEXT NOT NULL REFERENCES import_runs (id),
    customer_id TEXT NOT NULL REFERENCES customers (id),
    kind        TEXT NOT NULL CHECK (kind IN ('adjustment', 'billing', 'invoice')),
    source_id   TEXT NOT NULL,
    amount      TEXT,
    detail      TEXT NOT NULL,
    created_at  BIGINT,
    CONSTRAINT legacy_history_once UNIQUE (kind, source_id)
);
CREATE INDEX legacy_history_customer ON legacy_history (customer_id, kind, created_at);

PRAGMA foreign_key_check;
COMMIT;
PRAGMA foreign_keys = ON;
