-- Sends of a top-up (claims by a worker): the n-th send goes upstream under
-- the attempt id `<id>-<n>` (the id itself for the first), so a top-up sent
-- again after the provider provably did not deliver (never connected, our
-- wallet there was empty) is never taken for a duplicate of the first send.
ALTER TABLE topups ADD COLUMN sends BIGINT NOT NULL DEFAULT 0;
-- Rows that were already claimed were sent under their own id.
UPDATE topups SET sends = 1 WHERE status <> 'PENDING' AND attempts > 0;
