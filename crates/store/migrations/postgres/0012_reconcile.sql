-- Reconciliation (issue 16): statements imported as they came (raw bytes
-- and their SHA-256, so a file imported twice is recognised), the runs that
-- matched them to our top-ups, every classified row of a run, and the
-- proposed settlements of UNKNOWN top-ups, applied only by an operator.
CREATE TABLE reconcile_statements (
    id            TEXT PRIMARY KEY,
    source        TEXT NOT NULL,
    digest        TEXT NOT NULL UNIQUE,
    file_name     TEXT,
    -- The format it was read with, as JSON (formats change; the run keeps its own).
    format        TEXT NOT NULL,
    kind          TEXT NOT NULL CHECK (kind IN ('full', 'exceptions')),
    -- Business days (Mexico City, YYYY-MM-DD) in which "absent" may be said.
    coverage_from TEXT NOT NULL,
    coverage_to   TEXT NOT NULL,
    rows_read     BIGINT NOT NULL,
    lines         BIGINT NOT NULL,
    rejected      BIGINT NOT NULL,
    -- Σ accepted lines, in the statement's own currency (minor units).
    total         BIGINT NOT NULL,
    currency      TEXT NOT NULL,
    raw           BYTEA NOT NULL,
    actor         TEXT NOT NULL,
    imported_at   BIGINT NOT NULL
);

CREATE TABLE reconcile_runs (
    id           TEXT PRIMARY KEY,
    statement_id TEXT NOT NULL REFERENCES reconcile_statements (id),
    window_ms    BIGINT NOT NULL,
    -- JSON: classes, totals per class / day / month, rules, rejects.
    summary      TEXT NOT NULL,
    actor        TEXT NOT NULL,
    created_at   BIGINT NOT NULL
);
CREATE INDEX reconcile_runs_statement ON reconcile_runs (statement_id, created_at);

CREATE TABLE reconcile_rows (
    run_id           TEXT NOT NULL REFERENCES reconcile_runs (id),
    seq              BIGINT NOT NULL,
    class            TEXT NOT NULL CHECK (class IN ('matched', 'amount_differs', 'delivered_but_failed',
                                                    'success_not_in_statement', 'unknown_to_us', 'unknown_with_evidence')),
    line_no          BIGINT,
    topup_id         TEXT,
    rule             TEXT,
    gap_ms           BIGINT,
    day              TEXT NOT NULL,
    mxn              BIGINT NOT NULL,
    statement_amount BIGINT NOT NULL,
    phone            TEXT,
    upstream_id      TEXT,
    carrier_id       TEXT,
    our_id           TEXT,
    product          TEXT,
    line_status      TEXT,
    our_status       TEXT,
    note             TEXT NOT NULL,
    PRIMARY KEY (run_id, seq)
);
CREATE INDEX reconcile_rows_class ON reconcile_rows (run_id, class, seq);

CREATE TABLE reconcile_proposals (
    run_id      TEXT NOT NULL REFERENCES reconcile_runs (id),
    topup_id    TEXT NOT NULL REFERENCES topups (id),
    outcome     TEXT NOT NULL CHECK (outcome IN ('success', 'failed')),
    line_no     BIGINT,
    trans_id    TEXT,
    ven_transid TEXT,
    reason      TEXT NOT NULL,
    applied_at  BIGINT,
    applied_by  TEXT,
    -- `applied`, `already_settled` or the refusal, once an operator applied it.
    result      TEXT,
    PRIMARY KEY (run_id, topup_id)
);

-- The top-ups of a statement's period are read by creation time: the
-- index `topups_created` (0006) serves it.
