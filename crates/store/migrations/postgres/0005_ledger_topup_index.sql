-- The audit and the per-top-up views look ledger entries up by top-up.
CREATE INDEX IF NOT EXISTS ledger_topup_idx ON ledger (topup_id);
