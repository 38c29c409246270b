-- Imports of the old system (`recarga import legacy`).
--
-- An import run is one invocation; its tie-out report is kept as JSON.
-- Imported customers name their run; their opening balance is their one
-- `import` ledger entry (the only ledger row an import writes).
CREATE TABLE import_runs (
    id          TEXT PRIMARY KEY,
    source      TEXT NOT NULL,
    started_at  BIGINT NOT NULL,
    finished_at BIGINT,
    report      TEXT
);
ALTER TABLE customers ADD COLUMN import_run TEXT REFERENCES import_runs (id);
-- The old invoice markup (commission_percentage), in basis points: applied
-- on invoices only, never to a top-up's price.
ALTER TABLE customers ADD COLUMN commission_bps BIGINT NOT NULL DEFAULT 0;

-- Imported top-ups: read-only history with the old ids. Nothing is held for
-- them (`held` = 0); `legacy_price` is what the old system charged (or, for
-- an old PENDING row imported as UNKNOWN, what a SUCCESS resolution debits);
-- `legacy` keeps the old row's own facts as JSON for disputes.
ALTER TABLE topups ADD COLUMN origin TEXT NOT NULL DEFAULT 'recarga' CHECK (origin IN ('recarga', 'legacy'));
ALTER TABLE topups ADD COLUMN import_run TEXT;
ALTER TABLE topups ADD COLUMN legacy_price BIGINT;
ALTER TABLE topups ADD COLUMN legacy TEXT;

ALTER TABLE ledger DROP CONSTRAINT ledger_kind_check;
ALTER TABLE ledger ADD CONSTRAINT ledger_kind_check
    CHECK (kind IN ('hold', 'capture', 'release', 'credit', 'debit', 'reversal', 'import'));
ALTER TABLE ledger ADD CONSTRAINT imports_have_reasons
    CHECK (kind <> 'import' OR (reason IS NOT NULL AND reason <> ''));
CREATE UNIQUE INDEX ledger_one_import ON ledger (customer_id) WHERE kind = 'import';

-- The old books beside the ledger, never in it: balance adjustments, billing
-- records and invoices (with their items), as the old system wrote them.
CREATE TABLE legacy_history (
    id          BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
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
