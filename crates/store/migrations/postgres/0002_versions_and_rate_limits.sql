-- A version per customer row, bumped by every change, so caches can refuse to
-- overwrite a newer value with an older one; and a per-customer rate limit.
ALTER TABLE customers ADD COLUMN version BIGINT NOT NULL DEFAULT 0;
ALTER TABLE customers ADD COLUMN rate_limit_per_s BIGINT CHECK (rate_limit_per_s IS NULL OR rate_limit_per_s >= 0);
