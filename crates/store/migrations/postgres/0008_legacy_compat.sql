-- Drop-in compatibility with the old system (its clients, keys and habits).
--
-- Customers: the reference policy (`unique`: a reference replays forever;
-- `free`: references may repeat, idempotency only by Idempotency-Key), an
-- unauthenticated status read for unguessable ids, and an IP allow-list.
ALTER TABLE customers ADD COLUMN reference_policy TEXT NOT NULL DEFAULT 'unique'
    CHECK (reference_policy IN ('unique', 'free'));
ALTER TABLE customers ADD COLUMN public_status BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE customers ADD COLUMN ip_allowlist TEXT;
ALTER TABLE customers ADD COLUMN ip_allowlist_enabled BOOLEAN NOT NULL DEFAULT FALSE;

-- Keys: imported keys (any string, found by customer + digest), rotation with
-- an overlap (expires_at), and when each key was last used.
ALTER TABLE api_keys ADD COLUMN kind TEXT NOT NULL DEFAULT 'issued' CHECK (kind IN ('issued', 'imported'));
ALTER TABLE api_keys ADD COLUMN hint TEXT;
ALTER TABLE api_keys ADD COLUMN expires_at BIGINT;
ALTER TABLE api_keys ADD COLUMN last_used_at BIGINT;
ALTER TABLE api_keys ADD COLUMN replaced_by TEXT;
CREATE INDEX api_keys_customer_digest ON api_keys (customer_id, digest);

-- Top-ups: the reference is now the customer's text as given (it may repeat);
-- idempotency lives in two keys, each unique per customer when set:
-- `ref_key` (the reference under the `unique` policy) and `idem_key` (an
-- Idempotency-Key header). A FAILED top-up retried on the compatibility
-- routes gives its ref_key to the new one (`retry_of` names the old).
-- `number` is the integer id the old status route showed.
ALTER TABLE topups DROP CONSTRAINT topups_reference_once;
ALTER TABLE topups ADD COLUMN ref_key TEXT;
ALTER TABLE topups ADD COLUMN idem_key TEXT;
ALTER TABLE topups ADD COLUMN retry_of TEXT;
UPDATE topups SET ref_key = reference;
CREATE UNIQUE INDEX topups_ref_key ON topups (customer_id, ref_key) WHERE ref_key IS NOT NULL;
CREATE UNIQUE INDEX topups_idem_key ON topups (customer_id, idem_key) WHERE idem_key IS NOT NULL;
CREATE INDEX topups_customer_reference ON topups (customer_id, reference);
CREATE SEQUENCE topups_number_seq;
ALTER TABLE topups ADD COLUMN number BIGINT DEFAULT nextval('topups_number_seq');
ALTER SEQUENCE topups_number_seq OWNED BY topups.number;
